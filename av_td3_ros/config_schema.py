"""Settings: each knob of a core dataclass written once, with its default, allowed values and
description, on the dataclass it belongs to. No ROS here.

    @dataclass(frozen=True)
    class RewardConfig(Settings):
        target_speed: float = setting(8.33, "speed the car should hold (m/s)", min=0.1, max=100.0)
        stuck_steps: int = setting(100, "consecutive stuck steps that end the episode", min=1)
        mode: str = setting("separate", "how the CNNs learn", choices=("separate", "critic_only"))

`Settings.__post_init__` checks every setting field (type from the default, range or choices) and
raises `SettingError` naming the field and what is allowed; a subclass adds its cross-field checks
by overriding `validate()` (calling super first). The ROS layer derives the node parameters (their
descriptors, ranges, validation, the YAML check) from the same metadata
(`av_td3_ros.ros.parameters.parameters_from`), and `RewardConfig.from_namespace(values)` builds the
config back from the parameter values.

Bounds: `min`/`max` are inclusive, `gt`/`lt` exclusive. `none=v` lets a field also be None, written
`v` in a parameter file (grad_clip: 0 = no clipping); the value `v` itself then means None.
A component that uses some of another config's settings under its own names declares them with
`setting_from(TD3Config, "l2_healthy")` and is built from that config with `Part.of(config)`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Setting",
    "SettingError",
    "Settings",
    "parameter_values",
    "setting",
    "setting_from",
    "settings_of",
]

_SETTING = "av_td3_ros.setting"  # field metadata key: the field's Setting
_SOURCE = "av_td3_ros.setting_source"  # field metadata key: (owner class, field name) it was taken from
_SCALAR_TYPES = (bool, int, float, str)
_KIND = {bool: "a bool", int: "an integer", float: "a finite number", str: "a string"}


class SettingError(ValueError):
    """A value outside its setting. The message names the setting, the value and what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"{name} = {value!r}: {allowed}")
        self.name = name
        self.value = value
        self.allowed = allowed


def _number(x: float | int) -> str:
    """repr, with _ between thousands from 100_000 up (10_000_000 and 10_000_000.0)."""
    if abs(x) >= 100_000 and float(x).is_integer():
        return f"{int(x):_}" + ("" if isinstance(x, int) else ".0")
    return repr(x)


@dataclass(frozen=True)
class Setting:
    """One setting: its default (which fixes its type: bool, int, float, str, or a list/tuple of
    one of them), a description, and the allowed values: bounds for numbers or `choices`."""

    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    gt: float | int | None = None
    lt: float | int | None = None
    choices: tuple[Any, ...] | None = None
    none: Any = None
    item_type: type | None = None

    def __post_init__(self) -> None:
        if not self.description:
            raise ValueError("a setting needs a description")
        if self.min is not None and self.gt is not None or self.max is not None and self.lt is not None:
            raise ValueError("a bound is either inclusive (min/max) or exclusive (gt/lt), not both")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        sample = self.none if self.default is None else self.default
        if isinstance(sample, (list, tuple)):
            if self.item_type is None:
                if not sample:
                    raise ValueError("an empty list default needs item_type")
                object.__setattr__(self, "item_type", type(sample[0]))
            if self.item_type not in _SCALAR_TYPES:
                raise ValueError(f"unsupported list item type {self.item_type}")
        elif not isinstance(sample, _SCALAR_TYPES):
            raise ValueError(f"unsupported default {self.default!r} (None needs none=)")
        self.check(self.default, "default")  # the default must satisfy its own setting

    @property
    def value_type(self) -> type:
        """bool, int, float, str, list or tuple: the type of the default (or of `none`)."""
        return type(self.none if self.default is None else self.default)

    def range_text(self) -> str | None:
        """The allowed values as the YAML comments write them: "[0.1, 100.0]", "(0, 1]", ">= 1",
        "train | deploy"; None when any value of the type is allowed."""
        if self.choices is not None:
            return " | ".join(str(c) for c in self.choices)
        low = self.min if self.min is not None else self.gt
        high = self.max if self.max is not None else self.lt
        if low is not None and high is not None:
            opening, closing = "[" if self.min is not None else "(", "]" if self.max is not None else ")"
            return f"{opening}{_number(low)}, {_number(high)}{closing}"
        if low is not None:
            return f"{'>=' if self.min is not None else '>'} {_number(low)}"
        if high is not None:
            return f"{'<=' if self.max is not None else '<'} {_number(high)}"
        return None

    def allowed(self) -> str:
        """What is allowed, as a sentence ("must be an integer in [1, 8]")."""
        if self.choices is not None:
            text = f"must be one of {list(self.choices)}"
        else:
            if self.value_type in (list, tuple):
                text, each = f"must be a list of {_KIND[self.item_type]}", " each"
            else:
                text, each = f"must be {_KIND[self.value_type]}", ""
            bounds = self.range_text()
            if bounds is not None:
                text += f"{each} {'in ' if bounds[0] in '[(' else ''}{bounds}"
        if self.none is not None:
            text += f", or None (written {self.none!r})"
        return text

    def check(self, value: Any, name: str) -> Any:
        """Return `value` normalized (an int given for a float becomes a float, the `none` value
        None) or raise SettingError naming `name`."""
        if self.none is not None and (value is None or (type(value) is not bool and value == self.none)):
            return None
        if self.value_type in (list, tuple):
            if not isinstance(value, (list, tuple)):
                raise SettingError(name, value, self.allowed())
            return self.value_type(self._check_one(self.item_type, item, name, value) for item in value)
        return self._check_one(self.value_type, value, name, value)

    def _check_one(self, kind: type, value: Any, name: str, given: Any) -> Any:
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:  # numbers.Integral: numpy integers too, but never a bool
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, str)
        if ok and kind in (int, float):
            value = kind(value)
            ok = ((self.min is None or value >= self.min) and (self.max is None or value <= self.max)
                  and (self.gt is None or value > self.gt) and (self.lt is None or value < self.lt))
        if ok and self.choices is not None:
            ok = value in self.choices
        if not ok:
            raise SettingError(name, given, self.allowed())
        return value


def setting(
    default: Any,
    description: str,
    *,
    min: float | int | None = None,  # noqa: A002 - the natural names for bounds
    max: float | int | None = None,  # noqa: A002
    gt: float | int | None = None,
    lt: float | int | None = None,
    choices: tuple[Any, ...] | None = None,
    none: Any = None,
    item_type: type | None = None,
) -> Any:
    """A dataclass field that is a setting (see the module docstring)."""
    spec = Setting(default, description, min=min, max=max, gt=gt, lt=lt, choices=choices, none=none,
                   item_type=item_type)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={_SETTING: spec})
    return dataclasses.field(default=default, metadata={_SETTING: spec})


def setting_from(owner: type, name: str) -> Any:
    """A field with the same setting (default, range, description) as `owner.name`, for a
    component that takes it under its own name; `Part.of(config)` copies the values over."""
    spec = settings_of(owner).get(name)
    if spec is None:
        raise TypeError(f"{owner.__name__}.{name} is not a setting")
    metadata = {_SETTING: spec, _SOURCE: (owner, name)}
    if isinstance(spec.default, list):
        return dataclasses.field(default_factory=lambda: list(spec.default), metadata=metadata)
    return dataclasses.field(default=spec.default, metadata=metadata)


def settings_of(config: Any) -> dict[str, Setting]:
    """{field name: Setting} of a settings dataclass (or instance), in field order."""
    return {f.name: f.metadata[_SETTING] for f in dataclasses.fields(config) if _SETTING in f.metadata}


def parameter_values(config: Any, prefix: str = "", *, changed_from: Any = None) -> dict[str, Any]:
    """The settings of `config` as a parameter file writes them ({prefix + name: value}, None as
    its `none` value); with `changed_from`, only those that differ from it."""
    out = {}
    for name, spec in settings_of(config).items():
        value = getattr(config, name)
        if changed_from is not None and value == getattr(changed_from, name):
            continue
        out[prefix + name] = spec.none if value is None else value
    return out


class Settings:
    """Base of a dataclass whose fields are `setting()`s: validated after __init__, and built
    from parameter values with `from_namespace`. Plain fields (no setting) are left alone."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every setting field (normalizing it); raise SettingError naming the first bad one.
        Subclasses add their cross-field checks after calling this."""
        owner = type(self).__name__
        for name, spec in settings_of(self).items():
            # object.__setattr__: the normalized value also on frozen dataclasses
            object.__setattr__(self, name, spec.check(getattr(self, name), f"{owner}.{name}"))

    def require(self, name: str, ok: bool, allowed: str) -> None:
        """A cross-field check: raise SettingError for field `name` unless `ok`."""
        if not ok:
            raise SettingError(f"{type(self).__name__}.{name}", getattr(self, name), allowed)

    def require_at_most(self, name: str, other: str) -> None:
        """A cross-field check: field `name` <= field `other`."""
        limit = getattr(self, other)
        self.require(name, getattr(self, name) <= limit, f"must be <= {other} = {limit!r}")

    @classmethod
    def from_namespace(cls, values: Any, **fixed: Any):
        """Build from parameter values: a namespace (as `declare_parameters` returns; dotted names
        nest) or a mapping. Every setting found there is taken; the others keep their defaults;
        `fixed` sets fields directly (plain fields, nested configs)."""
        if not isinstance(values, Mapping):
            values = vars(values)
        taken = {name: values[name] for name in settings_of(cls) if name in values}
        return cls(**{**taken, **fixed})

    @classmethod
    def of(cls, config: Any, **overrides: Any):
        """This component's settings from `config`, whose fields they were declared from with
        `setting_from` (e.g. FeatureNormConfig.of(td3_config)); `overrides` by this class's names."""
        values = {}
        for f in dataclasses.fields(cls):
            source = f.metadata.get(_SOURCE)
            if source is None:
                continue
            owner, name = source
            if not isinstance(config, owner):
                raise TypeError(f"{cls.__name__}.of needs a {owner.__name__}, got {type(config).__name__}")
            values[f.name] = getattr(config, name)
        return cls(**{**values, **overrides})
