"""The command one car receives: CARLA's pedal-like control, as plain values (no ROS).

The policy's action is (steer, throttle_brake) in [-1, 1]^2; CARLA takes steer in [-1, 1]
(> 0 turns RIGHT), throttle and brake in [0, 1]. Every output adapter (carla, ackermann,
autoware) starts from this command; only the carla one sends it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BRAKE", "ControlCommand", "action_to_control", "clamp_control"]


@dataclass(frozen=True)
class ControlCommand:
    """steer in [-1, 1] (CARLA: > 0 turns right), throttle and brake in [0, 1]. Build with
    `clamp_control` / `action_to_control`, which guarantee the ranges."""

    steer: float
    throttle: float
    brake: float


BRAKE = ControlCommand(steer=0.0, throttle=0.0, brake=1.0)


def _clip(value: float, low: float, high: float) -> float:
    return min(max(float(value), low), high)


def clamp_control(steer: float, throttle: float, brake: float) -> ControlCommand:
    """Clamp every field to its range; any non-finite or non-numeric input gives a full brake."""
    try:
        values = (float(steer), float(throttle), float(brake))
    except (TypeError, ValueError):
        return BRAKE
    if not all(math.isfinite(v) for v in values):
        return BRAKE
    return ControlCommand(_clip(values[0], -1.0, 1.0), _clip(values[1], 0.0, 1.0), _clip(values[2], 0.0, 1.0))


def action_to_control(action) -> ControlCommand:
    """(steer, throttle_brake) -> steer, throttle = max(a1, 0), brake = max(-a1, 0), clamped."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (2,):
        return BRAKE
    return clamp_control(a[0], max(a[1], 0.0), max(-a[1], 0.0))
