"""Names and files for one or several ego cars (stdlib only: the launch files import this, and
`ros2 launch` runs under the system Python, outside the image's virtual environment).

One car keeps the bridge's default role name `ego_vehicle` and the reset service
`/av_td3/reset_episode`; N > 1 cars are `hero0`..`hero{N-1}`, each with its own reset service
`/av_td3/<role>/reset_episode`, all in the bridge's ego list (the bridge only accepts control
commands for role names in that list).
"""

from __future__ import annotations

import json
import os
import tempfile

__all__ = [
    "DEFAULT_ROLE",
    "DEFAULT_VEHICLE_TYPE",
    "GOAL_TOPIC_TEMPLATE",
    "MAX_VEHICLES",
    "MULTI_RESET_SERVICE",
    "SINGLE_RESET_SERVICE",
    "WAYPOINT_PUBLISHER_GOAL_TOPICS",
    "bridge_ego_role_names",
    "ego_sensors",
    "goal_topic",
    "objects_definition",
    "reset_service_name",
    "reset_service_template",
    "role_names",
    "waypoint_publisher_goal_remappings",
    "write_objects_definition",
]

DEFAULT_ROLE = "ego_vehicle"
DEFAULT_VEHICLE_TYPE = "vehicle.tesla.model3"
MAX_VEHICLES = 16
SINGLE_RESET_SERVICE = "/av_td3/reset_episode"
MULTI_RESET_SERVICE = "/av_td3/{role_name}/reset_episode"
GOAL_TOPIC_TEMPLATE = "/carla/{role_name}/goal"
# The goal topics carla_waypoint_publisher builds subscribe: upstream carla-simulator/ros-bridge
# /carla/<role>/goal; the Humble fork the Docker image builds /carla/<role>/goal_pose (the image
# build fails on any other, docker/Dockerfile).
WAYPOINT_PUBLISHER_GOAL_TOPICS = ("/carla/{role_name}/goal", "/carla/{role_name}/goal_pose")


def role_names(num_vehicles: int | str, single_role: str = DEFAULT_ROLE) -> list[str]:
    """1 -> [single_role]; N > 1 -> hero0..hero{N-1}."""
    try:
        n = int(str(num_vehicles).strip())
    except ValueError:
        raise ValueError(f"num_vehicles must be an integer, got {num_vehicles!r}") from None
    if not 1 <= n <= MAX_VEHICLES:
        raise ValueError(f"num_vehicles must be in [1, {MAX_VEHICLES}], got {n}")
    if n == 1:
        if not single_role or "/" in single_role or " " in single_role:
            raise ValueError(f"role_name {single_role!r} is not a valid CARLA role name")
        return [single_role]
    return [f"hero{i}" for i in range(n)]


def reset_service_template(roles: list[str]) -> str:
    """What the episode manager's `reset_service` parameter is set to for these roles."""
    return SINGLE_RESET_SERVICE if len(roles) == 1 else MULTI_RESET_SERVICE


def reset_service_name(role: str, roles: list[str]) -> str:
    """The reset service the policy node of `role` calls."""
    return reset_service_template(roles).format(role_name=role)


def goal_topic(role: str, template: str = GOAL_TOPIC_TEMPLATE) -> str:
    return template.format(role_name=role)


def waypoint_publisher_goal_remappings(role: str,
                                       template: str = GOAL_TOPIC_TEMPLATE) -> list[tuple[str, str]]:
    """The remappings (from, to) that make `role`'s waypoint publisher take its goals from the
    episode manager's goal topic, whichever of WAYPOINT_PUBLISHER_GOAL_TOPICS its build
    subscribes (a remap of a name the node does not use is a no-op)."""
    target = goal_topic(role, template)
    if not target.startswith("/"):
        raise ValueError(f"goal_topic {template!r} must be an absolute topic name")
    names = (t.format(role_name=role) for t in WAYPOINT_PUBLISHER_GOAL_TOPICS)
    return [(name, target) for name in names if name != target]


def bridge_ego_role_names(roles: list[str]) -> str:
    """The bridge's `ego_vehicle_role_name` launch argument: a YAML list that launch_ros turns
    into a string array parameter."""
    return "[" + ", ".join(f"'{r}'" for r in roles) + "]"


def ego_sensors() -> list[dict]:
    """The sensors of every ego car, in carla_spawn_objects' format (ids become topic names:
    /carla/<role>/rgb_front/image, /carla/<role>/odometry, ...). No sensor_tick: in synchronous
    mode 0 means every tick, while sensor_tick == fixed_delta_seconds can skip frames."""
    return [
        {
            "type": "sensor.camera.rgb",
            "id": "rgb_front",
            "spawn_point": {"x": 2.0, "y": 0.0, "z": 2.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0},
            "image_size_x": 800,
            "image_size_y": 600,
            "fov": 90.0,
        },
        {"type": "sensor.pseudo.odom", "id": "odometry"},
        {"type": "sensor.other.collision", "id": "collision",
         "spawn_point": {"x": 0.0, "y": 0.0, "z": 0.0}},
        {"type": "sensor.other.lane_invasion", "id": "lane_invasion",
         "spawn_point": {"x": 0.0, "y": 0.0, "z": 0.0}},
        {"type": "actor.pseudo.control", "id": "control"},
    ]


def objects_definition(roles: list[str], vehicle_type: str = DEFAULT_VEHICLE_TYPE) -> dict:
    """carla_spawn_objects' objects file for these cars (config/objects.json is the one-car case)."""
    if len(set(roles)) != len(roles):
        raise ValueError(f"role names repeat: {roles}")
    return {
        "objects": [
            {"type": vehicle_type, "id": role, "sensors": ego_sensors()} for role in roles
        ]
    }


def write_objects_definition(roles: list[str], directory: str | None = None,
                             vehicle_type: str = DEFAULT_VEHICLE_TYPE) -> str:
    """Write the objects file for these cars and return its path (a fresh file per call)."""
    fd, path = tempfile.mkstemp(prefix="av_td3_objects_", suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(objects_definition(roles, vehicle_type), handle, indent=2)
        handle.write("\n")
    return path


if __name__ == "__main__":  # pragma: no cover - a helper for humans
    import argparse

    parser = argparse.ArgumentParser(description="Print carla_spawn_objects' objects.json for N cars")
    parser.add_argument("num_vehicles", type=int)
    parser.add_argument("--vehicle-type", default=DEFAULT_VEHICLE_TYPE)
    args = parser.parse_args()
    print(json.dumps(objects_definition(role_names(args.num_vehicles), args.vehicle_type), indent=2))
