"""The ros/ layer: parameter schema and its YAML, conversions, QoS profiles, the Fast DDS profile."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import PROGRAMS
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3_ros.driving.command import BRAKE, ControlCommand, action_to_control, clamp_control
from av_td3_ros.ros.conversions import (
    SUPPORTED_ENCODINGS,
    ConversionError,
    array_to_image,
    control_to_message,
    image_to_array,
    image_to_gray,
    odometry_to_state,
    path_to_route,
    policy_weights_from_message,
    policy_weights_to_message,
    transition_from_message,
    transition_to_message,
)
from av_td3_ros.ros.parameters import (
    POLICY_NODE_PARAMETERS,
    InvalidParameter,
    ParameterSpec,
    declare_parameters,
    defaults,
    validate_value,
    yaml_parameters,
)

REPO = Path(__file__).resolve().parents[1]
POLICY_YAML = REPO / "config" / "policy.yaml"
FASTDDS_XML = REPO / "config" / "fastdds_shm.xml"


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------

SPECS = [
    ParameterSpec("sensor_timeout", 0.5, "seconds", min=0.01, max=10.0),
    ParameterSpec("mode", "train", "mode", choices=("train", "deploy")),
    ParameterSpec("threads", 1, "threads", min=1, max=8),
    ParameterSpec("flag", True, "a flag"),
    ParameterSpec("reward.target_speed", 8.33, "m/s", min=0.0),
    ParameterSpec("gains", [1.0, 2.0], "a list", min=0.0),
]


def test_validate_value_accepts_good_values_and_names_key_and_range_for_bad_ones():
    spec = {s.name: s for s in SPECS}
    assert validate_value(spec["sensor_timeout"], 1) == 1.0 and isinstance(
        validate_value(spec["sensor_timeout"], 1), float
    )
    assert validate_value(spec["gains"], [3, 4.5]) == [3.0, 4.5]
    cases = [
        ("sensor_timeout", -1.0, "'sensor_timeout' = -1.0: must be a finite number in [0.01, 10.0]"),
        ("sensor_timeout", math.nan, "'sensor_timeout'"),
        ("sensor_timeout", "fast", "must be a finite number"),
        ("mode", "trian", "'mode' = 'trian': must be one of ['train', 'deploy']"),
        ("threads", 0, "'threads' = 0: must be an integer in [1, 8]"),
        ("threads", 1.5, "must be an integer"),
        ("threads", True, "must be an integer"),
        ("flag", 1, "'flag' = 1: must be a bool"),
        ("reward.target_speed", -0.1, "'reward.target_speed' = -0.1: must be a finite number >= 0.0"),
        ("gains", [1.0, -2.0], "'gains'"),
    ]
    for name, value, expected in cases:
        with pytest.raises(InvalidParameter) as info:
            validate_value(spec[name], value)
        assert expected in str(info.value), (name, str(info.value))
        assert info.value.name == name


def test_specs_refuse_defaults_outside_their_own_range():
    with pytest.raises(InvalidParameter):
        ParameterSpec("x", 5, "x", max=3)
    with pytest.raises(ValueError):
        ParameterSpec("y", [], "empty list without item_type")


def test_declare_parameters_on_a_real_node_validates_overrides_and_sets_descriptors(rclpy_context):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    node = Node(
        "param_test",
        context=rclpy_context,
        parameter_overrides=[
            Parameter("sensor_timeout", value=2),  # an int for a float parameter: accepted as 2.0
            Parameter("reward.target_speed", value=5.0),
        ],
    )
    try:
        params = declare_parameters(node, SPECS)
        assert params.sensor_timeout == 2.0 and isinstance(params.sensor_timeout, float)
        assert params.reward.target_speed == 5.0
        assert params.mode == "train" and params.threads == 1 and params.flag is True
        assert params.gains == [1.0, 2.0]
        assert node.get_parameter("sensor_timeout").type_ == Parameter.Type.DOUBLE
        descriptor = node.describe_parameter("sensor_timeout")
        assert descriptor.read_only
        assert descriptor.description == "seconds"
        assert (
            descriptor.floating_point_range[0].from_value,
            descriptor.floating_point_range[0].to_value,
        ) == (0.01, 10.0)
        assert "train" in node.describe_parameter("mode").additional_constraints
        # read-only after start: a runtime change is refused by rclpy
        result = node.set_parameters([Parameter("sensor_timeout", value=3.0)])[0]
        assert not result.successful
    finally:
        node.destroy_node()

    bad = Node("param_test_bad", context=rclpy_context, parameter_overrides=[Parameter("threads", value=99)])
    try:
        with pytest.raises(InvalidParameter, match=r"'threads' = 99: must be an integer in \[1, 8\]"):
            declare_parameters(bad, SPECS)
    finally:
        bad.destroy_node()


def _yaml_comment_for(lines: list[str], key: str) -> bool:
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(f"{key}:"):
            if "#" in line.split(":", 1)[1]:
                return True
            return i > 0 and lines[i - 1].strip().startswith("#")
    return False


def test_policy_yaml_documents_every_parameter_with_the_code_defaults():
    in_yaml = yaml_parameters(POLICY_YAML, "/**")
    in_code = {s.name: s.default for s in POLICY_NODE_PARAMETERS}
    assert set(in_yaml) == set(in_code), {
        "only in yaml": set(in_yaml) - set(in_code),
        "only in code": set(in_code) - set(in_yaml),
    }
    for name, default in in_code.items():
        value = in_yaml[name]
        if isinstance(default, float):
            assert (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and value == pytest.approx(default)
            ), name
        else:
            assert value == default and type(value) is type(default), name
    lines = POLICY_YAML.read_text().splitlines()
    undocumented = [
        s.name for s in POLICY_NODE_PARAMETERS if not _yaml_comment_for(lines, s.name.split(".")[-1])
    ]
    assert not undocumented


def test_reward_parameters_are_exactly_the_perception_reward_config():
    from dataclasses import fields

    from av_td3_ros.perception.reward import RewardConfig

    in_code = {
        s.name.removeprefix("reward."): s.default
        for s in POLICY_NODE_PARAMETERS
        if s.name.startswith("reward.")
    }
    reference = RewardConfig()
    assert in_code == {f.name: getattr(reference, f.name) for f in fields(RewardConfig)}
    assert RewardConfig.from_namespace(defaults(POLICY_NODE_PARAMETERS).reward) == reference


def test_policy_yaml_loads_through_rcl_as_the_node_parameters(tmp_path):
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    context = Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(POLICY_YAML)])
    try:
        node = Node("policy_node", context=context)
        params = declare_parameters(node, POLICY_NODE_PARAMETERS)
        assert vars(params).keys() == vars(defaults(POLICY_NODE_PARAMETERS)).keys()
        assert params.sensor_timeout == 0.5 and params.mode == "train"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

CHANNELS = {"bgra8": 4, "bgr8": 3, "rgb8": 3, "rgba8": 4, "mono8": 1}


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_supported_encoding_round_trips_and_converts_to_gray(encoding):
    import cv2

    rng = np.random.default_rng(1)
    shape = (60, 80) if encoding == "mono8" else (60, 80, CHANNELS[encoding])
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    msg = array_to_image(array, encoding)
    assert isinstance(msg.data, (bytes, bytearray)) or msg.data.typecode == "B"
    np.testing.assert_array_equal(image_to_array(msg), array)
    code = {
        "bgra8": cv2.COLOR_BGRA2GRAY,
        "bgr8": cv2.COLOR_BGR2GRAY,
        "rgb8": cv2.COLOR_RGB2GRAY,
        "rgba8": cv2.COLOR_RGBA2GRAY,
    }.get(encoding)
    expected = array if code is None else cv2.cvtColor(array, code)
    np.testing.assert_array_equal(image_to_gray(msg), expected)


def test_rgb_and_bgr_orders_give_the_same_gray():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        image_to_gray(array_to_image(bgr, "bgr8")), image_to_gray(array_to_image(bgr[..., ::-1], "rgb8"))
    )


def test_padded_rows_are_read_without_the_padding():
    from sensor_msgs.msg import Image

    array = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    padded = np.zeros((6, 20), np.uint8)
    padded[:, :15] = array.reshape(6, 15)
    msg = Image(height=6, width=5, encoding="bgr8", step=20, is_bigendian=1)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_array(msg), array)


def test_bad_images_raise_clear_errors():
    from sensor_msgs.msg import Image

    good = array_to_image(np.zeros((600, 800, 4), np.uint8), "bgra8")
    for encoding in ("bgr16", "32FC1", "yuv422", ""):
        msg = Image(height=2, width=2, encoding=encoding, step=8)
        msg.data = bytes(16)
        with pytest.raises(ConversionError, match="unsupported image encoding"):
            image_to_array(msg)
    truncated = Image(height=600, width=800, encoding="bgra8", step=3200)
    truncated.data = good.data.tobytes()[:-1]
    with pytest.raises(
        ConversionError, match=r"1919999 bytes, expected step\*height = 3200\*600 = 1920000 \(truncated\)"
    ):
        image_to_array(truncated)
    short_step = Image(height=600, width=800, encoding="bgra8", step=3000)
    short_step.data = bytes(3000 * 600)
    with pytest.raises(ConversionError, match="step 3000 is shorter"):
        image_to_array(short_step)
    empty = Image(height=0, width=800, encoding="bgra8", step=3200)
    with pytest.raises(ConversionError, match="empty image"):
        image_to_array(empty)


# ----------------------------------------------------------------------------------------------
# Odometry, route, control
# ----------------------------------------------------------------------------------------------


def _odometry(x=1.0, y=2.0, yaw=0.5, vx=3.0, vy=4.0):
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.header.frame_id = "map"
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.twist.twist.linear.x, msg.twist.twist.linear.y = vx, vy
    return msg


def test_odometry_gives_pose_yaw_and_speed_and_rejects_non_finite_values():
    state = odometry_to_state(_odometry())
    assert (state.x, state.y, state.speed, state.forward_speed, state.frame_id) == (1.0, 2.0, 5.0, 3.0, "map")
    assert state.yaw == pytest.approx(0.5)
    assert odometry_to_state(_odometry(yaw=-3.0)).yaw == pytest.approx(-3.0)
    for bad in (dict(x=math.nan), dict(vx=math.inf), dict(y=-math.inf)):
        with pytest.raises(ConversionError, match="non-finite odometry"):
            odometry_to_state(_odometry(**bad))
    zero = _odometry()
    zero.pose.pose.orientation.w = zero.pose.pose.orientation.z = 0.0
    with pytest.raises(ConversionError, match="zero quaternion"):
        odometry_to_state(zero)


def _path(points):
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Path

    msg = Path()
    msg.header.frame_id = "map"
    for x, y in points:
        pose = PoseStamped()
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        msg.poses.append(pose)
    return msg


def test_path_to_route_and_its_errors():
    route = path_to_route(_path([(0, 0), (1, 0.5), (2, 1)]))
    assert route.shape == (3, 2) and route.dtype == np.float64
    np.testing.assert_array_equal(route[1], [1.0, 0.5])
    with pytest.raises(ConversionError, match="route has 0 poses"):
        path_to_route(_path([]))
    with pytest.raises(ConversionError, match="route pose 1 of 3 is not finite"):
        path_to_route(_path([(0, 0), (math.nan, 1), (2, 2)]))


def test_action_to_control_maps_and_clamps():
    assert action_to_control([0.25, 0.5]) == ControlCommand(0.25, 0.5, 0.0)
    assert action_to_control([-0.25, -0.75]) == ControlCommand(-0.25, 0.0, 0.75)
    assert action_to_control([3.0, -2.0]) == ControlCommand(1.0, 0.0, 1.0)
    assert action_to_control([math.nan, 0.1]) == BRAKE
    assert action_to_control([0.1]) == BRAKE


@settings(max_examples=300, deadline=None)
@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_every_control_message_is_finite_and_in_range(steer, throttle, brake):
    msg = control_to_message(ControlCommand(steer, throttle, brake))
    for value in (msg.steer, msg.throttle, msg.brake):
        assert math.isfinite(value)
    assert -1.0 <= msg.steer <= 1.0 and 0.0 <= msg.throttle <= 1.0 and 0.0 <= msg.brake <= 1.0
    assert not msg.hand_brake and not msg.reverse
    if not all(math.isfinite(v) for v in (steer, throttle, brake)):
        assert (msg.steer, msg.throttle, msg.brake) == (0.0, 0.0, 1.0)
    assert clamp_control(steer, throttle, brake) == ControlCommand(msg.steer, msg.throttle, msg.brake)


# ----------------------------------------------------------------------------------------------
# Weights and transitions
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_state_dict():
    import torch

    from av_td3_ros.model import PolicyNetwork

    torch.manual_seed(0)
    return PolicyNetwork().state_dict()


def test_policy_weights_message_round_trip_and_rejections(policy_state_dict):
    import torch

    from av_td3_ros.learning.weights import WeightsRejected

    msg = policy_weights_to_message(policy_state_dict, 7, action_limit=0.6, updates=1234)
    assert msg.format == "safetensors" and msg.version == 7 and msg.updates == 1234
    assert msg.action_limit == pytest.approx(0.6) and len(msg.sha256) == 64
    decoded = policy_weights_from_message(msg, policy_state_dict, 32 << 20)
    assert decoded.version == 7 and decoded.action_limit == pytest.approx(0.6)
    for name, tensor in policy_state_dict.items():
        assert torch.equal(decoded.state_dict[name], tensor), name

    corrupted = policy_weights_to_message(policy_state_dict, 8)
    payload = bytearray(corrupted.payload.tobytes())
    payload[len(payload) // 2] ^= 0xFF
    corrupted.payload = bytes(payload)
    with pytest.raises(WeightsRejected, match="sha256 mismatch"):
        policy_weights_from_message(corrupted, policy_state_dict, 32 << 20)

    wrong_format = policy_weights_to_message(policy_state_dict, 9)
    wrong_format.format = "pickle"
    with pytest.raises(WeightsRejected, match="format"):
        policy_weights_from_message(wrong_format, policy_state_dict, 32 << 20)

    too_big = policy_weights_to_message(policy_state_dict, 10)
    with pytest.raises(WeightsRejected, match="exceeds the limit"):
        policy_weights_from_message(too_big, policy_state_dict, 1 << 20)


def test_transition_message_round_trip_is_under_10_kb():
    from rclpy.serialization import deserialize_message, serialize_message

    from av_td3_ros.learning.ingest import KIND_STEP, TransitionRecord

    frame = (np.arange(84 * 84) % 251).astype(np.uint8).reshape(84, 84)
    record = TransitionRecord(
        actor_id="car1",
        seq=41,
        episode=3,
        step=7,
        policy_version=5,
        kind=KIND_STEP,
        frame_height=84,
        frame_width=84,
        frame=frame,
        kinematics=np.linspace(-1, 1, 23, dtype=np.float32),
        action=np.array([0.5, -0.25], np.float32),
        reward=1.5,
        terminated=False,
        truncated=True,
    )
    wire = serialize_message(transition_to_message(record))
    assert len(wire) <= 10_000
    from av_td3_msgs.msg import Transition

    back = transition_from_message(deserialize_message(wire, Transition))
    assert (back.actor_id, back.seq, back.episode, back.step, back.policy_version, back.kind) == (
        "car1",
        41,
        3,
        7,
        5,
        1,
    )
    np.testing.assert_array_equal(back.frame.reshape(84, 84), frame)
    np.testing.assert_array_equal(back.kinematics, record.kinematics)
    np.testing.assert_array_equal(back.action, record.action)
    assert (back.reward, back.terminated, back.truncated) == (1.5, False, True)


# ----------------------------------------------------------------------------------------------
# QoS
# ----------------------------------------------------------------------------------------------


def test_qos_profiles_are_what_the_bridge_and_the_trainer_need():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from av_td3_ros.ros import qos

    assert qos.CAMERA_QOS.reliability == ReliabilityPolicy.RELIABLE and qos.CAMERA_QOS.depth == 10
    assert qos.SENSOR_QOS.reliability == ReliabilityPolicy.RELIABLE  # as the bridge's odometry
    for latched in (qos.ROUTE_QOS, qos.WEIGHTS_QOS):
        assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL and latched.depth == 1
        assert latched.reliability == ReliabilityPolicy.RELIABLE
    assert qos.TRANSITIONS_QOS.reliability == ReliabilityPolicy.RELIABLE
    assert qos.TRANSITIONS_QOS.depth >= 4 * 20 * 10  # 4 policy nodes at 20 Hz, a 10 s trainer stall
    assert qos.describe(qos.WEIGHTS_QOS) == "RELIABLE TRANSIENT_LOCAL KEEP_LAST(1)"


def test_a_latched_route_reaches_a_subscriber_created_after_it_was_published(rclpy_context):
    import time

    from nav_msgs.msg import Path
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from av_td3_ros.ros import qos

    pub_node = Node("route_pub", context=rclpy_context)
    sub_node = Node("route_sub", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    try:
        pub = pub_node.create_publisher(Path, "/test/latched_route", qos.ROUTE_QOS)
        pub.publish(_path([(0, 0), (5, 0)]))
        time.sleep(0.3)
        got = []
        sub_node.create_subscription(Path, "/test/latched_route", got.append, qos.ROUTE_QOS)
        executor.add_node(sub_node)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert len(got) == 1 and len(got[0].poses) == 2
    finally:
        executor.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()


# ----------------------------------------------------------------------------------------------
# Fast DDS profile
# ----------------------------------------------------------------------------------------------


def test_fastdds_profile_declares_large_shared_memory_plus_udp_as_the_default_profile():
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(FASTDDS_XML).getroot()
    transports = {
        t.findtext("d:transport_id", namespaces=ns): t for t in root.iterfind(".//d:transport_descriptor", ns)
    }
    shm = [t for t in transports.values() if t.findtext("d:type", namespaces=ns) == "SHM"]
    udp = [t for t in transports.values() if t.findtext("d:type", namespaces=ns) == "UDPv4"]
    assert len(shm) == 1 and len(udp) == 1
    assert int(shm[0].findtext("d:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    assert int(shm[0].findtext("d:maxMessageSize", namespaces=ns)) == 16 * 1024 * 1024
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [e.text for e in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(transports)
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"


def _image_run(spawn, sub_env: dict, pub_env: dict, best_effort: bool, count: int = 20) -> dict:
    flags = ["--best-effort"] if best_effort else []
    sub = spawn(
        [str(PROGRAMS / "big_image.py"), "sub", "--count", str(count), "--timeout", "25", *flags], **sub_env
    )
    assert sub.stdout.readline().strip() == "ready", Path(sub.stderr_path).read_text()
    pub = spawn(
        [str(PROGRAMS / "big_image.py"), "pub", "--count", str(count), "--period", "0.05", *flags], **pub_env
    )
    out, _ = sub.communicate(timeout=60)
    pub.wait(timeout=60)
    assert sub.returncode == 0 and pub.returncode == 0, Path(sub.stderr_path).read_text()
    for proc in (sub, pub):
        log = Path(proc.stderr_path).read_text()
        assert "XMLPARSER" not in log and "Error" not in log, log
    return json.loads(out.strip().splitlines()[-1])


def test_fastdds_profile_loads_and_carries_large_images_between_processes(spawn):
    profile = {"FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_XML)}
    # Both with the profile: even BEST_EFFORT 1.9 MB frames arrive (on default transports most
    # are lost — FACTS.md: 3 of 50), which shows the large shared-memory segment is in use.
    both = _image_run(spawn, profile, profile, best_effort=True)
    assert both["received"] >= 18 and both["sizes"] == [1_920_000], both["received"]
    # The pre-Fast-DDS-3 variable name (Humble) still works here (with a deprecation warning).
    legacy = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_XML)}
    assert _image_run(spawn, legacy, legacy, best_effort=True)["received"] >= 18
    # With a participant on default transports (e.g. a bridge started without the file): UDP.
    mixed = _image_run(spawn, profile, {"FASTDDS_DEFAULT_PROFILES_FILE": ""}, best_effort=False)
    assert mixed["received"] == 20 and mixed["sizes"] == [1_920_000]


# ----------------------------------------------------------------------------------------------
# PolicyRuntime and ControlLoop (pure numpy/torch, no DDS)
# ----------------------------------------------------------------------------------------------


def _decoded(state_dict, version, action_limit=0.0):
    from av_td3_ros.ros.conversions import DecodedWeights

    return DecodedWeights(dict(state_dict), version, 0, "", "sha", action_limit, 0)


def test_runtime_validates_versions_and_swaps_policies(policy_state_dict):
    import torch

    from av_td3_ros.driving.runtime import PolicyRuntime
    from av_td3_ros.learning.weights import WeightsRejected

    runtime = PolicyRuntime()
    frames, kin = np.full((4, 84, 84), 90, np.uint8), np.zeros(23, np.float32)
    with pytest.raises(RuntimeError, match="no policy"):
        runtime.act(frames, kin)
    first = runtime.prepare(_decoded(policy_state_dict, 3, 0.6), "test")
    assert runtime.policy is None  # prepared, not installed
    runtime.install(first)
    action, version = runtime.act(frames, kin)
    assert version == 3 and action.shape == (2,) and np.isfinite(action).all()
    with pytest.raises(WeightsRejected, match="version 3 is not newer than the running version 3"):
        runtime.prepare(_decoded(policy_state_dict, 3), "test")
    nan = {k: v.clone() for k, v in policy_state_dict.items()}
    nan["actor.l3.bias"][0] = float("nan")
    with pytest.raises(WeightsRejected, match="non-finite"):
        runtime.prepare(_decoded(nan, 4), "test")
    missing = {k: v for k, v in policy_state_dict.items() if k != "actor.l3.bias"}
    with pytest.raises(WeightsRejected, match="does not fit"):
        runtime.prepare(_decoded(missing, 5), "test")
    torch.manual_seed(1)
    from av_td3_ros.model import PolicyNetwork

    second = runtime.prepare(_decoded(PolicyNetwork().state_dict(), 6), "test")
    runtime.install(second)
    assert runtime.act(frames, kin)[1] == 6 and runtime.policy is second
    assert runtime.act(frames, kin, first)[1] == 3  # a caller holding the old one still runs it
    with pytest.raises(WeightsRejected):
        runtime.install(first)  # never back to an older version


def test_weights_file_is_validated_and_a_pickle_is_refused_unread(policy_state_dict, tmp_path):
    import torch

    from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file
    from av_td3_ros.learning.weights import WeightsRejected, encode_policy_weights

    runtime = PolicyRuntime()
    good = tmp_path / "policy.safetensors"
    good.write_bytes(encode_policy_weights(policy_state_dict, {"version": 12, "action_limit": 0.6}))
    decoded = load_weights_file(good, runtime)
    assert decoded.version == 12 and decoded.action_limit == pytest.approx(0.6)
    runtime.install(runtime.prepare(decoded, str(good)))
    assert runtime.version == 12

    pickled = tmp_path / "policy.pt"
    torch.save(policy_state_dict, pickled)
    with pytest.raises(WeightsRejected, match="pickle"):
        load_weights_file(pickled, runtime)
    with pytest.raises(WeightsRejected, match="cannot read"):
        load_weights_file(tmp_path / "missing.safetensors", runtime)
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(encode_policy_weights({"encoder.x": torch.zeros(3)}))
    with pytest.raises(WeightsRejected, match="wrong architecture"):
        load_weights_file(wrong, runtime)
