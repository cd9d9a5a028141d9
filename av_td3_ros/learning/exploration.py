"""Exploration: the action a training car executes, given what the deterministic actor says.

The one implementation for the trainer (TD3Learner.act) and the policy node:
    no policy yet (None), or a non-finite output -> uniform random in [-max_action, max_action]
    otherwise                                    -> actor output + N(0, (std(step) * max_action)^2)
    then clip to [-max_action, max_action], then the ActionLimiter's clip while it is active.
Never explore from NaN: a broken actor output is replaced, not perturbed.

std(step) follows a NoiseSchedule over env steps: constant (TD3's 0.1), or DrQ-v2's linear decay
from a start to a final std, reached after `decay_steps` steps and held from then on.
Pure numpy: no torch, no rclpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from av_td3_ros.learning.config import EXPLORATION_SCHEDULES

if TYPE_CHECKING:
    from av_td3_ros.learning.action_limiter import ActionLimiter
    from av_td3_ros.learning.config import TD3Config

__all__ = ["Exploration", "NoiseSchedule"]

ACTION_DIM = 2


@dataclass(frozen=True)
class NoiseSchedule:
    """Exploration noise std (in units of max_action) as a function of env steps.

    kind "constant": `start` at every step. kind "linear" (DrQ-v2's linear(start, final, steps)):
    from `start` at step 0 to `final` at step `decay_steps`, `final` after that.
    """

    kind: str = "constant"
    start: float = 0.1
    final: float = 0.1
    decay_steps: int = 1

    def __post_init__(self) -> None:
        if self.kind not in EXPLORATION_SCHEDULES:
            raise ValueError(f"NoiseSchedule.kind = {self.kind!r}: allowed one of {EXPLORATION_SCHEDULES}")
        for name in ("start", "final"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"NoiseSchedule.{name} = {value!r}: allowed a finite std >= 0")
        if not (isinstance(self.decay_steps, int) and self.decay_steps >= 1):
            raise ValueError(f"NoiseSchedule.decay_steps = {self.decay_steps!r}: allowed integer >= 1")

    @classmethod
    def constant(cls, std: float) -> NoiseSchedule:
        return cls("constant", std, std)

    @classmethod
    def linear(cls, start: float, final: float, decay_steps: int) -> NoiseSchedule:
        return cls("linear", start, final, decay_steps)

    @classmethod
    def from_config(cls, config: TD3Config) -> NoiseSchedule:
        """TD3Config.exploration_schedule / exploration_noise / _final / exploration_decay_steps."""
        return cls(config.exploration_schedule, config.exploration_noise, config.exploration_noise_final,
                   config.exploration_decay_steps)

    def std(self, step: int) -> float:
        if self.kind == "constant":
            return self.start
        mix = min(max(step / self.decay_steps, 0.0), 1.0)
        return (1.0 - mix) * self.start + mix * self.final


class Exploration:
    """Turns the deterministic actor's output into the executed (explored, limited) action.

    rng: the numpy Generator every random draw comes from (a caller that checkpoints it gets
    bit-identical exploration back). limiter: the ActionLimiter whose clip is applied last, or
    None (no limit). Not thread-safe (the rng is shared state).
    """

    def __init__(
        self,
        schedule: NoiseSchedule | None = None,
        *,
        rng: np.random.Generator,
        limiter: ActionLimiter | None = None,
        max_action: float = 1.0,
        action_dim: int = ACTION_DIM,
    ):
        if not (math.isfinite(max_action) and max_action > 0.0):
            raise ValueError(f"max_action must be a finite number > 0, got {max_action!r}")
        self.schedule = schedule if schedule is not None else NoiseSchedule()
        self.rng = rng
        self.limiter = limiter
        self.max_action = float(max_action)
        self.action_dim = int(action_dim)

    @classmethod
    def from_config(
        cls, config: TD3Config, *, rng: np.random.Generator, limiter: ActionLimiter | None = None
    ) -> Exploration:
        return cls(NoiseSchedule.from_config(config), rng=rng, limiter=limiter, max_action=config.max_action)

    def std(self, step: int) -> float:
        """The noise std at env step `step`, in action units (schedule std * max_action)."""
        return self.schedule.std(step) * self.max_action

    def action(self, policy_action: np.ndarray | None, step: int) -> np.ndarray:
        """The action to execute at env step `step` (float32, same shape as policy_action).

        policy_action: the deterministic actor's output, (action_dim,) or a batch
        (B, action_dim); None while there is no policy (-> one uniform random action).
        A row with a NaN/inf is replaced by a uniform random action (no noise added to it).
        """
        m = self.max_action
        if policy_action is None:
            action = self.rng.uniform(-m, m, size=self.action_dim)
        else:
            action = np.array(policy_action, dtype=np.float64)  # a copy: the caller's array stays
            if action.ndim not in (1, 2) or action.shape[-1] != self.action_dim:
                raise ValueError(f"policy_action must be ({self.action_dim},) or (B, {self.action_dim}), "
                                 f"got shape {action.shape}")
            rows = action.reshape(-1, self.action_dim)  # a view: writes go into `action`
            finite = np.isfinite(rows).all(axis=1)
            if not finite.all():
                rows[~finite] = self.rng.uniform(-m, m, size=(int((~finite).sum()), self.action_dim))
            std = self.std(step)
            if std > 0.0 and finite.any():
                rows[finite] += self.rng.normal(0.0, std, size=(int(finite.sum()), self.action_dim))
        action = np.clip(action, -m, m)
        if self.limiter is not None:
            action = self.limiter.apply(action)
        return np.asarray(action, dtype=np.float32)
