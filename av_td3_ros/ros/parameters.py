"""A tiny declarative parameter schema for our nodes.

Each node lists its parameters ONCE, as `ParameterSpec`s (name, default, description, and a range
or a set of choices). `declare_parameters(node, specs)` declares them on an rclpy node with a
ParameterDescriptor (description, range, read-only) and validates the values the node was started
with; a bad value raises `InvalidParameter`, whose message names the key, the value and what is
allowed. The YAML files under config/ document every key in place; `yaml_parameters` reads such a
file back so a test can check that its keys and defaults equal the specs (they never drift).

Usage:
    SPECS = [ParameterSpec("sensor_timeout", 0.5, "seconds without data before braking", min=0.01),
             ParameterSpec("mode", "train", "train or deploy", choices=("train", "deploy"))]
    params = declare_parameters(node, SPECS)     # raises InvalidParameter
    params.sensor_timeout, params.mode           # dotted names nest: params.reward.target_speed

Parameters are read-only after start unless a spec says `dynamic=True` (a node that reads a
value once must not pretend it can be changed at run time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = [
    "InvalidParameter",
    "ParameterSpec",
    "declare_parameters",
    "defaults",
    "nest",
    "validate_value",
    "yaml_parameters",
]

_SCALAR_TYPES = (bool, int, float, str)


class InvalidParameter(ValueError):
    """A parameter value outside its spec. The message names the key and what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid parameter '{name}' = {value!r}: {allowed}")
        self.name = name
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its name, default (which fixes its type), a description, and the allowed
    values: an inclusive `min`/`max` (either may be None) for numbers, or `choices`.

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

    def __post_init__(self) -> None:
        if not self.name or not self.description:
            raise ValueError(f"ParameterSpec {self.name!r}: name and description are required")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if isinstance(self.default, tuple):
            object.__setattr__(self, "default", list(self.default))
        if isinstance(self.default, list):
            if self.item_type is None:
                if not self.default:
                    raise ValueError(f"ParameterSpec {self.name!r}: an empty list default needs item_type")
                object.__setattr__(self, "item_type", type(self.default[0]))
            if self.item_type not in _SCALAR_TYPES:
                raise ValueError(f"ParameterSpec {self.name!r}: unsupported list item type {self.item_type}")
        elif not isinstance(self.default, _SCALAR_TYPES):
            raise ValueError(f"ParameterSpec {self.name!r}: unsupported default {self.default!r}")
        # The default must satisfy its own spec.
        validate_value(self, self.default)

    @property
    def value_type(self) -> type:
        return list if isinstance(self.default, list) else type(self.default)

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.choices is not None:
            return f"must be one of {list(self.choices)}"
        kind = {bool: "a bool", int: "an integer", float: "a finite number", str: "a string"}
        if self.value_type is list:
            text = f"must be a list of {kind[self.item_type]}"
            items = " each"
        else:
            text = f"must be {kind[self.value_type]}"
            items = ""
        if self.min is not None and self.max is not None:
            text += f"{items} in [{self.min}, {self.max}]"
        elif self.min is not None:
            text += f"{items} >= {self.min}"
        elif self.max is not None:
            text += f"{items} <= {self.max}"
        return text


def _check_scalar(spec: ParameterSpec, kind: type, value: Any) -> Any:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise InvalidParameter(spec.name, value, spec.allowed())
    if spec.choices is not None and value not in spec.choices:
        raise InvalidParameter(spec.name, value, spec.allowed())
    if kind in (int, float):
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            raise InvalidParameter(spec.name, value, spec.allowed())
    return value


def validate_value(spec: ParameterSpec, value: Any) -> Any:
    """Return `value` (a float spec turns an int into a float) or raise InvalidParameter."""
    if spec.value_type is list:
        if not isinstance(value, (list, tuple)):
            raise InvalidParameter(spec.name, value, spec.allowed())
        return [_check_scalar(spec, spec.item_type, v) for v in value]
    return _check_scalar(spec, spec.value_type, value)


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
    if spec.choices is not None:
        descriptor.additional_constraints = spec.allowed()
    elif spec.value_type in (int, float) and (spec.min is not None or spec.max is not None):
        if spec.value_type is int:
            low = int(spec.min) if spec.min is not None else -(2**63)
            high = int(spec.max) if spec.max is not None else 2**63 - 1
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
        else:
            low = float(spec.min) if spec.min is not None else -math.inf
            high = float(spec.max) if spec.max is not None else math.inf
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    elif spec.value_type is list and (spec.min is not None or spec.max is not None):
        descriptor.additional_constraints = spec.allowed()
    return descriptor


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
# policy_node. config/policy.yaml documents each of these in place; a test keeps them equal.
# Topic names may contain "{role_name}", replaced by the role_name parameter.
# ----------------------------------------------------------------------------------------------
_TOPIC = "topic name ({role_name} is replaced)"

POLICY_NODE_PARAMETERS: list[ParameterSpec] = [
    ParameterSpec(
        "mode",
        "train",
        "train: exploration noise, action limiter, reward, transitions, resets; "
        "deploy: deterministic actor only, brake without valid weights",
        choices=("train", "deploy"),
    ),
    ParameterSpec(
        "autostart",
        True,
        "configure and activate at start (plain `ros2 run`); false = wait for lifecycle transitions",
    ),
    ParameterSpec("role_name", "ego_vehicle", "CARLA role name of the ego vehicle"),
    ParameterSpec("actor_id", "", "id of this car's transition stream; empty = the node's full name"),
    ParameterSpec("camera_topic", "/carla/{role_name}/rgb_front/image", f"camera Image {_TOPIC}"),
    ParameterSpec("odometry_topic", "/carla/{role_name}/odometry", f"Odometry {_TOPIC}"),
    ParameterSpec("route_topic", "/carla/{role_name}/waypoints", f"route Path {_TOPIC} (transient local)"),
    ParameterSpec("collision_topic", "/carla/{role_name}/collision", f"CarlaCollisionEvent {_TOPIC}"),
    ParameterSpec(
        "lane_invasion_topic", "/carla/{role_name}/lane_invasion", f"CarlaLaneInvasionEvent {_TOPIC}"
    ),
    ParameterSpec(
        "control_topic", "/carla/{role_name}/vehicle_control_cmd", f"CarlaEgoVehicleControl {_TOPIC}"
    ),
    ParameterSpec("transitions_topic", "/av_td3/transitions", "Transition topic (train mode)"),
    ParameterSpec("weights_topic", "/av_td3/policy_weights", "PolicyWeights topic; empty = file only"),
    ParameterSpec(
        "reset_service",
        "/av_td3/reset_episode",
        "std_srvs/Trigger service that resets the episode "
        "(train mode); empty or absent = just start a new episode",
    ),
    ParameterSpec("weights_file", "", "safetensors policy weights loaded at configure; empty = none"),
    ParameterSpec(
        "weights_trust",
        "auto",
        "signed: install only weights (topic and file) signed by a key in trusted_keys; any: every "
        "well-formed payload (reported as WARN on /diagnostics); auto: signed in deploy mode, any in "
        "train mode",
        choices=("auto", "signed", "any"),
    ),
    ParameterSpec(
        "trusted_keys",
        [],
        "ed25519 public key files (PEM, `av-td3 keys`) whose signatures weights_trust signed accepts",
        item_type=str,
    ),
    ParameterSpec(
        "encoder_norm",
        "layer",
        "CNN normalization assumed only for unsigned legacy weights that do not name their cnn_norm "
        "(weights that do are built from it)",
        choices=("layer", "none"),
    ),
    ParameterSpec(
        "max_weights_bytes",
        32 * 1024 * 1024,
        "largest accepted weights payload (bytes)",
        min=1024,
        max=1 << 30,
    ),
    ParameterSpec(
        "torch_threads",
        1,
        "torch intra-op threads for inference, also used for OpenCV (1 keeps p99 low on a loaded machine)",
        min=1,
        max=64,
    ),
    ParameterSpec(
        "exploration_noise", 0.1, "std of the Gaussian exploration noise (train mode)", min=0.0, max=1.0
    ),
    ParameterSpec(
        "initial_action_limit",
        0.6,
        "action limit until the first weights bring the trainer's (train mode); 0 = none",
        min=0.0,
        max=1.0,
    ),
    ParameterSpec("seed", -1, "random seed for exploration; -1 = from the OS", min=-1),
    ParameterSpec(
        "sensor_timeout",
        0.5,
        "seconds (wall clock) without camera or odometry before the watchdog brakes",
        min=0.01,
        max=60.0,
    ),
    ParameterSpec(
        "odometry_sync_timeout",
        0.05,
        "seconds (wall) a camera frame waits for the odometry of its own stamp before it is "
        "answered with the latest odometry; 0 = never wait",
        min=0.0,
        max=1.0,
    ),
    ParameterSpec(
        "control_rate",
        20.0,
        "Hz of the watchdog's brake commands while inputs are stale",
        min=0.5,
        max=1000.0,
    ),
    ParameterSpec(
        "reset_timeout",
        10.0,
        "seconds to wait for the reset service before starting a new episode anyway",
        min=0.1,
        max=600.0,
    ),
    ParameterSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", min=0.05, max=60.0),
]

# Reward and episode ends (av_td3_ros.perception.reward.RewardConfig; a test checks the names and
# defaults equal RewardConfig's fields) and route following (KinematicsEncoder).
POLICY_NODE_PARAMETERS += [
    ParameterSpec(
        "reward.target_speed", 8.33, "speed the car should hold (m/s); 8.33 = 30 km/h", min=0.1, max=100.0
    ),
    ParameterSpec(
        "reward.speed_weight",
        1.0,
        "driving reward of a step at target speed, centred and aligned",
        min=0.0,
        max=1000.0,
    ),
    ParameterSpec(
        "reward.lane_centering_weight",
        0.5,
        "share of the driving reward lost at |lateral offset| = max_lateral_offset",
        min=0.0,
        max=1.0,
    ),
    ParameterSpec(
        "reward.heading_weight",
        0.5,
        "share of the driving reward lost at a 90 degree heading error",
        min=0.0,
        max=1.0,
    ),
    ParameterSpec(
        "reward.collision_penalty",
        10.0,
        "subtracted on a collision (the episode terminates)",
        min=0.0,
        max=1e4,
    ),
    ParameterSpec(
        "reward.lane_invasion_penalty", 0.5, "subtracted per lane invasion event", min=0.0, max=1e4
    ),
    ParameterSpec(
        "reward.off_route_penalty", 10.0, "subtracted when the episode ends off the route", min=0.0, max=1e4
    ),
    ParameterSpec(
        "reward.max_lateral_offset",
        3.0,
        "distance from the route (m) that ends the episode (off_route, terminated)",
        min=0.1,
        max=100.0,
    ),
    ParameterSpec(
        "reward.stuck_speed",
        0.5,
        "forward speed (m/s) below which a step counts as stuck",
        min=0.0,
        max=100.0,
    ),
    ParameterSpec(
        "reward.stuck_steps", 100, "consecutive stuck steps that end the episode (truncated)", min=1
    ),
    ParameterSpec("reward.max_episode_steps", 1000, "step limit per episode (truncated)", min=1),
    ParameterSpec(
        "kinematics.search_ahead",
        30.0,
        "metres of route searched ahead of the car's current segment when re-anchoring it each step",
        min=1.0,
        max=1000.0,
    ),
    ParameterSpec(
        "kinematics.finish_distance",
        2.0,
        "metres before the route's end at which the route counts as finished (truncated)",
        min=0.0,
        max=100.0,
    ),
]
