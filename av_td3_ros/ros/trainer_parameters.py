"""The trainer node's parameters (one list; config/trainer.yaml documents each in place and a test
keeps the two equal) and their translation into the pure core's TrainingServiceConfig.

Names under `td3.` are TD3Config fields of the same name (with `grad_clip` 0 meaning "no
clipping"); names under `ingest.` are IngestConfig fields. No rclpy here.
"""

from __future__ import annotations

from types import SimpleNamespace

from av_td3_ros.learning.config import CNN_NORMS, ENCODER_GRAD_MODES, TD3Config
from av_td3_ros.learning.ingest import IngestConfig
from av_td3_ros.learning.training_service import TrainingServiceConfig
from av_td3_ros.ros.parameters import ParameterSpec

__all__ = ["TRAINER_NODE_PARAMETERS", "service_config_from_parameters"]

_TD3 = TD3Config()
_INGEST = IngestConfig()
_BIG = 1_000_000_000

P = ParameterSpec

TRAINER_NODE_PARAMETERS: list[ParameterSpec] = [
    # --- topics
    P("transitions_topic", "/av_td3/transitions", "av_td3_msgs/Transition input (RELIABLE depth 1000)"),
    P("weights_topic", "/av_td3/policy_weights",
                  "av_td3_msgs/PolicyWeights output (RELIABLE TRANSIENT_LOCAL depth 1)"),
    P("signing_key", "",
      "ed25519 private key file (PEM, 0600; `av-td3 keys`) that signs every published payload; "
      "empty = unsigned (policy nodes with weights_trust signed refuse them)"),
    P("status_topic", "/av_td3/training_status", "av_td3_msgs/TrainingStatus output (no header)"),
    P("diagnostics_topic", "/diagnostics", "diagnostic_msgs/DiagnosticArray output"),
    P("executor", "events",
      "rclpy executor: events (rclpy.experimental.EventsExecutor, measured faster) or single_threaded",
      choices=("events", "single_threaded")),
    P("status_period", 1.0, "seconds between TrainingStatus messages", min=0.05, max=3600.0),
    P("diagnostics_period", 1.0, "seconds between /diagnostics messages", min=0.05, max=3600.0),
    # --- learning loop
    P("replay_capacity", 100_000, "transitions kept in replay (~7.2 KB each: 100k ~ 0.7 GB)",
                  min=100, max=_BIG),
    P("learning_starts", 1000,
                  "transitions received (this run) before the first update; also after a resume",
                  min=1, max=_BIG),
    P("update_to_data_ratio", 1.0,
                  "TD3 updates per transition received (an upper bound: on CPU the learner is slower)",
                  min=0.001, max=1000.0),
    P("publish_every", 100, "publish PolicyWeights every this many updates", min=1, max=_BIG),
    P("checkpoint_every", 1000, "write a checkpoint every this many updates (and on shutdown)",
                  min=1, max=_BIG),
    P("checkpoint_dir", "checkpoints/trainer",
                  "checkpoint directory ('~' expanded; empty = no checkpoints, no resume)"),
    P("resume", True, "restart from the latest checkpoint in checkpoint_dir when there is one"),
    P("log_dir", "runs/trainer", "TensorBoard log directory (empty = no TensorBoard)"),
    P("metrics_every", 10, "write TensorBoard scalars every this many updates", min=1, max=_BIG),
    P("max_consecutive_errors", 5,
                  "learner exceptions in a row before the node gives up (exit code 1)", min=1, max=_BIG),
    P("torch_threads", 0, "torch intra-op threads for the learner (0 = torch's default)",
                  min=0, max=1024),
    P("seed", -1, "seed for the learner and replay sampling (-1 = random)", min=-1, max=2**31 - 1),
    # --- ingest: what a transition must satisfy, and memory bounds
    P("ingest.queue_capacity", _INGEST.queue_capacity,
                  "transitions buffered between the subscription and the learner; beyond it they are "
                  "dropped and counted (~7.3 KB each)", min=16, max=10_000_000),
    P("ingest.max_actors", _INGEST.max_actors, "actor streams tracked at once", min=1, max=100_000),
    P("ingest.actor_idle_timeout", _INGEST.actor_idle_timeout,
                  "seconds after which a silent actor's slot can be reused", min=1.0, max=1.0e7),
    P("ingest.max_abs_kinematics", _INGEST.max_abs_kinematics,
                  "a transition with any |kinematics| above this is dropped", min=1.0, max=1.0e9),
    P("ingest.max_abs_reward", _INGEST.max_abs_reward,
                  "a transition with |reward| above this is dropped", min=1.0e-3, max=1.0e9),
    # --- TD3 (TD3Config fields)
    P("td3.batch_size", _TD3.batch_size, "replay batch per update", min=1, max=65536),
    P("td3.gamma", _TD3.gamma, "discount", min=0.0, max=1.0),
    P("td3.tau", _TD3.tau, "target network soft-update rate", min=1e-6, max=1.0),
    P("td3.policy_noise", _TD3.policy_noise, "target policy smoothing noise std", min=0.0, max=10.0),
    P("td3.noise_clip", _TD3.noise_clip, "target policy smoothing noise clip", min=0.0, max=10.0),
    P("td3.policy_delay", _TD3.policy_delay, "critic updates per actor update", min=1, max=1000),
    P("td3.actor_lr", _TD3.actor_lr, "actor MLP Adam learning rate", min=1e-9, max=1.0),
    P("td3.critic_lr", _TD3.critic_lr, "critic MLP Adam learning rate", min=1e-9, max=1.0),
    P("td3.actor_cnn_lr", _TD3.actor_cnn_lr, "actor CNN Adam learning rate", min=1e-9, max=1.0),
    P("td3.critic_cnn_lr", _TD3.critic_cnn_lr, "critic CNN Adam learning rate", min=1e-9, max=1.0),
    P("td3.cnn_weight_decay", _TD3.cnn_weight_decay, "weight decay of the two CNN optimizers only",
                  min=0.0, max=1.0),
    P("td3.grad_clip", float(_TD3.grad_clip or 0.0),
                  "max gradient norm for each of actor, actor CNN, critic, critic CNN (0 = no clipping)",
                  min=0.0, max=1.0e9),
    P("td3.encoder_grad", _TD3.encoder_grad,
                  "separate: actor and critic own a CNN each; critic_only: one CNN trained by the critic",
                  choices=ENCODER_GRAD_MODES),
    P("td3.cnn_norm", _TD3.cnn_norm, "NatureCNN normalization (none = the design's failing CNN)",
                  choices=CNN_NORMS),
    P("td3.l2_healthy", _TD3.l2_healthy, "per-sample CNN feature L2 below this is healthy",
                  min=1e-6, max=1.0e9),
    P("td3.l2_warning", _TD3.l2_warning,
                  "per-sample CNN L2 above this: CNN LRs halved, /diagnostics WARN", min=1e-6, max=1.0e9),
    P("td3.l2_failure", _TD3.l2_failure, "per-sample CNN L2 above this: /diagnostics ERROR",
                  min=1e-6, max=1.0e9),
    P("td3.adaptive_lr", _TD3.adaptive_lr, "halve the CNN LRs when the L2 exceeds l2_warning"),
    P("td3.lr_cut_factor", _TD3.lr_cut_factor, "factor of each CNN LR cut", min=1e-6, max=0.999999),
    P("td3.lr_cut_cooldown", _TD3.lr_cut_cooldown, "updates between two CNN LR cuts", min=0, max=_BIG),
    P("td3.lr_floor", _TD3.lr_floor, "CNN LRs are never cut below this", min=1e-12, max=1.0),
    P("td3.stats_every", _TD3.stats_every, "log CNN feature norm/mean/std every N updates",
                  min=1, max=_BIG),
    P("td3.weight_norms_every", _TD3.weight_norms_every, "log CNN layer weight norms every N updates",
                  min=1, max=_BIG),
    P("td3.action_limiter", _TD3.action_limiter,
                  "clip train-mode actions to +-action_limit until the limiter lifts itself (false = off)"),
    P("td3.action_limit", _TD3.action_limit, "the limiter's clip", min=0.01, max=1.0),
    P("td3.limiter_l2_max", _TD3.limiter_l2_max, "lift criterion 1: per-sample CNN L2 below this",
                  min=1e-6, max=1.0e9),
    P("td3.limiter_l2_updates", _TD3.limiter_l2_updates,
                  "lift criterion 1: ... for this many consecutive updates", min=0, max=_BIG),
    P("td3.limiter_saturation", _TD3.limiter_saturation,
                  "lift criterion 2: |a| above this counts as saturated", min=1e-6, max=1.0),
    P("td3.limiter_max_saturated_share", _TD3.limiter_max_saturated_share,
                  "lift criterion 2: saturated share of recent actions below this", min=0.0, max=1.0),
    P("td3.limiter_min_action_std", _TD3.limiter_min_action_std,
                  "lift criterion 2: std of every action dimension above this", min=0.0, max=10.0),
    P("td3.limiter_action_window", _TD3.limiter_action_window,
                  "lift criterion 2: number of recent actor outputs looked at", min=1, max=10_000_000),
    P("td3.limiter_episode_window", _TD3.limiter_episode_window,
                  "lift criterion 3: number of recent episodes looked at", min=1, max=1_000_000),
    P("td3.limiter_min_episode_length", _TD3.limiter_min_episode_length,
                  "lift criterion 3: their mean length (steps) above this", min=0.0, max=1.0e9),
    P("td3.device", _TD3.device, "torch device: auto (CUDA if available), cpu, cuda, cuda:N"),
    P("td3.fused_adam", _TD3.fused_adam, "use torch's fused Adam where available"),
]

_TD3_KEYS = (
    "batch_size", "gamma", "tau", "policy_noise", "noise_clip", "policy_delay", "actor_lr", "critic_lr",
    "actor_cnn_lr", "critic_cnn_lr", "cnn_weight_decay", "encoder_grad", "cnn_norm", "l2_healthy",
    "l2_warning", "l2_failure", "adaptive_lr", "lr_cut_factor", "lr_cut_cooldown", "lr_floor", "stats_every",
    "weight_norms_every", "action_limiter", "action_limit", "limiter_l2_max", "limiter_l2_updates",
    "limiter_saturation", "limiter_max_saturated_share", "limiter_min_action_std", "limiter_action_window",
    "limiter_episode_window", "limiter_min_episode_length", "device", "fused_adam",
)
_INGEST_KEYS = ("queue_capacity", "max_actors", "actor_idle_timeout", "max_abs_kinematics", "max_abs_reward")


def service_config_from_parameters(params: SimpleNamespace) -> TrainingServiceConfig:
    """The namespace `declare_parameters(node, TRAINER_NODE_PARAMETERS)` returns (or
    `parameters.defaults(...)`) -> TrainingServiceConfig. Raises ValueError naming a bad key for
    cross-field problems (e.g. td3.l2_warning > td3.l2_failure)."""
    seed = None if params.seed < 0 else int(params.seed)
    td3 = {key: getattr(params.td3, key) for key in _TD3_KEYS}
    td3["grad_clip"] = float(params.td3.grad_clip) or None
    td3["seed"] = seed
    return TrainingServiceConfig(
        td3=TD3Config(**td3),
        ingest=IngestConfig(**{key: getattr(params.ingest, key) for key in _INGEST_KEYS}),
        replay_capacity=params.replay_capacity,
        replay_seed=seed,
        learning_starts=params.learning_starts,
        update_to_data_ratio=params.update_to_data_ratio,
        publish_every=params.publish_every,
        checkpoint_every=params.checkpoint_every,
        checkpoint_dir=params.checkpoint_dir,
        resume=params.resume,
        log_dir=params.log_dir,
        metrics_every=params.metrics_every,
        max_consecutive_errors=params.max_consecutive_errors,
    )
