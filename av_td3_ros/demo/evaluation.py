"""Evaluate a driver in the embedded simulator, the way the policy node sees the world (no ROS).

The same pieces as a policy node in train mode: the camera frame through `PolicyPerception`
(84x84 gray, 4-stack), the 23 kinematics from the pose and the route, the reward and the episode
ends of `EpisodeTracker` (collision, off route, stuck, route finished, step limit). Only the
transport is missing, which is why a learned policy and a random one are measured identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.ros.conversions import VehicleState, action_to_control
from av_td3_ros.ros.policy_perception import PolicyPerception
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
) -> Evaluation:
    """Run `episodes` episodes; episode i starts from `sim.reset(seed + i)`, so two drivers
    evaluated with one seed face the same starts."""
    result = Evaluation(name)
    perception = PolicyPerception(reward, train=True)
    stack = perception.new_stack()
    with EmbeddedSimulator(sim_config or SimConfig()) as sim:
        for i in range(episodes):
            state = sim.reset(seed=seed + i)
            perception.set_route(sim.route(route_length_m, route_spacing_m))
            perception.start_episode()
            frames = stack.reset(perception.frame84(state.image, "bgra8"))
            kinematics = perception.kinematics(vehicle_state(state))
            ret, speeds, collisions, invasions, end = 0.0, [], 0, 0, "max_steps"
            steps = 0
            while True:
                if on_frame is not None:
                    on_frame(state)
                action = np.clip(np.asarray(driver(frames, kinematics), np.float32), -1.0, 1.0)
                result.actions.append(action)
                command = action_to_control(action)
                state = sim.step(command.throttle, command.steer, command.brake)
                steps += 1
                frames = stack.push(perception.frame84(state.image, "bgra8"))
                vs = vehicle_state(state)
                kinematics = perception.kinematics(vs)
                events = {"collision": int(state.collision), "lane_invasion": int(state.lane_invasion)}
                outcome = perception.judge(vs, events, action)
                ret += outcome.reward
                speeds.append(vs.forward_speed)
                collisions += int(state.collision)
                invasions += int(state.lane_invasion)
                if outcome.terminated or outcome.truncated:
                    end = outcome.reason or end
                    break
            result.episodes.append(
                EpisodeStats(steps, ret, collisions, invasions, float(np.mean(speeds)), end)
            )
    return result
