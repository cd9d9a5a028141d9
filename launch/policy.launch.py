"""Deployment: ONE policy node in deploy mode with a weights file - no trainer, no simulator, no
episode manager. For a car driven by the CARLA bridge, or an existing ROS 2 vehicle stack.

    ros2 launch av_td3_ros policy.launch.py weights:=/data/weights/policy.safetensors
    ros2 launch av_td3_ros policy.launch.py weights:=$HOME/policy.safetensors use_sim_time:=false \
        camera_topic:=/sensing/camera/front/image_raw odometry_topic:=/localization/odometry \
        route_topic:=/planning/route_path control_topic:=/av_td3/control_cmd

Topic "remaps": the policy node names every topic by a parameter, so the launch arguments below
set them directly ({role_name} in a value is replaced by role_name). Plain ROS remapping rules
work too (`ros2 run av_td3_ros policy_node --ros-args -p mode:=deploy -p weights_file:=... -r
/carla/ego_vehicle/rgb_front/image:=/camera/image_raw`). What the node expects on them:
- camera_topic    sensor_msgs/Image (bgra8, bgr8, rgb8, rgba8 or mono8), a forward camera;
- odometry_topic  nav_msgs/Odometry, pose in the same frame as the route, twist in the car frame;
- route_topic     nav_msgs/Path, the route ahead (TRANSIENT_LOCAL: a latched route is received);
- control_topic   carla_msgs/CarlaEgoVehicleControl it publishes: steer in [-1, 1] with CARLA's
                  sign (steer > 0 turns RIGHT), throttle and brake in [0, 1]. A real stack needs a
                  small adapter from this message to its drive-by-wire command.
In deploy mode the node never publishes transitions, never explores and never calls a reset;
without valid weights it brakes and says why on /diagnostics. weights_topic is empty by default
here (weights from the file only: nothing can push new weights to a car over DDS); pass
weights_topic:=/av_td3/policy_weights to accept the trainer's.

Checked statically by test/test_launch_files.py: keep parameters as literal dicts.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "av_td3_ros"


def _config(name: str) -> str:
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def _setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    weights = arg("weights")
    if not weights:
        raise RuntimeError("policy.launch.py needs weights:=/path/to/policy.safetensors (deploy mode)")
    if not os.path.isfile(os.path.expanduser(weights)):
        raise RuntimeError(f"policy.launch.py: weights file {weights!r} does not exist")
    use_sim_time = arg("use_sim_time").strip().lower() in ("true", "1", "yes", "on")
    onnx = arg("onnx")
    if onnx and not os.path.isfile(os.path.expanduser(onnx)):
        raise RuntimeError(f"policy.launch.py: onnx file {onnx!r} does not exist")
    return [
        LogInfo(msg=f"av_td3_ros: deploying {weights} for {arg('role_name')}"),
        Node(
            package=PACKAGE,
            executable="policy_node",
            name="policy_node",
            namespace=arg("namespace"),
            output="screen",
            parameters=[arg("policy_config"), arg("vehicle_config"), {
                "mode": "deploy",
                "output": arg("output"),
                "inference_backend": "onnx" if onnx else "torch",
                "onnx_file": os.path.expanduser(onnx),
                "role_name": arg("role_name"),
                "weights_file": os.path.expanduser(weights),
                "weights_topic": arg("weights_topic"),
                "camera_topic": arg("camera_topic"),
                "odometry_topic": arg("odometry_topic"),
                "route_topic": arg("route_topic"),
                "control_topic": arg("control_topic"),
                "use_sim_time": use_sim_time,
            }],
        ),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("weights", description="safetensors policy weights file (required)"),
        DeclareLaunchArgument("role_name", default_value="ego_vehicle",
                              description="role name ({role_name} in the topic arguments)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the policy node"),
        DeclareLaunchArgument("policy_config", default_value=_config("policy.yaml"),
                              description="policy node parameters file"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="true beside CARLA or the embedded simulator (/clock); "
                                          "false on a real vehicle"),
        DeclareLaunchArgument("weights_topic", default_value="",
                              description="PolicyWeights topic to accept updates from ('' = file only)"),
        DeclareLaunchArgument("camera_topic", default_value="/carla/{role_name}/rgb_front/image",
                              description="sensor_msgs/Image input"),
        DeclareLaunchArgument("odometry_topic", default_value="/carla/{role_name}/odometry",
                              description="nav_msgs/Odometry input"),
        DeclareLaunchArgument("route_topic", default_value="/carla/{role_name}/waypoints",
                              description="nav_msgs/Path input (transient local)"),
        DeclareLaunchArgument("control_topic", default_value="/carla/{role_name}/vehicle_control_cmd",
                              description="carla_msgs/CarlaEgoVehicleControl output"),
        DeclareLaunchArgument("output", default_value="carla",
                              description="output adapter: carla | ackermann | autoware (docs/vehicle.md)"),
        DeclareLaunchArgument("vehicle_config", default_value=_config("policy.yaml"),
                              description="parameters file applied after policy_config: the car's "
                                          "vehicle.* and the command gate's gate.* limits, trusted_keys"),
        DeclareLaunchArgument("onnx", default_value="",
                              description="ONNX policy from `av-td3 export`: run it on onnxruntime "
                                          "instead of the weights on torch"),
        OpaqueFunction(function=_setup),
    ])
