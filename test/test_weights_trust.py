"""Who may drive the car: signed weights, live. policy_node and trainer_node run as their own OS
processes on real DDS; the attacker is a plain participant on the same domain (FakeBridge's
weights publisher), exactly what issue 15 says any process can be."""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_policy_node import (
    DT,
    POSE,
    ROUTE,
    SMALL_IMAGE,
    T0,
    FakeBridge,
    _wait,
    _weights,
    start_node,
    stderr_of,
)
from test_signing import _rewrite_header, _set_meta
from test_trainer_node import PUBLISHER, finish, trainer_args

from av_td3_ros.learning import signing
from av_td3_ros.model import PolicyNetwork
from av_td3_ros.perception.image import to_gray84
from av_td3_ros.perception.kinematics import KinematicsEncoder, Route
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import policy_weights_to_message

ROLE = "trusted_car"
SWAP_BUDGET_S = 0.200  # the weights swap budget of docs/benchmarks.md, publish -> driving
FRAME_PERIOD_S = 0.05  # the camera's 20 Hz


def _action(state_dict, norm: str = "layer") -> np.ndarray:
    """The actor's output for four SMALL_IMAGE frames at POSE on ROUTE."""
    net = PolicyNetwork(norm=norm)
    net.load_state_dict(state_dict)
    net.eval()
    frames = torch.from_numpy(np.stack([to_gray84(SMALL_IMAGE, "bgra8")] * 4)).unsqueeze(0)
    kin = KinematicsEncoder().encode(Route(ROUTE), POSE["x"], POSE["y"], POSE["yaw"], POSE["speed"])
    with torch.inference_mode():
        return net(frames, torch.from_numpy(kin).unsqueeze(0))[0].numpy()


def _drives(control, action, tol=1e-4) -> bool:
    _, steer, throttle, brake, _ = control
    return (abs(steer - float(np.clip(action[0], -1, 1))) < tol
            and abs((throttle - brake) - float(np.clip(action[1], -1, 1))) < tol)


def _signed(state_dict, version: int, key, **kwargs):
    return policy_weights_to_message(state_dict, version, action_limit=0.6, cnn_norm="layer", max_action=1.0,
                                     signing_key=key, **kwargs)


def _with_payload(msg, payload: bytes):
    """The message carrying another payload, its sha256 fixed up (an attacker can always do that)."""
    msg.payload = payload
    msg.sha256 = hashlib.sha256(payload).hexdigest()
    return msg


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust_keys")
    return SimpleNamespace(folder=folder, trainer=signing.generate_key_pair(folder / "trainer.key"),
                           stranger=signing.generate_key_pair(folder / "stranger.key"))


@pytest.fixture
def bridges(rclpy_context):
    made = []

    def make(role: str) -> FakeBridge:
        made.append(FakeBridge(rclpy_context, role))
        return made[-1]

    yield make
    for bridge in made:
        bridge.close()


@pytest.fixture(scope="module")
def car(module_spawn, module_rclpy_context, keys, tmp_path_factory):
    """A deploy-mode node with default trust, one trusted key and a signed weights file (v1)."""
    w1 = _weights(41)
    weights_file = tmp_path_factory.mktemp("trust_weights") / "policy.safetensors"
    weights_file.write_bytes(_signed(w1, 1, keys.trainer).payload.tobytes())
    bridge = FakeBridge(module_rclpy_context, ROLE)
    bridge.publish_route()
    node = start_node(module_spawn, ROLE, "mode:=deploy", "sensor_timeout:=5.0",
                      f"weights_file:={weights_file}", f"trusted_keys:=[{keys.folder / 'trainer.key.pub'}]")
    bridge.wait_matched()
    state = SimpleNamespace(bridge=bridge, node=node, stamps=iter(range(T0, T0 + 100_000 * DT, DT)),
                            weights={1: w1}, signed={}, version=1)
    yield state
    bridge.close()


def _control(car):
    car.bridge.frame(stamp := next(car.stamps), SMALL_IMAGE)
    return _wait(lambda: car.bridge.controls_for(stamp), 10, f"the control for frame {stamp}")[0]


def _install_timed(car, msg, action) -> float:
    """Stream frames at the camera's 20 Hz on a fixed schedule (the rate the swap budget is defined
    at, docs/benchmarks.md: FrameWindows decodes in the gaps between them), publish `msg` half a
    second in, at a random phase of the frame period, and keep streaming until a frame is answered
    by the new policy: seconds from publish to that control's arrival."""
    start = time.monotonic()
    publish_at, published, sent = start + 0.5 + random.uniform(0.0, FRAME_PERIOD_S), None, set()
    tick, seen = 0, len(car.bridge.controls)
    while time.monotonic() - start < 15:
        now = time.monotonic()
        if published is None and now >= publish_at:
            msg.stamp = car.bridge.node.get_clock().now().to_msg()  # the node's delivery time counts from it
            published = time.monotonic()
            car.bridge.weights.publish(msg)
        if now >= start + tick * FRAME_PERIOD_S:
            car.bridge.frame(stamp := next(car.stamps), SMALL_IMAGE)
            tick += 1
            if published is not None:
                sent.add(stamp)
        with car.bridge.lock:  # only the controls that arrived since the last look
            new, seen = car.bridge.controls[seen:], len(car.bridge.controls)
        driven = [c for c in new if c[0] in sent and _drives(c, action)]
        if driven:
            return driven[0][4] - published
        time.sleep(0.005)
    raise AssertionError(f"version {msg.version} never drove: {car.bridge.diag('last_weights_rejection')}")


def _swap_breakdown(car, version: int) -> str:
    """Where the node says the swap's time went (SwapTiming in /diagnostics)."""
    _wait(lambda: car.bridge.diag("last_swap_version") == str(version), 10, f"v{version}'s swap timing")
    return ", ".join(f"{step} {car.bridge.diag(f'last_swap_{step}_ms')}"
                     for step in ("delivery", "decode", "prepare", "frame_wait"))


def test_deploy_mode_defaults_to_signed_and_checks_the_weights_file_signature_at_configure(car, keys):
    _wait(lambda: car.bridge.diag("policy_version") == "1", 20, "the signed weights file installed")
    assert car.bridge.diag("weights_trust") == "signed"
    assert car.bridge.diag("trusted_key_ids") == keys.trainer.key_id
    assert car.bridge.diag("policy_key_id") == keys.trainer.key_id
    assert _drives(_control(car), _action(car.weights[1]))
    assert "trust" not in car.bridge.diag("_message"), car.bridge.diag("_message")  # nothing to warn about


def test_correctly_signed_updates_are_installed_and_drive_promptly(car, keys):
    latencies, breakdowns = [], []
    for version in (2, 3, 4, 5, 6):
        car.weights[version] = _weights(40 + version)
        car.signed[version] = _signed(car.weights[version], version, keys.trainer)
        latencies.append(_install_timed(car, car.signed[version], _action(car.weights[version])))
        breakdowns.append(f"v{version} {1000 * latencies[-1]:.0f} ms ({_swap_breakdown(car, version)})")
        car.version = version
    _wait(lambda: car.bridge.diag("policy_version") == "6", 10, "version 6 in /diagnostics")
    assert car.bridge.diag("weights_accepted") == "6" and car.bridge.diag("weights_rejected") == "0"
    print("signed swap, publish -> first frame driven by the new policy [node's ms]: "
          + "; ".join(breakdowns))
    # The 200 ms budget itself is the benchmark's criterion (bench/weights_swap.py, docs/benchmarks.md:
    # median and p90 over >= 10 swaps, unsigned and signed side by side), not a timed assertion here:
    # on this 2-core machine shared with other jobs, swaps of 150-250 ms were measured under load.
    # What holds under load: the median within 2.5x the budget, every swap within 10x.
    assert float(np.median(latencies)) < 2.5 * SWAP_BUDGET_S, breakdowns
    assert max(latencies) < 10 * SWAP_BUDGET_S, breakdowns


def _unsigned(car, keys):
    return policy_weights_to_message(_weights(50), 50, cnn_norm="layer")


def _unknown_key(car, keys):
    return _signed(_weights(51), 51, keys.stranger)


def _metadata_changed_after_signing(car, keys):
    msg = _signed(_weights(52), 52, keys.trainer)
    payload = _rewrite_header(msg.payload.tobytes(), _set_meta("action_limit", "1.0"))
    msg.action_limit = 1.0  # the message agrees with the edited metadata: only the signature tells
    return _with_payload(msg, payload)


def _version_changed_after_signing(car, keys):
    msg = _signed(_weights(53), 53, keys.trainer)
    msg.version = 54
    return _with_payload(msg, _rewrite_header(msg.payload.tobytes(), _set_meta("version", "54")))


def _tensors_changed_after_signing(car, keys):
    msg = _signed(_weights(55), 55, keys.trainer)
    payload = bytearray(msg.payload.tobytes())
    payload[-4:] = np.float32(7.0).tobytes()  # the last actor bias: a policy that steers one way
    return _with_payload(msg, bytes(payload))


def _replayed_older_version(car, keys):
    return car.signed[3]  # a genuine, signed, older version


def _replayed_under_a_new_version_number(car, keys):
    from av_td3_msgs.msg import PolicyWeights

    old, relabelled = car.signed[2], PolicyWeights()
    for field in ("stamp", "updates", "architecture", "format", "payload", "sha256", "action_limit"):
        setattr(relabelled, field, getattr(old, field))
    relabelled.version = 60
    return relabelled


ATTACKS = [
    ("unsigned", _unsigned, "unsigned payload: its metadata carries no signature (weights_trust is signed)"),
    ("unknown_key", _unknown_key, "signed by unknown key"),
    ("metadata_changed_after_signing", _metadata_changed_after_signing,
     "the metadata or the tensors were changed after signing"),
    ("version_changed_after_signing", _version_changed_after_signing,
     "the metadata or the tensors were changed after signing"),
    ("tensors_changed_after_signing", _tensors_changed_after_signing,
     "the metadata or the tensors were changed after signing"),
    ("replayed_older_version", _replayed_older_version, "version 3 is not newer than the running version 6"),
    ("replayed_under_a_new_version_number", _replayed_under_a_new_version_number,
     "the message's version 60 differs from the signed version 2"),
]


@pytest.mark.parametrize(("build", "reason"), [pytest.param(b, r, id=i) for i, b, r in ATTACKS])
def test_forged_tampered_and_replayed_weights_are_refused_with_the_reason_while_the_policy_keeps_driving(
        car, keys, build, reason):
    assert car.version == 6, "runs after the signed updates"
    msg = build(car, keys)
    rejected = int(car.bridge.diag("weights_rejected"))
    car.bridge.weights.publish(msg)
    source = f"topic /{ROLE}/weights version {msg.version}: "
    diag = car.bridge.diag
    _wait(lambda: diag("weights_rejected") == str(rejected + 1)
          and source in (diag("last_weights_rejection") or ""), 20, "the rejection in /diagnostics")
    assert reason in diag("last_weights_rejection"), diag("last_weights_rejection")
    assert _drives(_control(car), _action(car.weights[6]))  # the installed policy keeps driving
    assert diag("policy_version") == "6" and diag("policy_key_id") == keys.trainer.key_id
    assert reason in stderr_of(car.node) and car.node.poll() is None


def test_train_mode_defaults_to_any_installs_unsigned_weights_and_warns_on_diagnostics(spawn, bridges):
    bridge = bridges("any_car")
    bridge.publish_route()
    node = start_node(spawn, "any_car", "mode:=train", "sensor_timeout:=5.0")
    bridge.wait_matched()
    bridge.weights.publish(policy_weights_to_message(_weights(61), 1))  # unsigned, legacy (no cnn_norm)
    _wait(lambda: bridge.diag("policy_version") == "1", 20, "the unsigned weights installed")
    assert bridge.diag("weights_trust") == "any" and bridge.diag("policy_key_id") == ""
    _wait(lambda: bridge.diag("_level") == "1", 10, "WARN")
    warning = "weights_trust any: weights from any publisher on the domain are installed unverified"
    assert warning in bridge.diag("_message")
    assert node.poll() is None


def test_a_deploy_node_whose_trusted_key_cannot_be_read_brakes_and_says_why(spawn, bridges, keys,
                                                                           tmp_path):
    bridge = bridges("keyless_car")
    bridge.publish_route()
    missing = tmp_path / "missing.pub"
    node = start_node(spawn, "keyless_car", "mode:=deploy", "sensor_timeout:=5.0",
                      f"trusted_keys:=[{missing}]")
    bridge.wait_matched()
    bridge.weights.publish(_signed(_weights(62), 1, keys.trainer))
    _wait(lambda: bridge.diag("weights_rejected") == "1", 20, "the refusal")
    assert "signed by unknown key" in bridge.diag("last_weights_rejection")
    assert bridge.answer(T0)[1:4] == (0.0, 0.0, 1.0)  # deploy without valid weights: full brake
    message = bridge.diag("_message")
    assert f"trusted_keys: cannot read key file {missing}" in message, message
    assert "no valid weights" in message, message
    assert node.poll() is None


def test_the_trainer_signs_its_weights_and_their_cnn_norm_builds_the_policy_nodes_network(
        spawn, bridges, keys, tmp_path, rclpy_context):
    """End to end: a trainer training the unnormalized CNN (td3.cnn_norm none) signs each payload;
    a deploy node whose legacy encoder_norm says `layer` installs it as a `none` network, because
    the architecture travels in the signed metadata."""
    import rclpy
    from av_td3_msgs.msg import PolicyWeights
    from rclpy.executors import SingleThreadedExecutor

    topic, transitions = "/trust_e2e/weights", "/trust_e2e/transitions"
    trainer = spawn(trainer_args(tmp_path, learning_starts=16, publish_every=4, update_to_data_ratio=0.5,
                                 weights_topic=topic, transitions_topic=transitions,
                                 signing_key=keys.folder / "trainer.key", **{"td3.cnn_norm": "none"}))
    observer = rclpy.create_node("trust_e2e_observer", context=rclpy_context)
    got, lock = [], threading.Lock()

    def keep(msg):
        with lock:
            got.append(msg)

    observer.create_subscription(PolicyWeights, topic, keep, qos.WEIGHTS_QOS)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(observer)
    finish(spawn([PUBLISHER, "--actor-id", "e2e", "--topic", transitions, "--episodes", "4",
                  "--episode-length", "19", "--rate", "300"]))
    deadline = time.monotonic() + 90
    while not got and time.monotonic() < deadline and trainer.poll() is None:
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    observer.destroy_node()
    assert got, stderr_of(trainer)[-3000:]
    msg = got[-1]
    payload = msg.payload.tobytes()
    trusted = {keys.trainer.key_id: keys.trainer.public_key}
    assert signing.verify_payload(payload, trusted) == keys.trainer.key_id
    meta = signing.read_header(payload).metadata
    assert (meta["cnn_norm"], meta["version"], meta["max_action"]) == ("none", str(msg.version), "1.0")
    assert f"weights are signed with key {keys.trainer.key_id}" in stderr_of(trainer)
    assert "PRIVATE KEY" not in stderr_of(trainer)  # the key never reaches a log line
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=60) == 0

    bridge = bridges("e2e_car")
    bridge.publish_route()
    node = start_node(spawn, "e2e_car", "mode:=deploy", "sensor_timeout:=5.0", "encoder_norm:=layer",
                      f"trusted_keys:=[{keys.folder / 'trainer.key.pub'}]")
    bridge.wait_matched()
    bridge.weights.publish(msg)  # what the trainer published, byte for byte
    _wait(lambda: bridge.diag("policy_version") == str(msg.version), 20,
          f"the trainer's version installed ({bridge.diag('last_weights_rejection')})")
    assert bridge.diag("policy_cnn_norm") == "none" and bridge.diag("policy_key_id") == keys.trainer.key_id
    assert node.poll() is None


def test_swap_timing_reports_delivery_each_step_and_the_frame_waits():
    from av_td3_ros.driving.monitoring import SwapTiming

    clock = iter([10.0, 10.5, 10.52, 10.53, 10.6]).__next__  # start, pause in/out, two marks
    timing = SwapTiming.received(100, 250_000_000, wall=100.5)
    timing._clock, timing._last = clock, clock()
    timing.timed_pause(lambda: None)()
    timing.mark("decode")
    timing.mark("prepare")
    report = timing.report(7)
    assert report["last_swap_version"] == 7 and report["last_swap_delivery_ms"] == pytest.approx(250.0)
    assert report["last_swap_frame_wait_ms"] == pytest.approx(20.0)
    assert report["last_swap_decode_ms"] == pytest.approx(530.0)
    assert report["last_swap_prepare_ms"] == pytest.approx(70.0)
    # An unset stamp, or one from another clock, gives no delivery time rather than a wrong one.
    assert SwapTiming.received(0, 0, wall=100.0).delivery_ms is None
    assert SwapTiming.received(200, 0, wall=100.0).delivery_ms is None
    assert SwapTiming.received(1, 0, wall=100.0).delivery_ms is None
