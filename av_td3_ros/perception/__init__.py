"""perception: camera frames, kinematic inputs, reward and episode ends (numpy + cv2, no ROS)."""

from av_td3_ros.perception.image import (
    SUPPORTED_ENCODINGS,
    FrameStack,
    InvalidImage,
    UnsupportedEncoding,
    to_gray84,
)
from av_td3_ros.perception.kinematics import (
    InvalidInput,
    KinematicsEncoder,
    Route,
    RoutePosition,
    locate_on_route,
    wrap_angle,
)
from av_td3_ros.perception.reward import (
    TERMINATING_REASONS,
    EndReason,
    EpisodeTracker,
    RewardConfig,
    RewardFunction,
    RewardTerms,
    StepResult,
)

__all__ = [
    "SUPPORTED_ENCODINGS",
    "TERMINATING_REASONS",
    "EndReason",
    "EpisodeTracker",
    "FrameStack",
    "InvalidImage",
    "InvalidInput",
    "KinematicsEncoder",
    "RewardConfig",
    "RewardFunction",
    "RewardTerms",
    "Route",
    "RoutePosition",
    "StepResult",
    "UnsupportedEncoding",
    "locate_on_route",
    "to_gray84",
    "wrap_angle",
]
