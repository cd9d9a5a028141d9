"""The CARLA path: bridge + ego car(s) + episode manager + policy node(s) + trainer.

    ros2 launch av_td3_ros carla.launch.py host:=localhost town:=Town01
    ros2 launch av_td3_ros carla.launch.py num_vehicles:=3          # hero0..hero2, one trainer
    ros2 launch av_td3_ros carla.launch.py mode:=deploy trainer:=false \
        weights:=/data/weights/policy.safetensors

Needs a running CARLA server (0.9.15) and, when `bridge:=true`, a CARLA ROS bridge built for
ROS 2 Humble + CARLA 0.9.15 (the Docker image `bridge` target builds one; docs/carla.md).

What starts (each part can be switched off, so docker/compose.yaml runs each in its container):
- bridge:=true   carla_ros_bridge's carla_ros_bridge.launch.py in synchronous mode, waiting for
                 one vehicle control command per tick from every ego car (fixed_delta_seconds);
                 carla_spawn_objects with config/objects.json (one car) or a generated file
                 (N cars); one carla_waypoint_publisher per car (it plans /carla/<role>/waypoints
                 and replans on each goal: its goal subscription, /carla/<role>/goal upstream or
                 /carla/<role>/goal_pose in the image's fork, is remapped onto `goal_topic`).
- episode_manager:=true  the reset service(s) on the carla client (teleport, zero velocity, goal).
- policy:=true   one policy_node per car, in the namespace of its role name.
- trainer:=true  one trainer_node fed by every policy node's transitions.

Cars: num_vehicles:=1 uses role_name (default ego_vehicle, reset service /av_td3/reset_episode);
num_vehicles:=N > 1 uses hero0..hero{N-1}, all in the bridge's ego list, each with the reset
service /av_td3/<role>/reset_episode. Every node except the trainer runs on the bridge's /clock.

This file is checked statically by test/test_launch_files.py (the launch package is not
installable in the venv): keep node parameters as literal dicts with string keys.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from av_td3_ros.episodes import fleet

PACKAGE = "av_td3_ros"


def _config(name: str) -> str:
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def _flag(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}:={value!r} must be true or false")


def _setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    roles = fleet.role_names(arg("num_vehicles"), arg("role_name"))
    host, port, timeout = arg("host"), int(arg("port")), float(arg("timeout"))
    actions = [LogInfo(msg=f"av_td3_ros: CARLA {host}:{port} {arg('town')}, cars {roles}")]

    if _flag(context, "bridge"):
        objects_file = arg("objects_definition_file")
        if not objects_file:
            if roles == [fleet.DEFAULT_ROLE]:
                objects_file = _config("objects.json")
            else:
                objects_file = fleet.write_objects_definition(roles)
        actions.append(
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(os.path.join(
                    get_package_share_directory("carla_ros_bridge"), "carla_ros_bridge.launch.py")),
                launch_arguments={
                    "host": host,
                    "port": str(port),
                    "timeout": str(timeout),
                    "town": arg("town"),
                    "synchronous_mode": "True",
                    "synchronous_mode_wait_for_vehicle_control_command": "True",
                    "fixed_delta_seconds": arg("fixed_delta_seconds"),
                    "ego_vehicle_role_name": fleet.bridge_ego_role_names(roles),
                }.items(),
            )
        )
        actions.append(
            Node(
                package="carla_spawn_objects",
                executable="carla_spawn_objects",
                name="carla_spawn_objects",
                output="screen",
                respawn=True,
                respawn_delay=5.0,
                parameters=[{"objects_definition_file": objects_file, "spawn_sensors_only": False,
                             "use_sim_time": True}],
            )
        )
        for role in roles:
            actions.append(
                Node(
                    package="carla_waypoint_publisher",
                    executable="carla_waypoint_publisher",
                    name="carla_waypoint_publisher",
                    namespace=role,
                    output="screen",
                    respawn=True,  # it gives up when /carla/world_info is not there within 15 s
                    respawn_delay=5.0,
                    parameters=[{"host": host, "port": port, "timeout": timeout, "role_name": role,
                                 "use_sim_time": True}],
                    # upstream subscribes /carla/<role>/goal, the image's fork .../goal_pose
                    remappings=fleet.waypoint_publisher_goal_remappings(role, arg("goal_topic")),
                )
            )

    if _flag(context, "episode_manager"):
        actions.append(
            Node(
                package=PACKAGE,
                executable="episode_manager",
                name="episode_manager",
                output="screen",
                parameters=[{
                    "host": host,
                    "port": port,
                    "timeout": timeout,
                    "town": arg("town"),
                    "role_names": roles,
                    "reset_service": fleet.reset_service_template(roles),
                    "goal_topic": arg("goal_topic"),
                    "seed": int(arg("spawn_seed")),
                    "use_sim_time": True,
                }],
            )
        )

    if _flag(context, "policy"):
        for role in roles:
            actions.append(
                Node(
                    package=PACKAGE,
                    executable="policy_node",
                    name="policy_node",
                    namespace=role,
                    output="screen",
                    parameters=[arg("policy_config"), {
                        "role_name": role,
                        "mode": arg("mode"),
                        "weights_file": arg("weights"),
                        "reset_service": fleet.reset_service_name(role, roles),
                        "use_sim_time": True,
                    }],
                )
            )

    if _flag(context, "trainer"):
        trainer_parameters = [arg("trainer_config")]
        if arg("log_dir"):
            trainer_parameters.append({"log_dir": arg("log_dir")})
        if arg("checkpoint_dir"):
            trainer_parameters.append({"checkpoint_dir": arg("checkpoint_dir")})
        actions.append(
            Node(
                package=PACKAGE,
                executable="trainer_node",
                name="trainer_node",
                output="screen",
                parameters=trainer_parameters,
            )
        )
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("host", default_value="localhost", description="CARLA server host"),
        DeclareLaunchArgument("port", default_value="2000", description="CARLA server RPC port"),
        DeclareLaunchArgument("timeout", default_value="20",
                              description="seconds the bridge, waypoint publishers and episode manager "
                                          "wait for CARLA calls (the bridge's own default, 2, is too "
                                          "short while the server loads a town)"),
        DeclareLaunchArgument("town", default_value="Town01", description="CARLA map the bridge loads"),
        DeclareLaunchArgument("fixed_delta_seconds", default_value="0.05",
                              description="simulated seconds per synchronous tick (0.05 = 20 Hz)"),
        DeclareLaunchArgument("role_name", default_value=fleet.DEFAULT_ROLE,
                              description="role name of the ego car when num_vehicles is 1"),
        DeclareLaunchArgument("num_vehicles", default_value="1",
                              description=f"ego cars (1..{fleet.MAX_VEHICLES}); N > 1: hero0..hero{{N-1}}"),
        DeclareLaunchArgument("mode", default_value="train", description="policy node mode: train or deploy"),
        DeclareLaunchArgument("weights", default_value="",
                              description="safetensors policy weights file ('' = wait for the trainer)"),
        DeclareLaunchArgument("policy_config", default_value=_config("policy.yaml"),
                              description="policy node parameters file"),
        DeclareLaunchArgument("trainer_config", default_value=_config("trainer.yaml"),
                              description="trainer node parameters file"),
        DeclareLaunchArgument("log_dir", default_value="",
                              description="trainer TensorBoard directory ('' = the trainer config's)"),
        DeclareLaunchArgument("checkpoint_dir", default_value="",
                              description="trainer checkpoint directory ('' = the trainer config's)"),
        DeclareLaunchArgument("objects_definition_file", default_value="",
                              description="carla_spawn_objects file ('' = config/objects.json for one "
                                          "car, a generated one for N cars)"),
        DeclareLaunchArgument("goal_topic", default_value=fleet.GOAL_TOPIC_TEMPLATE,
                              description="topic of the episode manager's goals ({role_name} is "
                                          "replaced); each waypoint publisher is remapped onto it"),
        DeclareLaunchArgument("spawn_seed", default_value="0",
                              description="seed of the episode manager's start and goal choices"),
        DeclareLaunchArgument("bridge", default_value="true",
                              description="start the bridge, carla_spawn_objects and the waypoint "
                                          "publishers"),
        DeclareLaunchArgument("episode_manager", default_value="true",
                              description="start the episode manager (reset services)"),
        DeclareLaunchArgument("policy", default_value="true", description="start the policy node(s)"),
        DeclareLaunchArgument("trainer", default_value="true", description="start the trainer node"),
        OpaqueFunction(function=_setup),
    ])
