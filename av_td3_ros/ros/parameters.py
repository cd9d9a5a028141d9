"""The nodes' parameters: a tiny declarative schema, and the three nodes' lists.

Each parameter is written ONCE. A parameter that is a setting of a core dataclass
(av_td3_ros.config_schema: TD3Config, RewardConfig, KinematicsConfig, SimConfig, ...) derives its
`ParameterSpec` from that setting with `parameters_from(TD3Config, "td3.")`; node-only parameters
(topics, rates, timeouts) are written here as `ParameterSpec`s. `declare_parameters(node, specs)`
declares them on an rclpy node with a ParameterDescriptor (description, range, read-only) and
validates the values the node was started with; a bad value raises `InvalidParameter`, whose
message names the key, the value and what is allowed (the same check as the core dataclass's).
The YAML files under config/ document every key in place, with its range; `yaml_parameters` reads
such a file back so a test can check that its keys, defaults and ranges equal the specs.

Usage:
    SPECS = [ParameterSpec("sensor_timeout", 0.5, "seconds without data before braking", min=0.01),
             ParameterSpec("mode", "train", "train or deploy", choices=("train", "deploy")),
             *parameters_from(RewardConfig, "reward.")]
    params = declare_parameters(node, SPECS)     # raises InvalidParameter
    params.sensor_timeout, params.mode           # dotted names nest: params.reward.target_speed
    RewardConfig.from_namespace(params.reward)   # back to the core dataclass

Parameters are read-only after start unless a spec says `dynamic=True` (a node that reads a
value once must not pretend it can be changed at run time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from av_td3_ros.config_schema import Setting, SettingError, settings_of

# Also POLICY_NODE_PARAMETERS, TRAINER_NODE_PARAMETERS, SIM_NODE_PARAMETERS (built on first use).
__all__ = [
    "InvalidParameter",
    "ParameterSpec",
    "declare_parameters",
    "defaults",
    "nest",
    "parameters_from",
    "validate_value",
    "with_choices",
    "yaml_parameters",
]


class InvalidParameter(SettingError):
    """A parameter value outside its spec. The message names the key and what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        ValueError.__init__(self, f"invalid parameter '{name}' = {value!r}: {allowed}")
        self.name = name
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its name, default (which fixes its type), a description, and the allowed
    values: bounds for numbers (`min`/`max` inclusive, `gt`/`lt` exclusive; any may be None), or
    `choices`. The checks are config_schema.Setting's, so a derived spec allows what the core does.

    Types: bool, int, float, str, or a list of one of them (`item_type` must be given when the
    default list is empty). A float parameter accepts an integer value (`-p timeout:=1`)."""

    name: str
    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    choices: tuple[Any, ...] | None = None
    dynamic: bool = False
    item_type: type | None = None
    gt: float | int | None = None
    lt: float | int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.description:
            raise ValueError(f"ParameterSpec {self.name!r}: name and description are required")
        if isinstance(self.default, tuple):
            object.__setattr__(self, "default", list(self.default))
        try:
            setting = Setting(self.default, self.description, min=self.min, max=self.max, gt=self.gt,
                              lt=self.lt, choices=self.choices, item_type=self.item_type)
        except SettingError as exc:  # the default must satisfy its own spec
            raise InvalidParameter(self.name, self.default, exc.allowed) from None
        except ValueError as exc:
            raise ValueError(f"ParameterSpec {self.name!r}: {exc}") from None
        object.__setattr__(self, "choices", setting.choices)
        object.__setattr__(self, "item_type", setting.item_type)
        object.__setattr__(self, "_setting", setting)

    @property
    def value_type(self) -> type:
        return self._setting.value_type

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        return self._setting.allowed()

    def range_text(self) -> str | None:
        """The allowed values as config/*.yaml writes them next to the key ("[0.1, 100.0]")."""
        return self._setting.range_text()


def validate_value(spec: ParameterSpec, value: Any) -> Any:
    """Return `value` (a float spec turns an int into a float) or raise InvalidParameter."""
    try:
        return spec._setting.check(value, spec.name)
    except SettingError as exc:
        raise InvalidParameter(spec.name, value, exc.allowed) from None


def parameters_from(
    config_class: type,
    prefix: str = "",
    *,
    only: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> list[ParameterSpec]:
    """A ParameterSpec for each setting of a core dataclass, named `prefix` + field name, with the
    setting's default, description and allowed values. `only` (in that order) or `exclude` pick
    the settings a node exposes; `defaults` replaces a default for this node (e.g. a directory).
    A setting that may be None (`none=v`) is written `v`, which its range then includes."""
    settings = settings_of(config_class)
    exclude, defaults = set(exclude), dict(defaults or {})
    unknown = (set(only or ()) | exclude | set(defaults)) - set(settings)
    if unknown:
        raise ValueError(f"{config_class.__name__} has no settings {sorted(unknown)}")
    names = list(only) if only is not None else [n for n in settings if n not in exclude]
    specs = []
    for name in names:
        s = settings[name]
        low, gt, high, lt = s.min, s.gt, s.max, s.lt
        if s.none is not None:  # the None spelling is a valid parameter value too
            if (low is not None and s.none < low) or (gt is not None and s.none <= gt):
                low, gt = s.none, None
            if (high is not None and s.none > high) or (lt is not None and s.none >= lt):
                high, lt = s.none, None
        default = defaults.get(name, s.default)
        specs.append(ParameterSpec(
            prefix + name, s.none if default is None else default, s.description,
            min=low, max=high, gt=gt, lt=lt, choices=s.choices, item_type=s.item_type,
        ))
    return specs


def nest(values: Mapping[str, Any]) -> SimpleNamespace:
    """{'a': 1, 'reward.w': 2} -> namespace(a=1, reward=namespace(w=2))."""
    root = SimpleNamespace()
    for name, value in values.items():
        parts = name.split(".")
        ns = root
        for part in parts[:-1]:
            if not hasattr(ns, part):
                setattr(ns, part, SimpleNamespace())
            ns = getattr(ns, part)
        setattr(ns, parts[-1], value)
    return root


def defaults(specs: Iterable[ParameterSpec]) -> SimpleNamespace:
    """The specs' defaults as the namespace `declare_parameters` would return (no rclpy)."""
    return nest({s.name: (list(s.default) if isinstance(s.default, list) else s.default) for s in specs})


def _descriptor(spec: ParameterSpec, *, final: bool):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    type_ids = {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }
    array_ids = {
        bool: ParameterType.PARAMETER_BOOL_ARRAY,
        int: ParameterType.PARAMETER_INTEGER_ARRAY,
        float: ParameterType.PARAMETER_DOUBLE_ARRAY,
        str: ParameterType.PARAMETER_STRING_ARRAY,
    }
    descriptor = ParameterDescriptor(description=spec.description)
    if not final:
        # First pass: accept whatever type the user gave, so we can explain a wrong one ourselves.
        descriptor.dynamic_typing = True
        return descriptor
    descriptor.type = array_ids[spec.item_type] if spec.value_type is list else type_ids[spec.value_type]
    descriptor.read_only = not spec.dynamic
    bounded = any(b is not None for b in (spec.min, spec.max, spec.gt, spec.lt))
    if spec.choices is not None or (bounded and spec.value_type is list):
        descriptor.additional_constraints = spec.allowed()
    elif bounded and spec.value_type is int:
        low, high = -(2**63), 2**63 - 1
        if spec.min is not None or spec.gt is not None:
            low = int(spec.min) if spec.min is not None else math.floor(spec.gt) + 1
        if spec.max is not None or spec.lt is not None:
            high = int(spec.max) if spec.max is not None else math.ceil(spec.lt) - 1
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
    elif bounded and spec.value_type is float:
        # ROS ranges are inclusive: an exclusive bound is the range's end, and said in words.
        low = spec.min if spec.min is not None else spec.gt if spec.gt is not None else -math.inf
        high = spec.max if spec.max is not None else spec.lt if spec.lt is not None else math.inf
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
        ]
        if spec.gt is not None or spec.lt is not None:
            descriptor.additional_constraints = spec.allowed()
    return descriptor


def with_choices(specs: Sequence[ParameterSpec], name: str, choices: tuple[Any, ...]) -> list[ParameterSpec]:
    """`specs` with the choices of parameter `name` replaced (e.g. the output adapters a node
    was built with)."""
    return [replace(spec, choices=tuple(choices)) if spec.name == name else spec for spec in specs]


def declare_parameters(node, specs: Sequence[ParameterSpec]) -> SimpleNamespace:
    """Declare every spec on `node` (once), validate the values it was started with, and return
    them as a namespace (dotted names nest). Raises InvalidParameter naming the first bad key.

    Works with rclpy.node.Node and rclpy.lifecycle.LifecycleNode. Never declare `use_sim_time`:
    rclpy does that itself."""
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"parameter specs declared twice: {duplicates}")
    values: dict[str, Any] = {}
    for spec in specs:
        raw = node.declare_parameter(spec.name, spec.default, _descriptor(spec, final=False)).value
        if raw is None and spec.value_type is list:  # rcl reads `[]` (YAML or -p) as "not set"
            raw = []
        elif isinstance(raw, tuple):
            raw = list(raw)
        elif spec.value_type is list and hasattr(raw, "tolist"):  # array.array / numpy from rclpy
            raw = raw.tolist()
        value = validate_value(spec, raw)
        # Second pass: the final descriptor (static type, range, read-only) for `ros2 param
        # describe` / rqt; the value is re-set with its proper type (an int given for a float).
        node.set_descriptor(
            spec.name,
            _descriptor(spec, final=True),
            _parameter(spec, value).get_parameter_value(),
        )
        values[spec.name] = value
    return nest(values)


def _parameter(spec: ParameterSpec, value):
    """rclpy Parameter of the spec's type (rclpy would type an empty list as a byte array)."""
    from rclpy.parameter import Parameter

    if spec.value_type is not list:
        return Parameter(spec.name, value=value)
    array = {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
             float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}[spec.item_type]
    return Parameter(spec.name, array, value)


def yaml_parameters(path: str | Path, node_key: str | None = None) -> dict[str, Any]:
    """Read a ROS 2 params file and return its `ros__parameters` flattened to dotted keys.

    `node_key` picks the section (e.g. "/**" or "policy_node"); by default the file must have
    exactly one section."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: not a ROS 2 parameters file")
    if node_key is None:
        if len(data) != 1:
            raise ValueError(f"{path}: several sections {list(data)}; pass node_key")
        node_key = next(iter(data))
    section = data[node_key]
    if not isinstance(section, dict) or "ros__parameters" not in section:
        raise ValueError(f"{path}: section {node_key!r} has no ros__parameters")

    flat: dict[str, Any] = {}

    def walk(prefix: str, tree: dict) -> None:
        for key, value in tree.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(f"{name}.", value)
            else:
                flat[name] = value

    walk("", section["ros__parameters"] or {})
    return flat


# ----------------------------------------------------------------------------------------------
# The three nodes' lists. config/<node>.yaml documents each key in place; tests keep them equal.
# Each list is built on first use (module __getattr__): it imports its node's cores (torch for the
# trainer, highway-env for the simulator), which the other nodes must not pay for at start.
# ----------------------------------------------------------------------------------------------
_TOPIC = "topic name ({role_name} is replaced)"

# The trainer publishes it, sim_node's hold waits on it: one spec, one default for both ends.
UPDATE_COUNT_TOPIC = ParameterSpec(
    "update_count_topic", "/av_td3/update_count",
    "std_msgs/UInt64: TD3 updates the trainer has made since it started, after every update "
    "(RELIABLE TRANSIENT_LOCAL depth 1); sim_node's hold_update_ratio waits on it")


# TD3Config's exploration settings: the policy node's, which explores (the trainer does not).
EXPLORATION_SETTINGS = ("exploration_noise", "exploration_schedule", "exploration_noise_final",
                        "exploration_decay_steps")
# The gate's own limits; its steering angle and acceleration ranges are the vehicle's.
GATE_PARAMETERS = ("max_steering_rate", "max_jerk", "max_speed", "stop_deceleration", "stop_jerk",
                   "heartbeat_timeout")


def _policy_node_parameters() -> list[ParameterSpec]:
    """policy_node. Topic names may contain "{role_name}", replaced by the role_name parameter."""
    from av_td3_ros.learning.config import TD3Config
    from av_td3_ros.perception.kinematics import KinematicsConfig
    from av_td3_ros.perception.reward import RewardConfig
    from av_td3_ros.vehicle import GateLimits, VehicleParameters

    P = ParameterSpec
    return [
        P("mode", "train",
          "train: exploration noise, action limiter, reward, transitions, resets; "
          "deploy: deterministic actor only, brake without valid weights", choices=("train", "deploy")),
        P("autostart", True,
          "configure and activate at start (plain `ros2 run`); false = wait for lifecycle transitions"),
        P("role_name", "ego_vehicle", "CARLA role name of the ego vehicle"),
        P("actor_id", "", "id of this car's transition stream; empty = the node's full name"),
        P("camera_topic", "/carla/{role_name}/rgb_front/image", f"camera Image {_TOPIC}"),
        P("odometry_topic", "/carla/{role_name}/odometry", f"Odometry {_TOPIC}"),
        P("route_topic", "/carla/{role_name}/waypoints", f"route Path {_TOPIC} (transient local)"),
        P("collision_topic", "/carla/{role_name}/collision", f"CarlaCollisionEvent {_TOPIC}"),
        P("lane_invasion_topic", "/carla/{role_name}/lane_invasion", f"CarlaLaneInvasionEvent {_TOPIC}"),
        P("output", "carla", "output adapter the commands go out through (av_td3_ros.ros.outputs): "
          "carla = CarlaEgoVehicleControl on control_topic; ackermann = AckermannDriveStamped on "
          "ackermann_topic; autoware = Control + GearCommand", choices=("carla", "ackermann", "autoware")),
        P("control_topic", "/carla/{role_name}/vehicle_control_cmd", f"CarlaEgoVehicleControl {_TOPIC}"),
        P("ackermann_topic", "/carla/{role_name}/ackermann_cmd",
          f"ackermann_msgs/AckermannDriveStamped {_TOPIC} (output ackermann)"),
        P("autoware_control_topic", "/control/command/control_cmd",
          f"autoware_control_msgs/Control {_TOPIC} (output autoware)"),
        P("autoware_gear_topic", "/control/command/gear_cmd",
          f"autoware_vehicle_msgs/GearCommand {_TOPIC} (output autoware)"),
        P("estop_topic", "~/estop",
          f"std_msgs/Bool e-stop {_TOPIC} (latched; deploy mode, vehicle-stack outputs)"),
        P("heartbeat_topic", "~/heartbeat",
          f"std_msgs/Empty heartbeat {_TOPIC} (deploy mode, when gate.heartbeat_timeout > 0)"),
        P("release_keys", [], "ed25519 public key files (PEM, `av-td3 keys --name operator`) whose "
          "signed release tokens on ~/release_stop may end a latched stop (deploy mode, vehicle-stack "
          "outputs); empty = only a restart ends it", item_type=str),
        P("release_max_age", 30.0, "seconds a signed release token stays valid after it was issued "
          "(wall clocks of the operator's machine and the car)", gt=0.0, max=600.0),
        P("transitions_topic", "/av_td3/transitions", "Transition topic (train mode)"),
        P("weights_topic", "/av_td3/policy_weights", "PolicyWeights topic; empty = file only"),
        P("reset_service", "/av_td3/reset_episode",
          "std_srvs/Trigger service that resets the episode (train mode); empty or absent = just start "
          "a new episode"),
        P("weights_file", "", "safetensors policy weights loaded at configure; empty = none"),
        P("inference_backend", "torch",
          "torch: PolicyRuntime (weights from weights_file / weights_topic, hot-swapped); onnx (deploy "
          "mode): the exported onnx_file on onnxruntime, no hot swap", choices=("torch", "onnx")),
        P("onnx_file", "", "ONNX policy from `av-td3 export` (inference_backend onnx)"),
        P("weights_trust", "auto",
          "signed: install only weights (topic and file) signed by a key in trusted_keys; any: every "
          "well-formed payload (reported as WARN on /diagnostics); auto: signed in deploy mode, any in "
          "train mode", choices=("auto", "signed", "any")),
        P("trusted_keys", [], "ed25519 public key files (PEM, `av-td3 keys`) whose signatures "
          "weights_trust signed accepts", item_type=str),
        P("encoder_norm", "layer",
          "CNN normalization assumed only for unsigned legacy weights that do not name their cnn_norm "
          "(weights that do are built from it)", choices=("layer", "none")),
        P("max_weights_bytes", 32 * 1024 * 1024, "largest accepted weights payload (bytes)",
          min=1024, max=1 << 30),
        P("torch_threads", 1,
          "torch intra-op threads for inference, also used for OpenCV (1 keeps p99 low on a loaded machine)",
          min=1, max=64),
        *parameters_from(TD3Config, only=EXPLORATION_SETTINGS),
        P("initial_action_limit", 0.6,
          "action limit until the first weights bring the trainer's (train mode); 0 = none",
          min=0.0, max=1.0),
        P("seed", -1, "random seed for exploration; -1 = from the OS", min=-1),
        P("sensor_timeout", 0.5,
          "seconds (wall clock) without camera or odometry before the watchdog brakes; a frame is "
          "still driven on a pose that came after the previous frame when that frame interval is "
          "<= 2x this (a slow synchronous tick, not an outage)", min=0.01, max=60.0),
        P("odometry_sync_timeout", 0.05,
          "seconds (wall) a camera frame waits for the odometry of its own stamp before it is answered "
          "with the latest odometry; 0 = never wait", min=0.0, max=1.0),
        P("event_grace", 0.1,
          "seconds (wall) a step's transition waits for its tick's collision / lane invasion, which the "
          "bridge publishes after the camera frame (the next frame releases it sooner)", min=0.0, max=5.0),
        P("control_rate", 20.0, "Hz of the watchdog's brake commands while inputs are stale",
          min=0.5, max=1000.0),
        P("reset_timeout", 10.0, "seconds to wait for the reset service before starting a new episode anyway",
          min=0.1, max=600.0),
        P("route_timeout", 5.0,
          "seconds after the reset answer to wait for the new episode's route (CARLA's waypoint publisher "
          "plans it a tick or more later) before starting on the current route", min=0.0, max=600.0),
        P("diagnostics_period", 1.0, "seconds between /diagnostics messages", min=0.05, max=60.0),
        # Reward and episode ends; route following for the kinematic inputs.
        *parameters_from(RewardConfig, "reward."),
        *parameters_from(KinematicsConfig, "kinematics.", only=("search_ahead", "finish_distance")),
        # The car behind the pedals and the deploy-mode command gate (vehicle-stack outputs).
        *parameters_from(VehicleParameters, "vehicle."),
        *parameters_from(GateLimits, "gate.", only=GATE_PARAMETERS),
    ]


def _trainer_node_parameters() -> list[ParameterSpec]:
    """trainer_node. `TrainingServiceConfig.from_namespace(values)` turns the values into the
    core's config; `seed` is the learner's and the replay's."""
    from av_td3_ros.learning.config import TD3Config
    from av_td3_ros.learning.ingest import IngestConfig
    from av_td3_ros.learning.training_service import TrainingServiceConfig

    P = ParameterSpec
    return [
        P("transitions_topic", "/av_td3/transitions", "av_td3_msgs/Transition input (RELIABLE depth 1000)"),
        P("weights_topic", "/av_td3/policy_weights",
          "av_td3_msgs/PolicyWeights output (RELIABLE TRANSIENT_LOCAL depth 1)"),
        P("signing_key", "",
          "ed25519 private key file (PEM, 0600; `av-td3 keys`) that signs every published payload; "
          "empty = unsigned (policy nodes with weights_trust signed refuse them)"),
        P("status_topic", "/av_td3/training_status", "av_td3_msgs/TrainingStatus output (no header)"),
        UPDATE_COUNT_TOPIC,
        P("diagnostics_topic", "/diagnostics", "diagnostic_msgs/DiagnosticArray output"),
        P("executor", "events",
          "rclpy executor: events (rclpy.experimental.EventsExecutor, measured faster) or single_threaded",
          choices=("events", "single_threaded")),
        P("status_period", 1.0, "seconds between TrainingStatus messages", min=0.05, max=3600.0),
        P("diagnostics_period", 1.0, "seconds between /diagnostics messages", min=0.05, max=3600.0),
        P("torch_threads", 0, "torch intra-op threads for the learner (0 = torch's default)",
          min=0, max=1024),
        P("seed", -1, "seed for the learner and replay sampling (-1 = random)", min=-1, max=2**31 - 1),
        # The node's own defaults for where it writes; the core's are "" (nothing written).
        *parameters_from(TrainingServiceConfig, exclude=("lag_window",),
                         defaults={"checkpoint_dir": "checkpoints/trainer", "log_dir": "runs/trainer"}),
        *parameters_from(IngestConfig, "ingest.",
                         exclude=("frame_height", "frame_width", "episode_length_history")),
        # The policy node owns exploration; the frame stack and the action bound are fixed by the nodes.
        *parameters_from(TD3Config, "td3.", exclude=(*EXPLORATION_SETTINGS, "max_action", "in_frames")),
    ]


_SIM_SHARES_WITH_POLICY = ("role_name", "camera_topic", "odometry_topic", "route_topic", "collision_topic",
                           "lane_invasion_topic", "control_topic", "reset_service")


def _sim_node_parameters() -> list[ParameterSpec]:
    """sim_node. The bridge-side topic names and the reset service are the policy node's own specs,
    so the two ends of every topic share one default. `SimConfig.from_namespace(values)`."""
    from av_td3_ros.sim.simulator import NODE_SETTINGS, SimConfig

    by_name = {spec.name: spec for spec in __getattr__("POLICY_NODE_PARAMETERS")}
    P = ParameterSpec
    return [
        *(by_name[name] for name in _SIM_SHARES_WITH_POLICY),
        P("status_topic", "/carla/status", "carla_msgs/CarlaStatus topic, one per tick"),
        P("publish_clock", True, "publish /clock (sim time) every tick, like the bridge"),
        *parameters_from(SimConfig, only=NODE_SETTINGS),
        P("control_timeout", 1.0,
          "wall seconds a tick waits for the control of its frame before going on with the last control "
          "(the bridge's synchronous_mode_wait_for_vehicle_control_command)", min=0.01, max=60.0),
        P("route_length_m", 1500.0,
          "length of the route published after each reset [m] (the circuit is closed: longer than a lap "
          "is fine; a route that runs out ends the episode)", min=10.0),
        P("route_spacing_m", 2.0, "distance between route waypoints [m]", min=0.1, max=50.0),
        P("route_delay_ticks", 1,
          "ticks after a reset before its new route is published: the reset answers first, as CARLA's "
          "episode manager does, and the route follows a tick or more later, as from the waypoint "
          "publisher; 0 = the route goes out before the reset answers", min=0, max=100),
        P("bridge_stamps", True,
          "stamp like the CARLA ROS bridge: float seconds truncated to ns, the image and events from the "
          "sensor time, odometry, clock and route from the world snapshot (the two may differ by 1 ns); "
          "false = one integer-ns stamp per frame"),
        P("realtime", False,
          "pace ticks to fixed_delta_seconds of wall time (to watch it in rqt); false = as fast as the "
          "controls come back"),
        P("diagnostics_period", 1.0, "seconds between /diagnostics messages", min=0.05, max=60.0),
        P("hold_update_ratio", 0.0,
          "hold each step until the trainer has made hold_update_ratio x (env steps - "
          "hold_learning_starts) updates (the count on update_count_topic), so a run keeps at least this "
          "update-to-data ratio (the trainer's update_to_data_ratio caps it from above); 0 = off: tick as "
          "fast as the controls come back", min=0.0, max=100.0),
        P("hold_learning_starts", 1000,
          "env steps before the hold begins: the trainer's learning_starts (it makes no update before)",
          min=0),
        UPDATE_COUNT_TOPIC,
        P("hold_timeout", 10.0,
          "wall seconds a held step waits without a new update count before it goes on (a warning, "
          "hold_timeouts on /diagnostics, WARN until the trainer counts again; then the hold resumes)",
          min=0.1, max=3600.0),
    ]


_NODE_PARAMETERS = {
    "POLICY_NODE_PARAMETERS": _policy_node_parameters,
    "TRAINER_NODE_PARAMETERS": _trainer_node_parameters,
    "SIM_NODE_PARAMETERS": _sim_node_parameters,
}


def __getattr__(name: str) -> list[ParameterSpec]:
    build = _NODE_PARAMETERS.get(name)
    if build is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    specs = globals()[name] = build()
    return specs
