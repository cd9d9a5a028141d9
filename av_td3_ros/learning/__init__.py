"""learning: the stabilized TD3 core (torch + numpy, never rclpy).

Names are imported lazily (PEP 562), so `import av_td3_ros.learning.ingest` does not pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TD3Config": "config",
    "TD3Learner": "td3",
    "ArchitectureMismatch": "td3",
    "FeatureNormMonitor": "monitor",
    "per_sample_l2": "monitor",
    "batch_summed_l2": "monitor",
    "ActionLimiter": "action_limiter",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint_config": "checkpoint",
    "checkpoint_exists": "checkpoint",
    "CheckpointError": "checkpoint",
    "encode_policy_weights": "weights",
    "decode_policy_weights": "weights",
    "count_non_finite": "weights",
    "architecture_fingerprint": "weights",
    "WeightsRejected": "weights",
    "MetricsWriter": "metrics",
    "FrameReplayBuffer": "replay",
    "ReplayBatch": "replay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
