"""Copied message packages are field-for-field the real ones, and a different package of the same
name is refused instead of silently shadowing or being shadowed (tools/copied_interfaces.py).

REAL holds the definitions as the real packages publish them, transcribed from their sources:
- carla_msgs: carla-simulator/ros-carla-msgs 1.3.0 (the CARLA ROS bridge's; CarlaStatus has no
  header there);
- ackermann_msgs: ros-drivers/ackermann_msgs 2.0.2 (ROS 2);
- autoware_control_msgs / autoware_vehicle_msgs: autowarefoundation/autoware_msgs (Control,
  Lateral and Longitudinal each carry stamp AND control_time).
Whatever carla_msgs, ackermann_msgs, ... this environment imports - ours or a real one - must
have exactly these fields, in this order, and these constant values.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import copied_interfaces as ci  # noqa: E402

TIME, HEADER = "builtin_interfaces/Time", "std_msgs/Header"
REAL = {
    "carla_msgs": {
        "CarlaEgoVehicleControl": ([("header", HEADER), ("throttle", "float"), ("steer", "float"),
                                    ("brake", "float"), ("hand_brake", "boolean"), ("reverse", "boolean"),
                                    ("gear", "int32"), ("manual_gear_shift", "boolean")], {}),
        "CarlaCollisionEvent": ([("header", HEADER), ("other_actor_id", "uint32"),
                                 ("normal_impulse", "geometry_msgs/Vector3")], {}),
        "CarlaLaneInvasionEvent": ([("header", HEADER), ("crossed_lane_markings", "sequence<int32>")],
                                   {"LANE_MARKING_OTHER": 0, "LANE_MARKING_BROKEN": 1,
                                    "LANE_MARKING_SOLID": 2}),
        "CarlaControl": ([("command", "int8")], {"PLAY": 0, "PAUSE": 1, "STEP_ONCE": 2}),
        "CarlaStatus": ([("frame", "uint64"), ("fixed_delta_seconds", "float"),
                         ("synchronous_mode", "boolean"), ("synchronous_mode_running", "boolean")], {}),
    },
    "ackermann_msgs": {
        "AckermannDrive": ([("steering_angle", "float"), ("steering_angle_velocity", "float"),
                            ("speed", "float"), ("acceleration", "float"), ("jerk", "float")], {}),
        "AckermannDriveStamped": ([("header", HEADER), ("drive", "ackermann_msgs/AckermannDrive")], {}),
    },
    "autoware_control_msgs": {
        "Control": ([("stamp", TIME), ("control_time", TIME), ("lateral", "autoware_control_msgs/Lateral"),
                     ("longitudinal", "autoware_control_msgs/Longitudinal")], {}),
        "Lateral": ([("stamp", TIME), ("control_time", TIME), ("steering_tire_angle", "float"),
                     ("steering_tire_rotation_rate", "float"),
                     ("is_defined_steering_tire_rotation_rate", "boolean")], {}),
        "Longitudinal": ([("stamp", TIME), ("control_time", TIME), ("velocity", "float"),
                          ("acceleration", "float"), ("jerk", "float"),
                          ("is_defined_acceleration", "boolean"), ("is_defined_jerk", "boolean")], {}),
    },
    "autoware_vehicle_msgs": {
        "GearCommand": ([("stamp", TIME), ("command", "uint8")],
                        {"NONE": 0, "NEUTRAL": 1,
                         **{f"DRIVE{'' if i == 1 else f'_{i}'}": i + 1 for i in range(1, 19)},
                         "REVERSE": 20, "REVERSE_2": 21, "PARK": 22, "LOW": 23, "LOW_2": 24}),
    },
}


def test_the_copied_packages_are_exactly_the_real_packages_we_transcribed():
    assert set(ci.COPIED_PACKAGES) == set(REAL)
    for package, messages in REAL.items():
        assert set(ci.our_definitions(package)) == set(messages), package  # no extra, none missing


@pytest.mark.parametrize("package", sorted(REAL))
def test_every_copied_message_is_field_for_field_the_real_one(package):
    for name, (fields, constants) in REAL[package].items():
        cls = getattr(importlib.import_module(f"{package}.msg"), name)
        assert list(cls.get_fields_and_field_types().items()) == fields, f"{package}/{name}"
        for constant, value in constants.items():
            assert getattr(cls, constant) == value, f"{package}/{name}.{constant}"
        ours = ci.our_definitions(package)[name]
        assert ours.fields == fields and ours.constants == constants, f"interfaces/{package}/msg/{name}.msg"


def test_the_status_message_the_sim_publishes_is_the_headerless_one():
    from av_td3_ros.ros.bridge_messages import status_message

    msg = status_message(frame=42, fixed_delta_seconds=0.05)
    assert not hasattr(msg, "header")
    assert (msg.frame, msg.synchronous_mode, msg.synchronous_mode_running) == (42, True, True)
    assert msg.fixed_delta_seconds == pytest.approx(0.05)


def test_msg_parser_maps_every_msg_type_form_to_rosidls_type_strings():
    text = """# comment
int32 A=1
string NAME = 'x'
float64 x            # a double
bool flag 1
uint8[] data
float32[3] triple
int16[<=4] few
string<=8 short
Header header
geometry_msgs/Point p
Other local;
"""
    d = ci.parse_msg(text, "pkg", "M")
    assert d.fields == [("x", "double"), ("flag", "boolean"), ("data", "sequence<uint8>"),
                        ("triple", "float[3]"), ("few", "sequence<int16, 4>"), ("short", "string<8>"),
                        ("header", "std_msgs/Header"), ("p", "geometry_msgs/Point"), ("local", "pkg/Other")]
    assert d.constants == {"A": 1, "NAME": "x"}


def test_differences_name_the_field_and_the_constant():
    ours = ci.MessageDefinition("M", [("a", "int32"), ("b", "float")], {"K": 1})
    extra_constant = ci.MessageDefinition("M", [("a", "int32"), ("b", "float")], {"K": 1, "X": 2})
    assert ci.differences(ours, extra_constant) == []  # constants are not on the wire: extra ones are fine
    diff = ci.differences(ours, ci.MessageDefinition("M", [("h", HEADER), ("a", "int64")], {"K": 2}))
    assert diff == ["field a is int64, ours is int32", "field b (float) is missing",
                    f"it has a field h ({HEADER}) ours has not", "constant K = 2, ours = 1"]
    assert ci.differences(ours, ci.MessageDefinition("M", [("b", "float"), ("a", "int32")], {"K": 1})) == [
        "field order ['b', 'a'] != ours ['a', 'b']"]


def test_an_earlier_build_of_ours_is_rebuilt_not_checked():
    # this venv's copies were built by tools/build_interfaces.sh: the rule rebuilds them
    for package in ci.COPIED_PACKAGES:
        assert ci.is_ours(package), package
        assert ci.state(package) == "build"


@pytest.fixture(scope="module")
def foreign_carla_msgs(tmp_path_factory):
    """A real rosidl build of a carla_msgs that is NOT ours (another maintainer), installed into
    its own prefix: what a bridge workspace or an apt package looks like to the rule."""
    root = tmp_path_factory.mktemp("foreign")
    source = root / "src" / "carla_msgs"
    shutil.copytree(REPO / "interfaces" / "carla_msgs", source)
    xml = source / "package.xml"
    xml.write_text(xml.read_text().replace(ci.OUR_MAINTAINER_EMAIL, "carla.simulator@gmail.com"))
    venv = Path(sys.executable).parent.parent
    prefix, build = root / "prefix", root / "build"
    # as the Makefile does: a bootstrap guard inherited from this process would make the
    # generators' Python skip the ROS wheels' set-up
    env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    env["AMENT_PREFIX_PATH"] = str(venv)  # the underlay, as a sourced ROS setup would set it
    for cmd in (["cmake", "-S", str(source), "-B", str(build), f"-DCMAKE_PREFIX_PATH={venv}",
                 f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
                 "-DBUILD_TESTING=OFF"],
                ["cmake", "--build", str(build), "-j2"], ["cmake", "--install", str(build)]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (site,) = prefix.glob("lib/python3*/site-packages")
    return site


def _rule(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, str(REPO / "tools" / "copied_interfaces.py"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.timeout(900)
def test_a_real_package_that_matches_is_used_and_one_that_differs_fails_naming_the_field(
        foreign_carla_msgs, tmp_path):
    used = _rule(foreign_carla_msgs, "state", "carla_msgs")
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "use"  # ours is not built over it

    # our copy as it was before issue 11 (CarlaStatus with a header) against the real 1.3.0 layout
    stale = tmp_path / "interfaces"
    shutil.copytree(REPO / "interfaces" / "carla_msgs", stale / "carla_msgs")
    status = stale / "carla_msgs" / "msg" / "CarlaStatus.msg"
    status.write_text("std_msgs/Header header\n" + status.read_text())
    refused = _rule(foreign_carla_msgs, "state", "carla_msgs", "--interfaces", str(stale))
    assert refused.returncode == 2
    assert "carla_msgs/msg/CarlaStatus: field header (std_msgs/Header) is missing" in refused.stderr
    assert str(foreign_carla_msgs.parent.parent.parent / "share" / "carla_msgs") in refused.stderr

    # the image's final check: the real package must be the one installed, never ours
    assert _rule(foreign_carla_msgs, "check", "--real", "carla_msgs").returncode == 0
    ours_where_real_expected = _rule(Path("/nonexistent"), "check", "--real", "carla_msgs")
    assert ours_where_real_expected.returncode == 2
    assert "is av_td3_ros' copy; the real package was expected here" in ours_where_real_expected.stderr
