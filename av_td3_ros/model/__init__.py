"""model: torch modules only (no ROS, no numpy-side logic)."""

from av_td3_ros.model.networks import (
    ACTION_DIM,
    ACTOR_INPUT_DIM,
    FEATURE_DIM,
    FRAME_SIZE,
    KINEMATICS_DIM,
    Actor,
    ConvLayerNorm,
    NatureCNN,
    PolicyNetwork,
    TwinCritic,
    normalize_frames,
)

__all__ = [
    "ACTION_DIM",
    "ACTOR_INPUT_DIM",
    "FEATURE_DIM",
    "FRAME_SIZE",
    "KINEMATICS_DIM",
    "Actor",
    "ConvLayerNorm",
    "NatureCNN",
    "PolicyNetwork",
    "TwinCritic",
    "normalize_frames",
]
