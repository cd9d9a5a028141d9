"""TD3Config: every hyperparameter and every stabilizer switch of the learner, in one dataclass
(each a `setting`: default, range and description written once)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from av_td3_ros.config_schema import Settings, setting

ENCODER_GRAD_MODES = ("separate", "critic_only")
CNN_NORMS = ("layer", "none")
EXPLORATION_SCHEDULES = ("constant", "linear")
CNN_PRECISIONS = ("auto", "bfloat16", "float32")


@dataclass
class TD3Config(Settings):
    """TD3 (Fujimoto et al. 2018) defaults plus the design's stabilizers, each switchable. Every
    field but `seed` is a setting: its default, range and description are written here once, and
    the trainer node's `td3.*` parameters derive from them (av_td3_ros.ros.parameters).

    `TD3Config.unstabilized()` is the variant the design failed with, for side-by-side runs.
    """

    # TD3
    gamma: float = setting(0.99, "discount", min=0.0, max=1.0)
    tau: float = setting(0.005, "target network soft-update rate", gt=0, max=1)
    policy_noise: float = setting(0.2, "target policy smoothing noise std", min=0.0, max=10.0)
    noise_clip: float = setting(0.5, "target policy smoothing noise clip", min=0.0, max=10.0)
    policy_delay: int = setting(2, "critic updates per actor update", min=1, max=1000)
    batch_size: int = setting(256, "replay batch per update", min=1, max=65536)
    exploration_noise: float = setting(
        0.1, "std of the Gaussian exploration noise added to the actor's actions (train mode)",
        min=0.0, max=1.0,
    )
    max_action: float = setting(1.0, "bound of every action component (the actor's tanh scale)", gt=0.0)

    # Optimizers: Adam. The MLPs learn at 3e-4 with no weight decay; the CNNs at 1e-4 with weight
    # decay 1e-4, which holds LayerNorm's learnable gains down (norms grew 15.8 -> 65 without it).
    actor_lr: float = setting(3e-4, "actor MLP Adam learning rate", gt=0.0, max=1.0)
    critic_lr: float = setting(3e-4, "critic MLP Adam learning rate", gt=0.0, max=1.0)
    actor_cnn_lr: float = setting(1e-4, "actor CNN Adam learning rate", gt=0.0, max=1.0)
    critic_cnn_lr: float = setting(1e-4, "critic CNN Adam learning rate", gt=0.0, max=1.0)
    cnn_weight_decay: float = setting(1e-4, "weight decay of the two CNN optimizers only", min=0.0, max=1.0)
    # The pre-clip norms are measured and reported also without clipping.
    grad_clip: float | None = setting(
        10.0, "max gradient norm for each of actor, actor CNN, critic, critic CNN (0 = no clipping)",
        gt=0.0, none=0.0,
    )

    # "separate": actor and critic each own a CNN (the design). "critic_only": one CNN trained
    # by the critic loss only; the actor reads its features detached (DrQ-v2, SAC-AE). There is
    # then no actor CNN optimizer (TD3Learner.actor_cnn_optimizer is None).
    encoder_grad: str = setting(
        "separate", "separate: actor and critic own a CNN each; critic_only: one CNN trained by the critic",
        choices=ENCODER_GRAD_MODES,
    )
    cnn_norm: str = setting(
        "layer", "NatureCNN normalization (none = the design's failing CNN)", choices=CNN_NORMS
    )
    in_frames: int = setting(4, "frames stacked in one observation", min=1)
    # The 23 kinematics arrive in metres and m/s (up to ~17). Divided by their typical size
    # (model.networks.KINEMATICS_SCALE) the critic's pre-clip norm halves, but its gradient moves
    # into the CNN and the car no longer learns the empty track in 15k env steps (0 of 3 seeds;
    # raw: 3 of 3; docs/benchmarks.md 11i): loud waypoints are what makes the track quick to learn.
    # Off, then. The divisor (ones when off) is saved in the weights either way.
    scale_kinematics: bool = setting(
        False, "divide the kinematic inputs by their typical size (10 m/s, 10 m, 1 rad, 10 m) inside "
               "the actor and critics (false = raw metres)"
    )

    # FeatureNormMonitor (monitor.py): per-sample CNN feature L2 thresholds and the adaptive CNN LR cut.
    l2_healthy: float = setting(30.0, "per-sample CNN feature L2 below this is healthy", gt=0.0)
    l2_warning: float = setting(
        50.0, "per-sample CNN L2 above this: CNN LRs cut, /diagnostics WARN", gt=0.0
    )
    l2_failure: float = setting(100.0, "per-sample CNN L2 above this: /diagnostics ERROR", gt=0.0)
    adaptive_lr: bool = setting(True, "cut the CNN LRs when the L2 exceeds l2_warning")
    lr_cut_factor: float = setting(0.5, "factor of each CNN LR cut", gt=0.0, lt=1.0)
    lr_cut_cooldown: int = setting(1000, "updates between two CNN LR cuts", min=0)
    lr_floor: float = setting(1e-6, "CNN LRs are never cut below this", gt=0.0, max=1.0)
    stats_every: int = setting(100, "log CNN feature norm/mean/std every N updates", min=1)
    weight_norms_every: int = setting(1000, "log CNN layer weight norms every N updates", min=1)

    # ActionLimiter (action_limiter.py): |a| <= action_limit until it lifts itself.
    action_limiter: bool = setting(
        True, "clip train-mode actions to +-action_limit until the limiter lifts itself (false = off)"
    )
    action_limit: float = setting(0.6, "the limiter's clip (at most max_action)", gt=0.0, max=1.0)
    limiter_l2_max: float = setting(30.0, "lift criterion 1: per-sample CNN L2 below this", gt=0.0)
    # The design's "5K steps" were environment steps at one update per step; the trainer here makes
    # far fewer updates than env steps (~0.06 per step in the demo), so the streak is measured in
    # env steps, with a floor of updates so that it is never vacuous (action_limiter.py).
    limiter_l2_env_steps: int = setting(
        5000, "lift criterion 1: ... at every update over this many environment steps learned from "
              "(the design's 5K steps; 0 = count updates only)", min=0
    )
    limiter_l2_updates: int = setting(
        100, "lift criterion 1: ... and over at least this many consecutive updates", min=0
    )
    limiter_saturation: float = setting(
        0.99, "lift criterion 2: |a| above this share of max_action counts as saturated", gt=0.0, max=1.0
    )
    limiter_max_saturated_share: float = setting(
        0.05, "lift criterion 2: saturated share of recent actions below this", min=0.0, max=1.0
    )
    limiter_min_action_std: float = setting(
        0.05, "lift criterion 2: std of every action dimension above this", min=0.0, max=10.0
    )
    limiter_action_window: int = setting(
        1000, "lift criterion 2: number of recent actor outputs looked at", min=1, max=10_000_000
    )
    limiter_episode_window: int = setting(
        10, "lift criterion 3: number of recent episodes looked at", min=1, max=1_000_000
    )
    limiter_min_episode_length: float = setting(
        100.0, "lift criterion 3: their mean length (steps) above this", min=0.0
    )
    # An instant 0.6 -> 1.0 jump let the critic's extrapolation over actions it had never seen drive
    # the actor into tanh saturation within ~1k env steps (docs/benchmarks.md 11h); a ramp keeps the
    # executed actions within a small step of the critic's data.
    limiter_lift_env_steps: int = setting(
        2000, "once every criterion holds, raise the limit linearly to max_action over this many "
              "environment steps (0 = lift at once)", min=0
    )

    # Runtime. Fused Adam is used where torch has it.
    device: str = setting("auto", "torch device: auto (CUDA if available), cpu, cuda, cuda:N")
    fused_adam: bool = setting(True, "use torch's fused Adam where available")
    # The CNNs' convolutions and FC layer are ~75% of an update's time; bfloat16 halves them on a
    # CPU with native bf16 (avx512_bf16 / AMX) and on CUDA. Only the learner's CNN passes run in
    # it: the Q and policy heads, the losses, the weights, gradients and Adam states stay float32
    # (bf16 would round a Q of 64 to 0.5), and acting (learner.act, policy node, ONNX) is float32.
    cnn_precision: str = setting(
        "auto", "compute dtype of the CNNs in learner updates: auto (bfloat16 where the device does "
                "it natively, else float32), bfloat16, float32", choices=CNN_PRECISIONS,
    )
    seed: int | None = None  # None: fresh entropy (weights, target noise, exploration noise)

    # --- Recipe options (issue 14), each benchmarked alone (docs/benchmarks.md section 11). -----
    # Random-shift augmentation (DrQ): in the learner, not the replay; DrQ and DrQ-v2 use 4. On by
    # default: the only part that helped alone (empty track: 3/3 seeds reached the cap, 0/3 without).
    # The others stay off, i.e. the behaviour before them, because alone they did not help.
    augment_pad: int = setting(4, "random-shift augmentation: pixels each sampled stack is padded by "
                               "(edges repeated) and cropped back at a random offset; 0 = off", min=0, max=42)
    # n-step returns from the frame replay; DrQ-v2 uses 3.
    n_step: int = setting(1, "TD target over up to n_step discounted rewards, bootstrapping with gamma^k "
                          "(k < n_step where the episode ended); 1 = one-step TD3", min=1, max=100)
    exploration_schedule: str = setting("constant", "exploration noise std over env steps: constant = "
                                        "exploration_noise; linear = exploration_noise -> "
                                        "exploration_noise_final over exploration_decay_steps",
                                        choices=EXPLORATION_SCHEDULES)
    exploration_noise_final: float = setting(0.1, "std at the end of the linear schedule (x max_action)",
                                             min=0.0, max=1.0)
    exploration_decay_steps: int = setting(100_000, "env steps of the linear schedule", min=1)

    def validate(self) -> None:
        """Raise SettingError (a ValueError) naming the bad key and what is allowed."""
        super().validate()
        self.require("device", self.device != "", "must be auto, cpu, cuda or cuda:N")
        self.require_at_most("l2_healthy", "l2_warning")
        self.require_at_most("l2_warning", "l2_failure")
        self.require_at_most("action_limit", "max_action")


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
