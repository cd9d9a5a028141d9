"""TensorBoard scalars for the learner, under the design's tags.

The design's three debug tags are kept verbatim (debug/cnn_features_l2_norm now PER SAMPLE);
the rest are grouped so TensorBoard shows one card per concern.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

# TD3Learner.update() key -> TensorBoard tag
TAGS: dict[str, str] = {
    "cnn_l2": "debug/cnn_features_l2_norm",
    "cnn_features_mean": "debug/cnn_features_mean",
    "cnn_features_std": "debug/cnn_features_std",
    "actor_cnn_l2": "debug/actor_cnn_features_l2_norm",
    "critic_cnn_l2": "debug/critic_cnn_features_l2_norm",
    "critic_loss": "loss/critic",
    "actor_loss": "loss/actor",
    "q_mean": "q/mean",
    "target_q_mean": "q/target_mean",
    "td_error": "q/td_error",
    "grad_norm_actor": "grad_norm/actor",
    "grad_norm_actor_cnn": "grad_norm/actor_cnn",
    "grad_norm_critic": "grad_norm/critic",
    "grad_norm_critic_cnn": "grad_norm/critic_cnn",
    "lr_actor": "lr/actor",
    "lr_actor_cnn": "lr/actor_cnn",
    "lr_critic": "lr/critic",
    "lr_critic_cnn": "lr/critic_cnn",
    "saturated_share": "actions/saturated_share",
    "action_limit_active": "limiter/active",
    "action_limit": "limiter/limit",
}


def tag_for(key: str) -> str | None:
    """The tag of an update() key; weight norms keep their own path; unknown keys are skipped."""
    if key in TAGS:
        return TAGS[key]
    if key.startswith("weight_norm/"):
        return key
    return None


class MetricsWriter:
    """Writes TD3Learner.update() dicts (and any extra scalars) to TensorBoard.

    `every`: write the update scalars every N updates (weight norms, which the learner returns
    only every weight_norms_every updates, are always written when present).
    """

    def __init__(self, log_dir: str | os.PathLike, every: int = 1, flush_secs: int = 30):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: keep it lazy

        self.every = max(1, int(every))
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)

    def write_update(self, info: Mapping[str, float], step: int) -> None:
        due = step % self.every == 0
        for key, value in info.items():
            tag = tag_for(key)
            if tag is None or not (due or key.startswith("weight_norm/")):
                continue
            if isinstance(value, int | float) and not math.isnan(value):
                self.writer.add_scalar(tag, float(value), step)

    def write_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Free-form scalars (tags as given), e.g. episode return, replay size, updates/s."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
