"""The package's layers, as a specification: the ROS layer holds only ROS, the core none of it.

- Every module under `av_td3_ros/ros/` imports rclpy or a ROS message package: it exists to
  translate between ROS and the core. A module that needs neither belongs in the core.
- No module outside `ros/`, `nodes/` and the demo's process runner and monitor imports rclpy or
  a message package, so the core (driving, learning, perception, model, sim, vehicle, ...) is
  tested and benchmarked without DDS.
Imports are read from the source (module level and inside functions alike), not executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "av_td3_ros"
ROS_MODULES = ("rclpy", "launch", "launch_ros", "ament_index_python", "builtin_interfaces")
ROS_ALLOWED_OUTSIDE = ("nodes/", "ros/", "demo/run.py", "demo/monitor.py")


def _message_package(name: str) -> bool:
    return name.endswith("_msgs") or name.endswith("_srvs") or name.endswith("_interfaces")


def ros_imports(path: Path) -> set[str]:
    """Top-level names of the ROS modules `path` imports anywhere."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in ROS_MODULES or _message_package(top):
                found.add(top)
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_of_the_ros_layer_imports_ros():
    free = [str(p.relative_to(PACKAGE)) for p in modules()
            if p.parent.name == "ros" and not ros_imports(p)]
    assert not free, f"modules under ros/ that import neither rclpy nor a message package: {free}"


def test_nothing_outside_the_ros_layer_and_the_nodes_imports_ros():
    leaks = {}
    for path in modules():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(ROS_ALLOWED_OUTSIDE):
            continue
        found = ros_imports(path)
        if found:
            leaks[relative] = sorted(found)
    assert not leaks, f"core modules that import ROS: {leaks}"


def test_the_checks_see_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy\n\ndef f():\n    from carla_msgs.msg import X\n    import rclpy.node\n")
    assert ros_imports(sample) == {"carla_msgs", "rclpy"}
