"""PolicyPerception: the perception core (av_td3_ros.perception) wired up the way a policy node
uses it — camera frame -> 84x84 gray, odometry + route -> 23 kinematics, and per step the
reward and the episode end. No rclpy; fed with numpy and conversions.VehicleState."""

from __future__ import annotations

import numpy as np

from av_td3_ros.perception.image import FrameStack, to_gray84
from av_td3_ros.perception.kinematics import KinematicsConfig, KinematicsEncoder, Route
from av_td3_ros.perception.reward import EpisodeTracker, RewardConfig
from av_td3_ros.ros.control_loop import EpisodeOutcome

__all__ = ["PolicyPerception", "reward_config_from_params"]


def reward_config_from_params(reward_ns) -> RewardConfig:
    """The `reward.*` parameters (a namespace) -> RewardConfig."""
    return RewardConfig.from_namespace(reward_ns)


class PolicyPerception:
    def __init__(
        self,
        reward_config: RewardConfig,
        *,
        train: bool = True,
        kinematics: KinematicsConfig | None = None,
        stack_size: int = 4,
    ):
        self.train = train
        self.stack_size = stack_size
        self.encoder = KinematicsEncoder(kinematics)
        self.tracker = EpisodeTracker(reward_config)
        self.route: Route | None = None

    @classmethod
    def from_params(cls, p) -> PolicyPerception:
        return cls(
            reward_config_from_params(p.reward),
            train=p.mode == "train",
            kinematics=KinematicsConfig.from_namespace(p.kinematics),
        )

    def new_stack(self) -> FrameStack:
        return FrameStack(self.stack_size)

    @staticmethod
    def frame84(image: np.ndarray, encoding: str) -> np.ndarray:
        """(H, W[, C]) uint8 in `encoding` -> (84, 84) uint8 gray (INTER_AREA)."""
        return to_gray84(image, encoding)

    def set_route(self, points: np.ndarray | None) -> None:
        """A new route ((N, 2) map points; repeated points dropped) or None (invalid: brake).
        Raises ValueError (InvalidInput) for a route that cannot be followed."""
        self.route = None if points is None else Route.deduplicated(points)

    def start_episode(self) -> None:
        """Forget progress along the route and the episode's counters."""
        self.encoder.reset()
        self.tracker.reset()

    def kinematics(self, state) -> np.ndarray:
        """(23,) float32 for the current pose; raises ValueError without a usable route/pose."""
        if self.route is None:
            raise ValueError("no route")
        return self.encoder.encode(self.route, state.x, state.y, state.yaw, state.forward_speed)

    def judge(self, state, events: dict, action=None) -> EpisodeOutcome:
        """Reward (and in train mode the episode end) of the step that led to `state`; call
        after kinematics() for the same state."""
        position = self.encoder.position
        if position is None:
            raise ValueError("judge() before kinematics()")
        inputs = dict(
            speed=state.forward_speed,
            lateral_offset=position.lateral_offset,
            heading_error=position.heading_error,
            collision=events.get("collision", 0) > 0,
            lane_invasions=int(events.get("lane_invasion", 0)),
        )
        if not self.train:  # deploy: the reward for the plot only; episodes never end here
            return EpisodeOutcome(self.tracker.reward_function(**inputs).total)
        result = self.tracker.step(**inputs, route_finished=self.encoder.route_finished)
        return EpisodeOutcome(
            result.reward,
            result.terminated,
            result.truncated,
            result.reason.value if result.reason is not None else "",
        )
