"""ActionLimiter: a temporary |a| <= 0.6 clip that lifts itself once learning is healthy.

Why: the design's tanh actor locked at steer 0.994 / throttle 1.000 while its CNN features
exploded, and every episode crashed. The limit keeps the car drivable while the stabilizers take
hold; it lifts only when ALL of these hold:
  1. per-sample CNN feature L2 < 30 at every update over the last 5,000 environment steps learned
     from, and over at least 100 consecutive updates (the streak restarts at any update >= 30);
  2. the actor's raw (pre-limit) actions over the last 1,000 are unsaturated: share of action
     components with |a| > 0.99 * max_action below 5%, and the std of every action dimension
     above 0.05 (a locked actor has std ~0 in each dimension) - except a dimension held at the
     limit, as long as another one varies (below);
  3. the mean length of the last 10 episodes is above 100 steps.
Windows must be full before a criterion can hold. Then the limit rises linearly from 0.6 to
max_action over `lift_env_steps` (2,000) environment steps, and is gone at the end of that ramp;
once the ramp has begun it only goes on (lift_env_steps = 0: at once, the design's lift). Switched
off (enabled=False) it never limits anything: a final run must be able to run without it.

Why a ramp: the critic only ever saw actions inside the limit (the car executes clip(a, +-0.6)),
so right after an instant lift its Q over |a| in (0.6, 1] is extrapolation, and the actor follows
that extrapolation to the tanh's flat ends. In-process (docs/benchmarks.md 11h) the evaluation's
saturated share went from 0 % to 40-79 % within ~1k env steps of an instant lift, on 3 of 3
seeds. Raised by ~0.0002 per env step, each new edge is a small step from actions the critic has
data on. Measured there: the ramp makes that saturation smaller and shorter on all 3 seeds, but
does not prevent it, and it did not make learning faster.

Criterion 1 in environment steps: the design asked for healthy features over "5K steps" with one
update per environment step, so 5,000 steps and 5,000 updates were one span: 5,000 steps of
driving (~17 full 300-step episodes) through which every update kept the features healthy. Here
the learner is slower than the lock-step simulator: the demo makes ~0.06 updates per env step,
so 5,000 updates took ~80,000 env steps (~40 min), far beyond what the design meant and beyond
every demo budget. The span is therefore counted in env steps (`l2_env_steps`, the transitions
the trainer added to replay since the streak began), which is the design's 5K at any
update-to-data ratio; the updates inside the span must all be healthy, and there must be at least
`l2_updates` of them so the criterion is never vacuous (at a ratio of 1 the design's 5,000
updates follow from the 5,000 steps; at 0.06 they are ~300). l2_env_steps = 0 gives the
updates-only criterion (set l2_updates = 5000 for the literal design at any ratio).

Criterion 2's std, and a dimension held at the limit: while the limit is on, the actor loss pulls
raw outputs beyond it back to its edge (td3.py, LIMIT_PENALTY). A driver that wants more throttle
than 0.6 on a clear circuit therefore sits at ~0.6 with a std near 0, which is the limit holding
it, not a locked tanh - and only lifting the limit lets that dimension vary again, so counting it
as "locked" is a deadlock (the 2026-12-03/04 demos: the limit never lifted, throttle std 0.013 and
0.021, every other criterion held). A dimension whose std is below min_action_std and whose mean
|a| is within min_action_std of the limit (or beyond) is therefore reported as "held at the limit"
and does not fail the criterion - provided at least one other dimension varies: the design's locked
actor was still in every dimension (steer 0.994 / throttle 1.000), and seen through the limit it
would sit at its edge in every dimension, which still fails.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from av_td3_ros.config_schema import Settings, setting_from
from av_td3_ros.learning.config import TD3Config

log = logging.getLogger("av_td3_ros.learning.action_limiter")


@dataclass(frozen=True)
class ActionLimiterConfig(Settings):
    """The limiter's settings under its own names; each is TD3Config's (default, range, doc)."""

    enabled: bool = setting_from(TD3Config, "action_limiter")
    limit: float = setting_from(TD3Config, "action_limit")
    max_action: float = setting_from(TD3Config, "max_action")
    l2_max: float = setting_from(TD3Config, "limiter_l2_max")
    l2_env_steps: int = setting_from(TD3Config, "limiter_l2_env_steps")
    l2_updates: int = setting_from(TD3Config, "limiter_l2_updates")
    saturation: float = setting_from(TD3Config, "limiter_saturation")
    max_saturated_share: float = setting_from(TD3Config, "limiter_max_saturated_share")
    min_action_std: float = setting_from(TD3Config, "limiter_min_action_std")
    action_window: int = setting_from(TD3Config, "limiter_action_window")
    episode_window: int = setting_from(TD3Config, "limiter_episode_window")
    min_episode_length: float = setting_from(TD3Config, "limiter_min_episode_length")
    lift_env_steps: int = setting_from(TD3Config, "limiter_lift_env_steps")


class ActionLimiter:
    def __init__(self, config: ActionLimiterConfig | None = None, *, action_dim: int = 2, **overrides: Any):
        """`overrides` by ActionLimiterConfig's names (e.g. limit=0.5) change single settings."""
        if config is not None and not isinstance(config, ActionLimiterConfig):
            raise TypeError(f"ActionLimiter(config=...) takes an ActionLimiterConfig, got {config!r}")
        c = dataclasses.replace(config or ActionLimiterConfig(), **overrides)
        self.limit = c.limit
        self.enabled = c.enabled
        self.max_action = c.max_action
        self.l2_max = c.l2_max
        self.l2_updates = c.l2_updates
        self.l2_env_steps = c.l2_env_steps
        self.saturation = c.saturation
        self.max_saturated_share = c.max_saturated_share
        self.min_action_std = c.min_action_std
        self.min_episode_length = c.min_episode_length
        self.lift_env_steps = c.lift_env_steps
        self.lifted = False
        self.lift_progress: int | None = None  # env steps into the ramp; None = not begun
        self.l2_streak = 0  # consecutive updates with per-sample L2 below l2_max
        self.l2_streak_env_steps = 0  # env steps learned from since that streak began
        self._actions = np.zeros((c.action_window, action_dim), np.float32)  # ring buffer
        self._next = 0
        self._count = 0
        self.episode_lengths: deque[int] = deque(maxlen=c.episode_window)
        self._warned_this_episode = False

    @classmethod
    def from_config(cls, config: TD3Config) -> ActionLimiter:
        return cls(ActionLimiterConfig.of(config))

    # --- what the policy side uses ------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.enabled and not self.lifted

    @property
    def lifting(self) -> bool:
        """The criteria held and the limit is on its ramp to max_action."""
        return self.active and self.lift_progress is not None

    @property
    def current_limit(self) -> float:
        """The clip for PolicyWeights.action_limit: the limit while active (on the ramp: where the
        ramp is), 0 (= none) otherwise."""
        if not self.active:
            return 0.0
        if self.lift_progress is None:
            return self.limit
        share = min(1.0, self.lift_progress / max(1, self.lift_env_steps))
        return self.limit + (self.max_action - self.limit) * share

    def apply(self, actions: np.ndarray) -> np.ndarray:
        """Clip actions to +-limit while active (warns once per episode); identity otherwise."""
        if not self.active:
            return actions
        limit = self.current_limit
        if not self._warned_this_episode:
            self._warned_this_episode = True
            log.warning("Action limit active (%.0f%%)", 100.0 * limit / self.max_action)
        return np.clip(actions, -limit, limit)

    def follow(self, action_limit: float) -> None:
        """Policy-node side: adopt the trainer's decision from PolicyWeights.action_limit
        (0 = no limit). A limiter with enabled=False (deploy, or switched off) ignores it."""
        if action_limit > 0.0:  # on a ramp too: the trainer sends where the ramp is
            self.limit, self.lifted, self.lift_progress = float(action_limit), False, None
        else:
            self.lifted = True

    def start_episode(self) -> None:
        """A new episode: the next apply() logs the limit again."""
        self._warned_this_episode = False

    def record_episode(self, length: int) -> None:
        """An episode ended after `length` steps (criterion 3); also starts a new episode."""
        self.episode_lengths.append(int(length))
        self.start_episode()

    # --- what the learner feeds ---------------------------------------------------------------
    def observe_l2(self, cnn_l2: float) -> None:
        """One update's per-sample CNN L2 (the larger of actor and critic CNN)."""
        if cnn_l2 < self.l2_max:
            self.l2_streak += 1
        else:
            self.l2_streak = self.l2_streak_env_steps = 0

    def observe_env_steps(self, steps: int) -> None:
        """`steps` new environment steps (transitions added to replay). They count towards
        criterion 1 once a healthy streak has begun: the span starts at its first update. On the
        ramp they move the limit towards max_action."""
        if self.lifting:
            self.lift_progress += int(steps)
            if self.lift_progress >= self.lift_env_steps:
                self.lifted = True
                log.warning("Action limit lifted: the ramp to %g reached it after %d env steps",
                            self.max_action, self.lift_progress)
            return
        if self.active and self.l2_streak > 0:
            self.l2_streak_env_steps += int(steps)

    def _l2_streak_held(self) -> bool:
        return self.l2_streak >= self.l2_updates and self.l2_streak_env_steps >= self.l2_env_steps

    def observe_actions(self, raw_actions: np.ndarray) -> None:
        """The actor's raw (pre-limit, noise-free) outputs, shape (n, action_dim)."""
        a = np.asarray(raw_actions, np.float32).reshape(-1, self._actions.shape[1])
        window = self._actions.shape[0]
        if len(a) >= window:
            self._actions[:] = a[-window:]
            self._next, self._count = 0, window
            return
        end = self._next + len(a)
        if end <= window:
            self._actions[self._next:end] = a
        else:
            split = window - self._next
            self._actions[self._next:] = a[:split]
            self._actions[: end - window] = a[split:]
        self._next = end % window
        self._count = min(self._count + len(a), window)

    def recent_actions(self) -> np.ndarray:
        """The action window, oldest first."""
        if self._count < self._actions.shape[0]:
            return self._actions[: self._count].copy()
        return np.roll(self._actions, -self._next, axis=0)

    def saturated_share(self) -> float:
        a = self.recent_actions()
        return float(np.mean(np.abs(a) > self.saturation * self.max_action)) if len(a) else 0.0

    def criteria(self) -> dict[str, dict[str, Any]]:
        """Each lifting criterion: whether it holds, its value and its threshold."""
        a = self.recent_actions()
        window_full = self._count == self._actions.shape[0]
        share = self.saturated_share()
        std, held_at_limit = self._action_spread(a)
        episodes_full = len(self.episode_lengths) == self.episode_lengths.maxlen
        mean_len = float(np.mean(self.episode_lengths)) if self.episode_lengths else 0.0
        window, episodes = self._actions.shape[0], self.episode_lengths.maxlen

        def criterion(held: bool, value: float, threshold: str) -> dict[str, Any]:
            return {"held": bool(held), "value": value, "threshold": threshold}

        return {
            "cnn_l2": criterion(self.l2_streak >= self.l2_updates, self.l2_streak,
                                f"L2 < {self.l2_max:g} for {self.l2_updates} consecutive updates"),
            "cnn_l2_env_steps": criterion(self.l2_streak_env_steps >= self.l2_env_steps,
                                          self.l2_streak_env_steps,
                                          f"that streak spans {self.l2_env_steps} env steps"),
            "saturated_share": criterion(window_full and share < self.max_saturated_share, share,
                                         f"< {self.max_saturated_share:g} over {window} actions"),
            "action_std": criterion(window_full and std > self.min_action_std, std,
                                    f"> {self.min_action_std:g} in every dimension not held at the limit"
                                    + (f"; held at the limit: dimension {held_at_limit}" if held_at_limit
                                       else "")),
            "episode_length": criterion(episodes_full and mean_len > self.min_episode_length, mean_len,
                                        f"mean of last {episodes} > {self.min_episode_length:g}"),
        }

    def _action_spread(self, a: np.ndarray) -> tuple[float, list[int]]:
        """(the smallest std over the dimensions not held at the limit, those held at it).
        0.0 when fewer than 2 actions, or when every dimension would be held (nothing varies)."""
        if len(a) < 2:
            return 0.0, []
        stds, means = a.std(axis=0), np.abs(a.mean(axis=0))
        held = []
        if self.active and self.limit < self.max_action:  # a limit at max_action holds nothing
            held = np.flatnonzero((stds <= self.min_action_std)
                                  & (means >= self.limit - self.min_action_std)).tolist()
        free = np.delete(stds, held)
        return (float(free.min()) if len(free) else 0.0), held

    def describe(self, criteria: dict[str, dict[str, Any]] | None = None) -> str:
        """One line: each criterion, its value, its threshold and whether it holds."""
        crit = self.criteria() if criteria is None else criteria
        line = "; ".join(
            f"{name} = {c['value']:.4g} ({c['threshold']}): {'held' if c['held'] else 'not yet'}"
            for name, c in crit.items()
        )
        a = self.recent_actions()
        if len(a) > 1:  # what criterion 2 saw, so a log shows whether a dimension sat at the limit
            line += "; raw actions mean/std per dimension: " + ", ".join(
                f"{m:+.3f}/{sd:.3f}" for m, sd in zip(a.mean(axis=0), a.std(axis=0), strict=True))
        return line

    def maybe_lift(self) -> bool:
        """Begin the lift (the ramp, or at once if lift_env_steps is 0) if every criterion holds;
        returns True when it began now."""
        if not self.active or self.lifting or not self._l2_streak_held():  # cheap tests first
            return False
        crit = self.criteria()
        if not all(c["held"] for c in crit.values()):
            return False
        if self.lift_env_steps == 0:
            self.lifted = True
            log.warning("Action limit lifted, all criteria held: %s", self.describe(crit))
        else:
            self.lift_progress = 0
            log.warning("Action limit lifting: all criteria held, the limit rises to %g over %d env "
                        "steps: %s", self.max_action, self.lift_env_steps, self.describe(crit))
        return True

    def observe_update(self, cnn_l2: float, raw_actions: np.ndarray | None = None) -> bool:
        """Feed one update (L2, and the raw actions if the actor ran); returns True if the lift
        began now."""
        if not self.active or self.lifting:
            return False
        self.observe_l2(cnn_l2)
        if raw_actions is not None:
            self.observe_actions(raw_actions)
        return self.maybe_lift()

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "enabled": self.enabled,
            "lifted": self.lifted,
            "lift_progress": self.lift_progress,
            "l2_streak": self.l2_streak,
            "l2_streak_env_steps": self.l2_streak_env_steps,
            "actions": self.recent_actions(),
            "episode_lengths": list(self.episode_lengths),
            "warned_this_episode": self._warned_this_episode,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.limit = float(state["limit"])
        self.enabled = bool(state["enabled"])
        self.lifted = bool(state["lifted"])
        progress = state.get("lift_progress")  # absent in checkpoints from before the ramp
        self.lift_progress = None if progress is None else int(progress)
        self.l2_streak = int(state["l2_streak"])
        # Checkpoints from before the env-step criterion: their streak starts its span afresh.
        self.l2_streak_env_steps = int(state.get("l2_streak_env_steps", 0))
        self._actions[:] = 0.0
        self._next = self._count = 0
        actions = np.asarray(state["actions"], np.float32)
        if len(actions):
            self.observe_actions(actions)
        self.episode_lengths.clear()
        self.episode_lengths.extend(int(x) for x in state["episode_lengths"])
        self._warned_this_episode = bool(state["warned_this_episode"])
