"""The e-stop fails safe (issue 15): a latched stop ends only with a release token signed by an
operator key, for this node and this stop, fresh and unused, or with a restart. A forged release
(unsigned, a stranger's key, tampered, for another car, replayed from an earlier stop or used
twice) is refused with the reason, and a real stop always wins over a release.

The verifier and the gate's stop numbers are tested directly; then live: a deploy-mode policy node
(output ackermann: the gate) in its own OS process, the attacker a plain participant on the same
domain publishing the e-stop and release topics, and the operator's `av-td3 release`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from test_policy_node import SMALL_IMAGE, T0, FakeBridge, _wait, start_node, stderr_of

from av_td3_ros.learning import signing
from av_td3_ros.vehicle import CommandGate, GateLimits
from av_td3_ros.vehicle.release import MAX_TOKEN_BYTES, ReleaseRefused, ReleaseVerifier, sign_release

NODE = "/policy_car"
NOW = 1_800_000_000.0  # wall-clock seconds
SESSION = "0123456789abcdef"  # the run of the node


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release_keys")
    return SimpleNamespace(folder=folder, operator=signing.generate_key_pair(folder / "operator.key"),
                           stranger=signing.generate_key_pair(folder / "stranger.key"))


def _verifier(keys, **kwargs) -> ReleaseVerifier:
    return ReleaseVerifier(NODE, {keys.operator.key_id: keys.operator.public_key}, session=SESSION, **kwargs)


def _tampered(token: str, **fields) -> str:
    data = json.loads(token)
    data.update(fields)
    return json.dumps(data)


# --- the verifier -----------------------------------------------------------------------------


def test_a_release_signed_for_this_node_and_this_stop_passes_once(keys):
    verifier = _verifier(keys)
    token = sign_release(keys.operator, NODE, SESSION, 3, issued_at=NOW - 2.0)
    checked = verifier.check(token, stop_id=3, latched=True, now=NOW)
    assert (checked.node, checked.stop_id, checked.key_id) == (NODE, 3, keys.operator.key_id)
    with pytest.raises(ReleaseRefused, match=r"release token already used"):
        verifier.check(token, stop_id=3, latched=True, now=NOW + 1.0)


def _signed(key, stop_id: int, issued_at: float = NOW, node: str = NODE, session: str = SESSION, **kwargs):
    return sign_release(key, node, session, stop_id, issued_at, **kwargs)


FORGERIES = [
    ("plain_text", lambda k: "release", "unsigned release: not a signed release token"),
    ("no_signature", lambda k: json.dumps({"node": NODE, "stop_id": 3}),
     "unsigned release: the token carries no signature"),
    ("stranger_key", lambda k: _signed(k.stranger, 3), "release signed by unknown key"),
    ("stop_id_changed_after_signing", lambda k: _tampered(_signed(k.operator, 2), stop_id=3),
     "bad release signature for key"),
    ("node_changed_after_signing", lambda k: _tampered(_signed(k.operator, 3, node="/other_car"), node=NODE),
     "bad release signature for key"),
    ("key_id_of_the_operator_on_a_strangers_signature",
     lambda k: _tampered(_signed(k.stranger, 3), key_id=k.operator.key_id), "bad release signature"),
    ("for_another_node", lambda k: _signed(k.operator, 3, node="/other_car"),
     "release for node '/other_car', this node is '/policy_car'"),
    ("signed_before_the_node_restarted", lambda k: _signed(k.operator, 3, session="fedcba9876543210"),
     "the node restarted since it was signed"),
    ("replayed_from_an_earlier_stop", lambda k: _signed(k.operator, 2),
     "release for stop 2, the current stop is 3"),
    ("for_a_stop_that_did_not_happen_yet", lambda k: _signed(k.operator, 4),
     "release for stop 4, the current stop is 3"),
    ("expired", lambda k: _signed(k.operator, 3, NOW - 31.0), "older than release_max_age 30 s"),
    ("from_the_future", lambda k: _signed(k.operator, 3, NOW + 6.0), "in the future"),
    ("extra_field", lambda k: _tampered(_signed(k.operator, 3), release_all=True),
     "malformed release token: fields"),
    ("oversized", lambda k: "x" * (MAX_TOKEN_BYTES + 1), f"exceeds {MAX_TOKEN_BYTES}"),
    ("bool_stop_id", lambda k: _tampered(_signed(k.operator, 1), stop_id=True), "stop_id must be a int"),
]


@pytest.mark.parametrize(("forge", "reason"), [pytest.param(f, r, id=i) for i, f, r in FORGERIES])
def test_forged_and_replayed_releases_are_refused_with_the_reason(keys, forge, reason):
    with pytest.raises(ReleaseRefused) as refused:
        _verifier(keys).check(forge(keys), stop_id=3, latched=True, now=NOW)
    assert reason in str(refused.value)


def test_a_stop_that_is_no_longer_latched_cannot_be_released_again(keys):
    token = sign_release(keys.operator, NODE, SESSION, 3, NOW)
    with pytest.raises(ReleaseRefused, match=r"stop 3 is not latched \(released already\)"):
        _verifier(keys).check(token, stop_id=3, latched=False, now=NOW)


def test_without_release_keys_no_token_releases_a_stop(keys):
    token = sign_release(keys.operator, NODE, SESSION, 3, NOW)
    with pytest.raises(ReleaseRefused, match="no release_keys configured: a latched stop ends only with a"):
        ReleaseVerifier(NODE, {}, session=SESSION).check(token, stop_id=3, latched=True, now=NOW)


def test_a_refused_but_genuine_token_is_spent_and_spent_nonces_are_forgotten_only_once_stale(keys):
    verifier = _verifier(keys, max_age=30.0, max_future=5.0)
    early = sign_release(keys.operator, NODE, SESSION, 2, NOW)
    with pytest.raises(ReleaseRefused, match="the current stop is 3"):
        verifier.check(early, stop_id=3, latched=True, now=NOW)
    token = sign_release(keys.operator, NODE, SESSION, 3, NOW, nonce="n1")
    with pytest.raises(ReleaseRefused, match="stop 3 is not latched"):
        verifier.check(token, stop_id=3, latched=False, now=NOW)  # spent although refused
    with pytest.raises(ReleaseRefused, match="already used"):
        verifier.check(token, stop_id=3, latched=True, now=NOW + 1.0)
    verifier.check(_signed(keys.operator, 3, NOW + 100.0, nonce="n2"), 3, True, NOW + 100.0)
    assert "n1" not in verifier._spent  # older than max_age + max_future: it would be refused as expired


# --- the gate numbers its stops ----------------------------------------------------------------


def test_every_new_stop_gets_the_next_stop_id_and_a_held_e_stop_does_not():
    gate = CommandGate(GateLimits(heartbeat_timeout=0.5))
    assert gate.stop_id == 0
    gate.heartbeat(0.0)
    gate.estop(True, 0.1)
    gate.estop(True, 0.2)  # still pressed (a repeated or re-delivered message): the same stop
    assert gate.stop_id == 1
    gate.estop(False, 0.3)
    gate.estop(True, 0.4)  # pressed again while the first stop is still latched: a new stop
    assert gate.stop_id == 2
    gate.estop(False, 0.5)
    gate.update(2.0, 0.0, 0.0, 0.0)  # heartbeat silent for 2 s: lost
    assert gate.stop_id == 3 and gate.latched == ("estop", "heartbeat_lost")


# --- live -------------------------------------------------------------------------------------


class Operator:
    """A participant on the domain: the e-stop publisher, the release topic and its answers."""

    def __init__(self, context, node_name: str):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import Bool, String

        from av_td3_ros.ros import qos

        self.Bool, self.String = Bool, String
        self.node = Node("release_test_operator", context=context)
        self.estop = self.node.create_publisher(Bool, f"{node_name}/estop", qos.ESTOP_QOS)
        self.release = self.node.create_publisher(String, f"{node_name}/release_stop", qos.RELEASE_QOS)
        self.answers: list[dict] = []
        self.lock = threading.Lock()
        self.node.create_subscription(String, f"{node_name}/release_stop_result", self._on_answer,
                                      qos.RELEASE_QOS)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_answer(self, msg):
        with self.lock:
            self.answers.append(json.loads(msg.data))

    def send(self, token: str) -> dict:
        """Publish a release token; the node's answer."""
        with self.lock:
            seen = len(self.answers)
        self.release.publish(self.String(data=token))
        return _wait(lambda: self.answers[seen:] and self.answers[seen], 10, "the node's answer to a release")

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()


def test_a_latched_stop_ends_only_with_the_operators_signed_release_for_this_stop(
        spawn, rclpy_context, keys, ros_env):
    role = "car"
    bridge = FakeBridge(rclpy_context, role)
    operator = Operator(rclpy_context, NODE)
    try:
        bridge.publish_route()
        node = start_node(spawn, role, "mode:=deploy", "output:=ackermann", "weights_trust:=any",
                          "sensor_timeout:=5.0", f"release_keys:=[{keys.folder / 'operator.key.pub'}]")
        diag = bridge.diag
        _wait(lambda: diag("gate_release_node") == NODE and diag("gate_stop_id") == "0", 30, "the gate")
        assert diag("gate_release_keys") == keys.operator.key_id
        session = diag("gate_release_session")
        _wait(lambda: operator.release.get_subscription_count() > 0
              and operator.node.count_publishers(f"{NODE}/release_stop_result") > 0, 20, "the release topics")
        stamps = iter(range(T0, T0 + 10_000 * 50_000_000, 50_000_000))

        def gate_state() -> str:
            """The gate's state after one more command went through it (a frame answered)."""
            before = int(diag("frames") or 0)
            bridge.frame(next(stamps), SMALL_IMAGE)
            _wait(lambda: int(diag("frames") or 0) > before, 10, "the frame counted")
            time.sleep(0.3)  # two diagnostics periods
            return diag("gate_state")

        operator.estop.publish(operator.Bool(data=True))  # the real stop
        _wait(lambda: diag("gate_latched") == "estop" and diag("gate_stop_id") == "1", 10, "the stop latched")
        early = sign_release(keys.operator, NODE, session, 1)  # the operator signs a release for stop 1 ...
        assert gate_state() in ("stopping", "holding")

        # The attacker: a forged "e-stop off", then releases of every kind. None ends the stop.
        operator.estop.publish(operator.Bool(data=False))
        forgeries = [
            ("release", "unsigned release"),
            (sign_release(keys.stranger, NODE, session, 1), "release signed by unknown key"),
            (_tampered(sign_release(keys.operator, NODE, session, 0), stop_id=1), "bad release signature"),
            (sign_release(keys.operator, "/policy_other", session, 1), f"this node is '{NODE}'"),
        ]
        for token, reason in forgeries:
            answer = operator.send(token)
            assert not answer["released"] and reason in answer["message"], answer
            _wait(lambda r=reason: r in (diag("gate_last_release") or ""), 10, "the reason on /diagnostics")
            assert diag("gate_latched") == "estop"
        assert gate_state() in ("stopping", "holding")

        # ... but a new stop comes before it is used: the old release cannot end the new stop.
        operator.estop.publish(operator.Bool(data=True))
        _wait(lambda: diag("gate_stop_id") == "2", 10, "the second stop")
        answer = operator.send(early)
        assert not answer["released"] and "release for stop 1, the current stop is 2" in answer["message"]

        # A genuine release for the current stop while the e-stop is still pressed: the stop wins.
        current = sign_release(keys.operator, NODE, session, 2)
        answer = operator.send(current)
        assert not answer["released"] and "the e-stop input is still engaged" in answer["message"], answer
        operator.estop.publish(operator.Bool(data=False))
        time.sleep(0.3)
        answer = operator.send(current)  # spent, even though it was refused
        assert not answer["released"] and "release token already used" in answer["message"], answer
        assert diag("gate_latched") == "estop" and gate_state() in ("stopping", "holding")

        # The operator's CLI: reads the stop from /diagnostics, signs for it, gets the answer.
        cli = subprocess.run([sys.executable, "-m", "av_td3_ros.cli", "release", "--key",
                              str(keys.folder / "operator.key"), "--node", NODE], env=ros_env,
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert f"{NODE}: released (estop) (stop 2, key {keys.operator.key_id})" in cli.stdout, cli.stdout
        _wait(lambda: diag("gate_latched") == "none", 10, "the stop released")
        assert gate_state() == "driving"
        assert "PRIVATE KEY" not in cli.stdout + cli.stderr + stderr_of(node)

        # Released: the same tokens (or a fresh one for that stop) release nothing more.
        answer = operator.send(sign_release(keys.operator, NODE, session, 2))
        assert not answer["released"] and "stop 2 is not latched (released already)" in answer["message"]
        assert node.poll() is None
    finally:
        operator.close()
        bridge.close()


def test_the_release_cli_refuses_a_key_file_others_can_read(keys, tmp_path):
    loose = tmp_path / "loose.key"
    loose.write_bytes((keys.folder / "operator.key").read_bytes())
    loose.chmod(0o644)
    cli = subprocess.run([sys.executable, "-m", "av_td3_ros.cli", "release", "--key", str(loose),
                          "--node", NODE], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "readable by others" in cli.stderr, cli.stderr
