"""TD3Config: every hyperparameter and every stabilizer switch of the learner, in one dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ENCODER_GRAD_MODES = ("separate", "critic_only")
CNN_NORMS = ("layer", "none")
EXPLORATION_SCHEDULES = ("constant", "linear")


@dataclass
class TD3Config:
    """TD3 (Fujimoto et al. 2018) defaults plus the design's stabilizers, each switchable.

    `TD3Config.unstabilized()` is the variant the design failed with, for side-by-side runs.
    """

    # TD3
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    batch_size: int = 256
    exploration_noise: float = 0.1
    max_action: float = 1.0

    # Optimizers: Adam. The MLPs learn at 3e-4 with no weight decay; the CNNs at 1e-4 with weight
    # decay 1e-4, which holds LayerNorm's learnable gains down (norms grew 15.8 -> 65 without it).
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    actor_cnn_lr: float = 1e-4
    critic_cnn_lr: float = 1e-4
    cnn_weight_decay: float = 1e-4
    # clip_grad_norm_ on each of actor, actor CNN, critic, critic CNN; None = no clipping
    # (the pre-clip norms are still measured and reported).
    grad_clip: float | None = 10.0

    # "separate": actor and critic each own a CNN (the design). "critic_only": one CNN trained
    # by the critic loss only; the actor reads its features detached (DrQ-v2, SAC-AE). There is
    # then no actor CNN optimizer (TD3Learner.actor_cnn_optimizer is None).
    encoder_grad: str = "separate"
    cnn_norm: str = "layer"
    in_frames: int = 4

    # FeatureNormMonitor: per-sample CNN feature L2 thresholds and the adaptive CNN LR cut.
    l2_healthy: float = 30.0
    l2_warning: float = 50.0
    l2_failure: float = 100.0
    adaptive_lr: bool = True
    lr_cut_factor: float = 0.5
    lr_cut_cooldown: int = 1000
    lr_floor: float = 1e-6
    stats_every: int = 100
    weight_norms_every: int = 1000

    # ActionLimiter: |a| <= action_limit until it lifts itself (see ActionLimiter).
    action_limiter: bool = True
    action_limit: float = 0.6
    limiter_l2_max: float = 30.0
    limiter_l2_updates: int = 5000
    limiter_saturation: float = 0.99
    limiter_max_saturated_share: float = 0.05
    limiter_min_action_std: float = 0.05
    limiter_action_window: int = 1000
    limiter_episode_window: int = 10
    limiter_min_episode_length: float = 100.0

    # Runtime: "auto" = CUDA when available, else CPU. Fused Adam is used where torch has it.
    device: str = "auto"
    fused_adam: bool = True
    seed: int | None = None  # None: fresh entropy (weights, target noise, exploration noise)

    # --- Recipe options (issue 14). Each is off by default, i.e. the behaviour before it. -------
    # Random-shift augmentation (DrQ): in the learner, not the replay, every sampled obs and
    # next_obs stack is padded by `augment_pad` pixels (edge pixels repeated) and cropped back at
    # a random offset, each sample on its own. 0 = off; DrQ and DrQ-v2 use 4.
    augment_pad: int = 0
    # n-step returns: the TD target sums the discounted rewards of up to `n_step` steps from the
    # frame replay and bootstraps with gamma^k from the k-th next observation (k < n_step where
    # the episode ended inside the window). 1 = one-step TD3; DrQ-v2 uses 3.
    n_step: int = 1
    # Exploration noise std (x max_action) over env steps: "constant" = exploration_noise;
    # "linear" = DrQ-v2's linear(exploration_noise, exploration_noise_final, exploration_decay_steps).
    exploration_schedule: str = "constant"
    exploration_noise_final: float = 0.1
    exploration_decay_steps: int = 100_000

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad key and its allowed range."""

        def check(key: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"TD3Config.{key} = {getattr(self, key)!r}: allowed {allowed}")

        check("gamma", 0.0 <= self.gamma <= 1.0, "[0, 1]")
        check("tau", 0.0 < self.tau <= 1.0, "(0, 1]")
        check("policy_noise", self.policy_noise >= 0.0, ">= 0")
        check("noise_clip", self.noise_clip >= 0.0, ">= 0")
        check("policy_delay", isinstance(self.policy_delay, int) and self.policy_delay >= 1, "integer >= 1")
        check("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "integer >= 1")
        check("exploration_noise", self.exploration_noise >= 0.0, ">= 0")
        check("max_action", self.max_action > 0.0, "> 0")
        for key in ("actor_lr", "critic_lr", "actor_cnn_lr", "critic_cnn_lr"):
            check(key, self.__dict__[key] > 0.0 and math.isfinite(self.__dict__[key]), "> 0")
        check("cnn_weight_decay", self.cnn_weight_decay >= 0.0, ">= 0")
        check("grad_clip", self.grad_clip is None or self.grad_clip > 0.0, "> 0 or None (no clipping)")
        check("encoder_grad", self.encoder_grad in ENCODER_GRAD_MODES, f"one of {ENCODER_GRAD_MODES}")
        check("cnn_norm", self.cnn_norm in CNN_NORMS, f"one of {CNN_NORMS}")
        check("in_frames", isinstance(self.in_frames, int) and self.in_frames >= 1, "integer >= 1")
        check("l2_healthy", 0.0 < self.l2_healthy <= self.l2_warning, f"(0, l2_warning={self.l2_warning}]")
        check("l2_warning", self.l2_warning <= self.l2_failure, f"<= l2_failure={self.l2_failure}")
        check("lr_cut_factor", 0.0 < self.lr_cut_factor < 1.0, "(0, 1)")
        check("lr_cut_cooldown", self.lr_cut_cooldown >= 0, ">= 0")
        check("lr_floor", self.lr_floor > 0.0, "> 0")
        check("stats_every", self.stats_every >= 1, ">= 1")
        check("weight_norms_every", self.weight_norms_every >= 1, ">= 1")
        check("action_limit", 0.0 < self.action_limit <= self.max_action,
              f"(0, max_action={self.max_action}]")
        check("limiter_l2_updates", self.limiter_l2_updates >= 0, ">= 0")
        check("limiter_saturation", 0.0 < self.limiter_saturation <= 1.0, "(0, 1]")
        check("limiter_max_saturated_share", 0.0 <= self.limiter_max_saturated_share <= 1.0, "[0, 1]")
        check("limiter_min_action_std", self.limiter_min_action_std >= 0.0, ">= 0")
        check("limiter_action_window", self.limiter_action_window >= 1, ">= 1")
        check("limiter_episode_window", self.limiter_episode_window >= 1, ">= 1")
        check("device", isinstance(self.device, str) and self.device != "", '"auto", "cpu", "cuda", "cuda:N"')

        # Recipe options (issue 14)
        check("augment_pad", isinstance(self.augment_pad, int) and 0 <= self.augment_pad <= 42,
              "integer in [0, 42] (half the 84-pixel frame)")
        check("n_step", isinstance(self.n_step, int) and self.n_step >= 1, "integer >= 1")
        check("exploration_schedule", self.exploration_schedule in EXPLORATION_SCHEDULES,
              f"one of {EXPLORATION_SCHEDULES}")
        check("exploration_noise_final", self.exploration_noise_final >= 0.0, ">= 0")
        decay_steps = self.exploration_decay_steps
        check("exploration_decay_steps", isinstance(decay_steps, int) and decay_steps >= 1, "integer >= 1")

    @classmethod
    def unstabilized(cls, **overrides: Any) -> TD3Config:
        """The design's failing setup: no LayerNorm, no weight decay, no clipping, no LR cut, no
        action limit, and the MLP learning rate on the CNNs too."""
        values: dict[str, Any] = dict(
            cnn_norm="none",
            cnn_weight_decay=0.0,
            grad_clip=None,
            adaptive_lr=False,
            action_limiter=False,
            actor_cnn_lr=3e-4,
            critic_cnn_lr=3e-4,
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TD3Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TD3Config keys: {unknown}")
        return cls(**values)
