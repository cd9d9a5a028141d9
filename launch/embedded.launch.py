"""The embedded path: sim_node (highway-env's racetrack behind the CARLA bridge's topics) in place
of CARLA + bridge + episode manager, with the same policy and trainer nodes. No GPU.

    ros2 launch av_td3_ros embedded.launch.py
    ros2 launch av_td3_ros embedded.launch.py mode:=deploy trainer:=false \
        weights:=/data/weights/policy.safetensors

sim_node publishes exactly the bridge's topics for role_name (camera, odometry, latched route,
collision, lane invasion, /clock, /carla/status), steps in lock-step like the bridge's
synchronous mode and offers the reset service itself, so the policy node cannot tell the
difference. Like carla.launch.py, each part can be switched off (docker/compose.yaml runs the
simulator, the policy and the trainer in separate containers).

Checked statically by test/test_launch_files.py: keep parameters as literal dicts.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.launch_description import LaunchDescription
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

    roles = fleet.role_names(1, arg("role_name"))
    role = roles[0]
    reset_service = fleet.reset_service_name(role, roles)
    actions = [LogInfo(msg=f"av_td3_ros: embedded simulator, car {role}")]

    if _flag(context, "sim"):
        actions.append(
            Node(
                package=PACKAGE,
                executable="sim_node",
                name="sim_node",
                output="screen",
                parameters=[arg("sim_config"), {
                    "role_name": role,
                    "reset_service": reset_service,
                    "seed": int(arg("seed")),
                }],
            )
        )

    if _flag(context, "policy"):
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
                    "reset_service": reset_service,
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
        DeclareLaunchArgument("role_name", default_value=fleet.DEFAULT_ROLE,
                              description="role name of the simulated car (topic names)"),
        DeclareLaunchArgument("seed", default_value="0", description="simulator seed"),
        DeclareLaunchArgument("mode", default_value="train", description="policy node mode: train or deploy"),
        DeclareLaunchArgument("weights", default_value="",
                              description="safetensors policy weights file ('' = wait for the trainer)"),
        DeclareLaunchArgument("sim_config", default_value=_config("sim.yaml"),
                              description="sim_node parameters file"),
        DeclareLaunchArgument("policy_config", default_value=_config("policy.yaml"),
                              description="policy node parameters file"),
        DeclareLaunchArgument("trainer_config", default_value=_config("trainer.yaml"),
                              description="trainer node parameters file"),
        DeclareLaunchArgument("log_dir", default_value="",
                              description="trainer TensorBoard directory ('' = the trainer config's)"),
        DeclareLaunchArgument("checkpoint_dir", default_value="",
                              description="trainer checkpoint directory ('' = the trainer config's)"),
        DeclareLaunchArgument("sim", default_value="true", description="start sim_node"),
        DeclareLaunchArgument("policy", default_value="true", description="start the policy node"),
        DeclareLaunchArgument("trainer", default_value="true", description="start the trainer node"),
        OpaqueFunction(function=_setup),
    ])
