"""SIM_NODE_PARAMETERS: the embedded simulator node's parameters (documented in config/sim.yaml).

The bridge-side topic names and the reset service are the policy node's own specs, taken from
POLICY_NODE_PARAMETERS by name, so the two ends of every topic share one default.
"""

from __future__ import annotations

from av_td3_ros.ros.parameters import POLICY_NODE_PARAMETERS, ParameterSpec
from av_td3_ros.sim.simulator import CAMERA_VIEWS, SimConfig

__all__ = ["SIM_NODE_PARAMETERS", "sim_config_from_params"]

_SHARED = ("role_name", "camera_topic", "odometry_topic", "route_topic", "collision_topic",
           "lane_invasion_topic", "control_topic", "reset_service")
_BY_NAME = {spec.name: spec for spec in POLICY_NODE_PARAMETERS}
_SIM = SimConfig()

SIM_NODE_PARAMETERS: list[ParameterSpec] = [_BY_NAME[name] for name in _SHARED] + [
    ParameterSpec("status_topic", "/carla/status", "carla_msgs/CarlaStatus topic, one per tick"),
    ParameterSpec("publish_clock", True, "publish /clock (sim time) every tick, like the bridge"),
    ParameterSpec("seed", 0, "seed of the first reset (later resets continue its random stream)", min=0),
    ParameterSpec("camera_view", _SIM.camera_view,
                  "front: what the rgb_front camera of config/objects.json sees (its fov and mounting); "
                  "top: a heading-up map around the car", choices=CAMERA_VIEWS),
    ParameterSpec("image_width", _SIM.image_width, "camera image width [px] (default: rgb_front's)",
                  min=8, max=4096),
    ParameterSpec("image_height", _SIM.image_height, "camera image height [px] (default: rgb_front's)",
                  min=8, max=4096),
    ParameterSpec("view_width_m", _SIM.view_width_m, "top view: metres of ground across the image width",
                  min=1.0),
    ParameterSpec("fixed_delta_seconds", _SIM.fixed_delta_seconds,
                  "simulated seconds per tick (one control per tick); times 15 Hz physics must be "
                  "a whole number of substeps", min=0.05, max=1.0),
    ParameterSpec("traffic", _SIM.traffic, "other (IDM) cars on the circuit", min=0, max=20),
    ParameterSpec("random_start", _SIM.random_start,
                  "start each episode anywhere on the circuit (false: highway-env's start)"),
    ParameterSpec("initial_speed", _SIM.initial_speed, "ego speed at each reset [m/s]", min=0.0, max=12.0),
    ParameterSpec("control_timeout", 1.0,
                  "wall seconds a tick waits for the control of its frame before going on with "
                  "the last control (the bridge's synchronous_mode_wait_for_vehicle_control_command)",
                  min=0.01, max=60.0),
    ParameterSpec("route_length_m", 1500.0,
                  "length of the route published after each reset [m] (the circuit is closed: "
                  "longer than a lap is fine; a route that runs out ends the episode)", min=10.0),
    ParameterSpec("route_spacing_m", 2.0, "distance between route waypoints [m]", min=0.1, max=50.0),
    ParameterSpec("realtime", False,
                  "pace ticks to fixed_delta_seconds of wall time (to watch it in rqt); false = as "
                  "fast as the controls come back"),
    ParameterSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", min=0.05, max=60.0),
]


def sim_config_from_params(p) -> SimConfig:
    return SimConfig(
        camera_view=p.camera_view,
        image_width=p.image_width,
        image_height=p.image_height,
        view_width_m=p.view_width_m,
        fixed_delta_seconds=p.fixed_delta_seconds,
        traffic=p.traffic,
        seed=p.seed,
        random_start=p.random_start,
        initial_speed=p.initial_speed,
    )
