"""The installed stack is real: interfaces cross OS processes over DDS, discovery stays local."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DOMAIN_ID, PROGRAMS

REPO = Path(__file__).resolve().parents[1]


def test_every_rclpy_subprocess_gets_localhost_discovery_and_the_session_domain(ros_env, spawn):
    assert ros_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert ros_env["ROS_DOMAIN_ID"] == str(DOMAIN_ID)
    assert os.environ["ROS_DOMAIN_ID"] == str(DOMAIN_ID)  # in-process nodes too

    proc = spawn([str(PROGRAMS / "print_ros_env.py")])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, proc.stderr_path.read_text()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(DOMAIN_ID),
        "context_domain_id": DOMAIN_ID,
    }


def test_two_test_sessions_never_share_a_domain_id():
    # A second interpreter importing conftest must claim a different id while we hold ours.
    test_dir = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {test_dir!r}); import conftest; print(conftest.DOMAIN_ID)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) != DOMAIN_ID


def test_carla_and_av_td3_messages_cross_process_boundaries_over_dds(spawn):
    sub = spawn([str(PROGRAMS / "interface_subscriber.py")])
    assert sub.stdout.readline().strip() == "ready"
    pub = spawn([str(PROGRAMS / "interface_publisher.py")])
    out, _ = sub.communicate(timeout=60)
    pub.wait(timeout=60)
    assert sub.returncode == 0, sub.stderr_path.read_text()
    assert pub.returncode == 0, pub.stderr_path.read_text()
    got = json.loads(out.strip().splitlines()[-1])

    assert got["control"] == {
        "frame_id": "ego_vehicle", "throttle": 0.25, "steer": -0.5, "brake": 0.0,
        "hand_brake": False, "reverse": True, "gear": 3, "manual_gear_shift": True,
    }
    expected_frame = (np.arange(84 * 84) % 251).astype(np.uint8)
    t = got["transition"]
    assert t["actor_id"] == "car7" and t["seq"] == 12345678901
    assert (t["episode"], t["step"], t["policy_version"], t["kind"]) == (4, 17, 9, 1)
    assert (t["frame_height"], t["frame_width"], t["frame_len"]) == (84, 84, 84 * 84)
    assert t["frame_sum"] == int(expected_frame.sum())
    assert t["kinematics"] == pytest.approx([i / 4 for i in range(23)])
    assert t["action"] == pytest.approx([0.5, -0.25])
    assert (t["reward"], t["terminated"], t["truncated"]) == (1.5, False, True)


def test_the_copied_vehicle_stack_and_status_messages_cross_process_boundaries_over_dds(spawn):
    sub = spawn([str(PROGRAMS / "copied_interfaces_subscriber.py")])
    assert sub.stdout.readline().strip() == "ready"
    pub = spawn([str(PROGRAMS / "copied_interfaces_publisher.py")])
    out, _ = sub.communicate(timeout=60)
    pub.wait(timeout=60)
    assert sub.returncode == 0, sub.stderr_path.read_text()
    assert pub.returncode == 0, pub.stderr_path.read_text()
    got = json.loads(out.strip().splitlines()[-1])

    def t(sec, nanosec):
        return {"sec": sec, "nanosec": nanosec}

    assert got["/test/ackermann"] == {
        "header": {"stamp": t(12, 500), "frame_id": "base_link"},
        "drive": {"steering_angle": 0.25, "steering_angle_velocity": 0.5, "speed": 8.0,
                  "acceleration": -2.5, "jerk": 1.5},
    }
    assert got["/test/control"] == {
        "stamp": t(7, 1), "control_time": t(7, 2),
        "lateral": {"stamp": t(7, 3), "control_time": t(7, 4), "steering_tire_angle": -0.125,
                    "steering_tire_rotation_rate": 0.75, "is_defined_steering_tire_rotation_rate": True},
        "longitudinal": {"stamp": t(7, 5), "control_time": t(7, 6), "velocity": 3.0, "acceleration": -1.25,
                         "jerk": 0.5, "is_defined_acceleration": True, "is_defined_jerk": False},
    }
    assert got["/test/gear"] == {"stamp": t(9, 9), "command": 22}  # GearCommand.PARK
    status = got["/test/status"]
    assert status.keys() == {"frame", "fixed_delta_seconds", "synchronous_mode", "synchronous_mode_running"}
    assert status["frame"] == 2**40 + 3 and status["fixed_delta_seconds"] == pytest.approx(0.05)
    assert (status["synchronous_mode"], status["synchronous_mode_running"]) == (True, False)


def test_transition_for_an_84x84_frame_is_under_10_kb_on_the_wire():
    from av_td3_msgs.msg import Transition
    from rclpy.serialization import serialize_message

    msg = Transition(actor_id="ego_vehicle", frame_height=84, frame_width=84)
    msg.frame = bytes(84 * 84)
    msg.kinematics = [0.0] * 23
    msg.action = [0.0, 0.0]
    assert len(serialize_message(msg)) <= 10_000


def test_the_package_its_interfaces_and_console_scripts_are_installed():
    bindir = Path(sys.executable).parent
    out = subprocess.run(
        [sys.executable, "-c", "import av_td3_ros, rclpy, carla_msgs.msg, av_td3_msgs.msg, "
                               "ackermann_msgs.msg, autoware_control_msgs.msg, autoware_vehicle_msgs.msg"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for script in ("policy_node", "trainer_node", "sim_node", "av-td3"):
        assert (bindir / script).exists() or shutil.which(script), script


def test_cmake_path_rewrite_is_idempotent_and_uses_this_interpreter(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    from fix_ros_cmake_paths import rewrite

    baked = ('INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;'
             '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"')
    once = rewrite(baked, "/venv/include/python3.11", "/venv/numpy/include")
    assert once == 'INTERFACE_INCLUDE_DIRECTORIES "/venv/include/python3.11;/venv/numpy/include"'
    assert rewrite(once, "/venv/include/python3.11", "/venv/numpy/include") == once
