"""Per-step reward and episode ends for route following, from plain numbers.

Pure Python. Inputs per step: forward speed (m/s), the car's lateral offset and heading error to
the route (from `KinematicsEncoder.position` or `locate_on_route`, kinematics.py), the collision
and lane-invasion events since the previous step, and whether the route is finished.

Reward (per step):
    drive = speed_weight * speed_score * lane_factor * heading_factor
    reward = drive - collision_penalty [collision] - lane_invasion_penalty * invasions
                   - off_route_penalty [episode ends off the route]
    speed_score    = max(0, 1 - |speed - target_speed| / target_speed)   (0 when stopped or reversing)
    lane_factor    = 1 - lane_centering_weight * min(1, |lateral_offset| / max_lateral_offset)
    heading_factor = 1 - heading_weight * min(1, |heading_error| / (pi / 2))
The product is the point: centring and alignment only SCALE the speed term, so a stopped car
earns 0 however well it is centred, and standing still can never score like driving (FACTS.md:
highway-env's additive racetrack reward let a stopped, centred car score like a driving one).
All terms are in [0, speed_weight] except the penalties.

Episode ends (first match wins, checked in this order):
    collision       terminated  a crash is an absorbing failure: no value after it.
    off_route       terminated  |lateral_offset| > max_lateral_offset: the car left its lane/road.
    route_finished  truncated   the goal is not absorbing (driving would go on with a longer
                                route); terminating would zero the future reward of a car that
                                keeps earning, so finishing would look like a loss and the agent
                                would learn to dawdle before the goal.
    stuck           truncated   forward speed < stuck_speed for stuck_steps consecutive steps: a
                                practical cut of a non-absorbing state. It needs no penalty to be
                                bad: standing still already earns 0 per step.
    step_limit      truncated   max_episode_steps reached: the classic time limit.
Truncated steps bootstrap from the next state's value (ReplayBatch.terminated is 0 for them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from av_td3_ros.config_schema import Settings, setting
from av_td3_ros.perception.kinematics import InvalidInput, finite_number

__all__ = [
    "TERMINATING_REASONS",
    "EndReason",
    "EpisodeTracker",
    "RewardConfig",
    "RewardFunction",
    "RewardTerms",
    "StepResult",
]


class EndReason(str, Enum):
    COLLISION = "collision"
    OFF_ROUTE = "off_route"
    ROUTE_FINISHED = "route_finished"
    STUCK = "stuck"
    STEP_LIMIT = "step_limit"


TERMINATING_REASONS = frozenset({EndReason.COLLISION, EndReason.OFF_ROUTE})


@dataclass(frozen=True)
class RewardConfig(Settings):
    """The policy node's `reward.*` parameters derive from these settings."""

    target_speed: float = setting(8.33, "speed the car should hold (m/s); 8.33 = 30 km/h", min=0.1, max=100.0)
    # Scale of the driving reward.
    speed_weight: float = setting(
        1.0, "driving reward of a step at target speed, centred and aligned", min=0.0, max=1000.0
    )
    # Linear in |lateral_offset| up to max_lateral_offset.
    lane_centering_weight: float = setting(
        0.5, "share of the driving reward lost at |lateral offset| = max_lateral_offset", min=0.0, max=1.0
    )
    # Linear in |heading error|, capped at 90 degrees.
    heading_weight: float = setting(
        0.5, "share of the driving reward lost at a 90 degree heading error", min=0.0, max=1.0
    )
    collision_penalty: float = setting(
        10.0, "subtracted on a collision (the episode terminates)", min=0.0, max=1e4
    )
    lane_invasion_penalty: float = setting(
        0.5, "subtracted per lane invasion event (the episode goes on)", min=0.0, max=1e4
    )
    # As bad as a crash, so the agent never learns to leave the road to avoid one.
    off_route_penalty: float = setting(
        10.0, "subtracted when the episode ends off the route", min=0.0, max=1e4
    )
    # Also the offset at which lane centering has cost its full weight. A lane is ~3.5 m wide.
    max_lateral_offset: float = setting(
        3.0, "distance from the route (m) that ends the episode (off_route, terminated)", min=0.1, max=100.0
    )
    # Stuck: forward speed below stuck_speed for stuck_steps consecutive steps (100 steps = 5 s at
    # 20 Hz; also the time a car starting at rest has to get going).
    stuck_speed: float = setting(
        0.5, "forward speed (m/s) below which a step counts as stuck", min=0.0, max=100.0
    )
    stuck_steps: int = setting(100, "consecutive stuck steps that end the episode (truncated)", min=1)
    # 1000 steps = 50 s at 20 Hz.
    max_episode_steps: int = setting(1000, "step limit per episode (truncated)", min=1)


@dataclass(frozen=True)
class RewardTerms:
    """One step's reward and its parts (for logging)."""

    total: float
    drive: float
    speed_score: float
    lane_factor: float
    heading_factor: float
    collision: float  # <= 0
    lane_invasion: float  # <= 0
    off_route: float  # <= 0


def _count(name: str, value: int) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a count >= 0, got {value!r}") from None
    if count != value or count < 0:
        raise InvalidInput(f"{name} must be a count >= 0, got {value!r}")
    return count


class RewardFunction:
    """The stateless per-step reward (see the module docstring for the formula)."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()

    def __call__(self, *, speed: float, lateral_offset: float, heading_error: float,
                 collision: bool = False, lane_invasions: int = 0,
                 off_route: bool | None = None) -> RewardTerms:
        """`speed` is the FORWARD speed (m/s, negative when reversing). `off_route` defaults to
        |lateral_offset| > max_lateral_offset."""
        c = self.config
        speed = finite_number("speed", speed)
        lateral_offset = finite_number("lateral_offset", lateral_offset)
        heading_error = finite_number("heading_error", heading_error)
        lane_invasions = _count("lane_invasions", lane_invasions)
        if off_route is None:
            off_route = abs(lateral_offset) > c.max_lateral_offset
        speed_score = max(0.0, 1.0 - abs(speed - c.target_speed) / c.target_speed)
        lane_factor = 1.0 - c.lane_centering_weight * min(1.0, abs(lateral_offset) / c.max_lateral_offset)
        heading_factor = 1.0 - c.heading_weight * min(1.0, abs(heading_error) / (math.pi / 2))
        drive = c.speed_weight * speed_score * lane_factor * heading_factor
        collision_term = -c.collision_penalty if collision else 0.0
        invasion_term = -c.lane_invasion_penalty * lane_invasions
        off_route_term = -c.off_route_penalty if off_route else 0.0
        return RewardTerms(
            total=drive + collision_term + invasion_term + off_route_term,
            drive=drive, speed_score=speed_score, lane_factor=lane_factor, heading_factor=heading_factor,
            collision=collision_term, lane_invasion=invasion_term, off_route=off_route_term,
        )


@dataclass(frozen=True)
class StepResult:
    reward: float
    terms: RewardTerms
    terminated: bool
    truncated: bool
    reason: EndReason | None  # why the episode ended on this step, None while it goes on
    steps: int  # steps of this episode so far, this one included
    episode_return: float  # sum of rewards of this episode so far, this one included

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class EpisodeTracker:
    """Per-episode state: step count, stuck counter, return; decides the end of the episode.

    `reset()` at each episode start, then `step(...)` once per control step. After an ending
    step, `step()` raises RuntimeError until `reset()`.
    """

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        self.reward_function = RewardFunction(self.config)
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.slow_steps = 0  # consecutive steps below stuck_speed
        self.episode_return = 0.0
        self.reason: EndReason | None = None
        self._last: dict | None = None  # the last step's inputs and result, for amend()

    @property
    def ended(self) -> bool:
        return self.reason is not None

    def step(self, *, speed: float, lateral_offset: float, heading_error: float, collision: bool = False,
             lane_invasions: int = 0, route_finished: bool = False) -> StepResult:
        if self.reason is not None:
            raise RuntimeError(f"episode already ended ({self.reason.value}): call reset() first")
        c = self.config
        off_route = abs(finite_number("lateral_offset", lateral_offset)) > c.max_lateral_offset
        terms = self.reward_function(speed=speed, lateral_offset=lateral_offset, heading_error=heading_error,
                                     collision=bool(collision), lane_invasions=lane_invasions,
                                     off_route=off_route)
        # Only mutate once every input has been validated above.
        self.steps += 1
        self.slow_steps = self.slow_steps + 1 if float(speed) < c.stuck_speed else 0
        self.episode_return += terms.total
        if collision:
            reason = EndReason.COLLISION
        elif off_route:
            reason = EndReason.OFF_ROUTE
        elif route_finished:
            reason = EndReason.ROUTE_FINISHED
        elif self.slow_steps >= c.stuck_steps:
            reason = EndReason.STUCK
        elif self.steps >= c.max_episode_steps:
            reason = EndReason.STEP_LIMIT
        else:
            reason = None
        self.reason = reason
        self._last = dict(speed=speed, lateral_offset=lateral_offset, heading_error=heading_error,
                          collision=bool(collision), lane_invasions=lane_invasions, off_route=off_route,
                          reward=terms.total)
        return self._result(terms, reason)

    def amend(self, *, collision: bool = False, lane_invasions: int = 0) -> StepResult | None:
        """Add events that belong to the LAST step but arrived after it was judged (the real
        bridge publishes a tick's collision after its camera frame). Returns the revised result,
        or None when nothing changes. A collision ends the episode there (collision wins over
        every other reason, as in step())."""
        last = self._last
        if last is None or not (collision or lane_invasions):
            return None
        last["collision"] = last["collision"] or bool(collision)
        last["lane_invasions"] = last["lane_invasions"] + _count("lane_invasions", lane_invasions)
        terms = self.reward_function(**{k: last[k] for k in ("speed", "lateral_offset", "heading_error",
                                                              "collision", "lane_invasions", "off_route")})
        self.episode_return += terms.total - last["reward"]
        last["reward"] = terms.total
        if last["collision"]:
            self.reason = EndReason.COLLISION
        return self._result(terms, self.reason)

    def _result(self, terms: RewardTerms, reason: EndReason | None) -> StepResult:
        terminated = reason in TERMINATING_REASONS
        return StepResult(
            reward=terms.total, terms=terms, terminated=terminated,
            truncated=reason is not None and not terminated, reason=reason,
            steps=self.steps, episode_return=self.episode_return,
        )
