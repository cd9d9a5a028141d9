"""Evaluate a driver in the embedded simulator through the policy node's own per-frame object.

Each frame goes through `DrivingCore` in `evaluate` mode: the same 84x84 gray 4-stack, the same
23 kinematics, reward and episode ends (collision, off route, stuck, route finished, step limit)
and the same action -> command as a policy node, with the deterministic driver instead of the
exploring one. Only the transport is missing, which is why a learned policy and a random one
are measured identically, and why the evaluation cannot drift from what the node does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from av_td3_ros.driving.core import DrivingCore
from av_td3_ros.driving.state import VehicleState
from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.sim.simulator import EmbeddedSimulator, SimConfig, SimState

__all__ = ["Driver", "EpisodeStats", "Evaluation", "evaluate", "random_driver", "vehicle_state"]

# (frames (4, 84, 84) uint8, kinematics (23,) float32) -> action (2,) in [-1, 1]
Driver = Callable[[np.ndarray, np.ndarray], np.ndarray]
SATURATED = 0.99  # |a| above this counts as a saturated tanh output (the design's failure: 0.994)


def vehicle_state(state: SimState) -> VehicleState:
    """What odometry_to_state makes of the sim node's Odometry for this state."""
    return VehicleState(state.x, state.y, state.yaw, math.hypot(state.vx, state.vy), state.vx, "map")


def random_driver(seed: int) -> Driver:
    rng = np.random.default_rng(seed)
    return lambda frames, kinematics: rng.uniform(-1.0, 1.0, size=2).astype(np.float32)


@dataclass
class EpisodeStats:
    length: int
    ret: float
    collisions: int
    lane_invasions: int
    mean_speed: float
    end: str  # the EpisodeTracker's reason ("collision", "off_route", "max_steps", ...)


@dataclass
class Evaluation:
    name: str
    episodes: list[EpisodeStats] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)

    def _mean(self, attr: str) -> float:
        return float(np.mean([getattr(e, attr) for e in self.episodes])) if self.episodes else 0.0

    @property
    def mean_length(self) -> float:
        return self._mean("length")

    @property
    def mean_return(self) -> float:
        return self._mean("ret")

    @property
    def mean_speed(self) -> float:
        return self._mean("mean_speed")

    @property
    def collisions(self) -> int:
        return int(sum(e.collisions for e in self.episodes))

    @property
    def saturated_share(self) -> float:
        """Share of action components with |a| > 0.99."""
        if not self.actions:
            return 0.0
        return float((np.abs(np.stack(self.actions)) > SATURATED).mean())

    @property
    def action_std(self) -> float:
        return float(np.stack(self.actions).std(axis=0).min()) if len(self.actions) > 1 else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "episodes": len(self.episodes),
            "mean_length": self.mean_length,
            "mean_return": self.mean_return,
            "mean_speed": self.mean_speed,
            "collisions": self.collisions,
            "saturated_share": self.saturated_share,
        }


class DriverPolicy:
    """A Driver as the DrivingCore's policy (what PolicyRuntime is to the node)."""

    version = 0

    def __init__(self, driver: Driver):
        self.driver = driver
        self.policy = self  # always "loaded"
        self.action_limit = 0.0

    def act(self, frames: np.ndarray, kinematics: np.ndarray, policy=None) -> tuple[np.ndarray, int]:
        return np.asarray(self.driver(frames, kinematics), np.float32), 0


def stamp_ns(state: SimState) -> int:
    """The stamp sim_node gives this state's frame (its simulation time)."""
    return int(round(state.sim_time * 1e9))


def evaluate(
    driver: Driver,
    name: str,
    *,
    episodes: int,
    seed: int,
    reward: RewardConfig,
    sim_config: SimConfig | None = None,
    route_length_m: float = 1500.0,
    route_spacing_m: float = 2.0,
    on_frame: Callable[[SimState], None] | None = None,
    on_decision: Callable[[SimState, object], None] | None = None,
) -> Evaluation:
    """Run `episodes` episodes; episode i starts from `sim.reset(seed + i)`, so two drivers
    evaluated with one seed face the same starts. `on_decision(state, FrameDecision)` sees every
    decision the core makes (commands, ends), e.g. to compare it with a policy node's."""
    result = Evaluation(name)
    core = DrivingCore(mode="evaluate", policy=DriverPolicy(driver), reward=reward)
    with EmbeddedSimulator(sim_config or SimConfig()) as sim:
        for i in range(episodes):
            state = sim.reset(seed=seed + i)
            core.set_route(sim.route(route_length_m, route_spacing_m))
            core.reset_done()
            ret, speeds, collisions, invasions, end, steps = 0.0, [], 0, 0, "max_steps", 0
            while True:
                if on_frame is not None:
                    on_frame(state)
                stamp = stamp_ns(state)
                for kind in ("collision", "lane_invasion"):
                    for _ in range(int(getattr(state, kind))):
                        core.add_event(kind, stamp)
                vs = vehicle_state(state)
                decision = core.on_frame(stamp, state.image, "bgra8", vs)
                if on_decision is not None:
                    on_decision(state, decision)
                if steps > 0:  # the first frame is the episode's START: no step led to it
                    ret += decision.reward or 0.0
                    speeds.append(vs.forward_speed)
                    collisions += int(state.collision)
                    invasions += int(state.lane_invasion)
                if decision.episode_end:
                    end = decision.episode_end
                    break
                if decision.action is not None:  # None: a brake (a non-finite actor output)
                    result.actions.append(decision.action)
                command = decision.command
                state = sim.step(command.throttle, command.steer, command.brake)
                steps += 1
            mean_speed = float(np.mean(speeds)) if speeds else 0.0
            result.episodes.append(EpisodeStats(steps, ret, collisions, invasions, mean_speed, end))
    return result
