"""TD3Learner: TD3 (Fujimoto et al. 2018, after sfujim/TD3) on 4x84x84 frames + 23 kinematics,
with every stabilizer of the design measurable and switchable (see TD3Config).

update(batch), shaped like DrQ-v2's: _update_critic() every call; every policy_delay calls
_update_actor() and the soft target update; then the stabilizers see the result. Each step
returns its metrics dict.
  critic: y = r + gamma^k * (1 - terminated) * min(Q1', Q2')(s', clip(pi'(s') + clipped noise))
          (k = 1, or the n-step window's length), loss = MSE(Q1, y) + MSE(Q2, y);
          critic MLP and critic CNN each clipped to grad_clip.
  actor:  loss = -Q1(s, clip(pi(s), +-limit)) + a penalty on the output beyond the limit;
          actor MLP and actor CNN each clipped.
The actor loss reads the critic's features of this update's critic step, detached (as DrQ-v2):
the critic CNN is never trained by the actor loss, and one CNN forward pass is saved.
Which CNN the actor reads is decided once, at build time (Encoders, as SB3's
share_features_extractor): encoder_grad="separate" gives the actor its own CNN, trained by the
actor loss; "critic_only" has one CNN, trained by the critic loss only, whose features the actor
reads detached (DrQ-v2, SAC-AE), and no actor CNN optimizer.
The CNN passes of update() compute in TD3Config.cnn_precision (CnnPass: bfloat16 where the
device has it natively); the heads, losses, weights and act() stay float32.
"""

from __future__ import annotations

import copy
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from av_td3_ros.learning.action_limiter import ActionLimiter
from av_td3_ros.learning.augmentation import random_shift
from av_td3_ros.learning.config import TD3Config
from av_td3_ros.learning.exploration import Exploration
from av_td3_ros.learning.monitor import FeatureNormMonitor, per_sample_l2
from av_td3_ros.model import NatureCNN, PolicyNetwork, TwinCritic
from av_td3_ros.model.networks import kinematics_scale

log = logging.getLogger("av_td3_ros.learning.td3")

# Config fields that change the tensors a learner holds: a checkpoint must agree on them.
ARCHITECTURE_KEYS = ("encoder_grad", "cnn_norm", "in_frames", "scale_kinematics")
# Weight of the squared actor output beyond the active action limit in the actor loss. Outside the
# limit it is the only gradient (the clip has none), so any positive weight pulls the output back.
LIMIT_PENALTY = 1.0


class ArchitectureMismatch(ValueError):
    """A state dict or checkpoint of another architecture; the message names the mismatch."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or AMX). oneDNN emulates it on
    other CPUs, slower than float32, so "auto" must not pick it there."""
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="ascii", errors="replace")
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split(":", 1)[-1].split()))


def resolve_cnn_precision(name: str, device: torch.device) -> torch.dtype:
    """TD3Config.cnn_precision -> the dtype the learner's CNN passes compute in."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and _native_cpu_bf16() else torch.float32


class CnnPass:
    """Runs a learner's CNN on prepared frames in the chosen compute dtype, returning float32
    features: whatever reads them (heads, losses, the feature-norm monitor) stays float32, and
    autocast's casts send float32 gradients back to the float32 weights."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device_type, self.dtype = device.type, dtype

    def __call__(self, cnn: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.float32:
            return cnn(frames, prepared=True)
        with torch.autocast(self.device_type, dtype=self.dtype):
            features = cnn(frames, prepared=True)
        return features.float()


def _params(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def _frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A target network: a copy that only the soft update moves."""
    return copy.deepcopy(module).requires_grad_(False)


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor its parameter's memory layout.

    Optimizer.load_state_dict keeps the loaded tensors' (contiguous) layout, while the CNN
    parameters are channels_last; fused/foreach Adam then pairs the wrong elements of exp_avg
    with the parameter's. Copying into empty_like(param) restores the layout, and the values.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                mismatched = isinstance(value, torch.Tensor) and value.stride() != p.stride()
                if mismatched and value.shape == p.shape:
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


class Part(NamedTuple):
    """Parameters clipped together and stepped by one optimizer; metrics call it grad_norm_<name>."""

    name: str
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer


class Observation(NamedTuple):
    frames: torch.Tensor  # prepared: normalized float32, channels_last (NatureCNN.prepare)
    kinematics: torch.Tensor


# Builds the Part of one CNN: (name, module) -> Part with that CNN's optimizer.
MakeCnnPart = Callable[[str, torch.nn.Module], Part]


class Encoders(ABC):
    """The learner's CNNs: which one each side reads, which loss trains it, and its optimizer.

    Chosen once from encoder_grad (see `build_encoders`); the update asks these methods and
    never which mode it runs in. critic / actor: the online CNN the critic / the actor reads;
    critic_target / actor_target: their target twins. critic_part: the critic CNN's Part (the
    critic loss trains it); actor_parts: what the actor loss trains besides the actor MLP.
    """

    critic: NatureCNN
    actor: NatureCNN
    critic_target: NatureCNN
    actor_target: NatureCNN
    critic_part: Part
    actor_parts: list[Part]
    encode: CnnPass  # every training pass of these CNNs goes through it (its compute dtype)

    @abstractmethod
    def named_online(self) -> dict[str, torch.nn.Module]:
        """The online CNNs under their state-dict names."""

    @abstractmethod
    def named_targets(self) -> dict[str, torch.nn.Module]:
        """The target CNNs under their state-dict names, in the order of named_online()."""

    @abstractmethod
    def cnns(self) -> dict[str, torch.nn.Module]:
        """The online CNNs under their telemetry names (weight_norm/<name>/...)."""

    @abstractmethod
    def target_features(self, next_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(critic's, actor's) target features of the prepared next frames."""

    @abstractmethod
    def actor_features(self, frames: torch.Tensor, critic_features: torch.Tensor) -> torch.Tensor:
        """The features the actor step reads, given the critic step's (detached) features."""

    @abstractmethod
    def actor_cnn_l2(self, critic_cnn_l2: float, last_actor_cnn_l2: float) -> float:
        """The actor's feature L2 to report this update (the last actor update's, or this one's)."""

    def soft_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return list(zip(self.named_online().values(), self.named_targets().values(), strict=True))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The CNN optimizers by name ("actor_cnn" only where the actor trains its own CNN)."""
        return {part.name: part.optimizer for part in [*self.actor_parts, self.critic_part]}


class SeparateEncoders(Encoders):
    """encoder_grad="separate" (the design): the actor and the critic each own a CNN, each trained
    by its own loss with its own optimizer."""

    def __init__(self, actor_cnn: NatureCNN, critic_cnn: NatureCNN, make_part: MakeCnnPart, encode: CnnPass):
        self.encode = encode
        self.actor, self.critic = actor_cnn, critic_cnn
        self.actor_target, self.critic_target = _frozen_copy(actor_cnn), _frozen_copy(critic_cnn)
        self.critic_part = make_part("critic_cnn", critic_cnn)
        self.actor_parts = [make_part("actor_cnn", actor_cnn)]

    def named_online(self) -> dict[str, torch.nn.Module]:
        return {"actor_encoder": self.actor, "critic_encoder": self.critic}

    def named_targets(self) -> dict[str, torch.nn.Module]:
        return {"actor_encoder_target": self.actor_target, "critic_encoder_target": self.critic_target}

    def cnns(self) -> dict[str, torch.nn.Module]:
        return {"actor_cnn": self.actor, "critic_cnn": self.critic}

    def target_features(self, next_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(self.critic_target, next_frames), self.encode(self.actor_target, next_frames)

    def actor_features(self, frames: torch.Tensor, critic_features: torch.Tensor) -> torch.Tensor:
        return self.encode(self.actor, frames)

    def actor_cnn_l2(self, critic_cnn_l2: float, last_actor_cnn_l2: float) -> float:
        return last_actor_cnn_l2  # its own CNN: measured on actor updates, carried in between


class SharedEncoder(Encoders):
    """encoder_grad="critic_only": one CNN, trained by the critic loss alone; the actor reads its
    features detached (DrQ-v2, SAC-AE), so the actor loss trains no CNN and has no CNN optimizer."""

    def __init__(self, cnn: NatureCNN, make_part: MakeCnnPart, encode: CnnPass):
        self.encode = encode
        self.actor = self.critic = cnn
        self.actor_target = self.critic_target = _frozen_copy(cnn)
        self.critic_part = make_part("critic_cnn", cnn)
        self.actor_parts = []

    def named_online(self) -> dict[str, torch.nn.Module]:
        return {"encoder": self.critic}

    def named_targets(self) -> dict[str, torch.nn.Module]:
        return {"encoder_target": self.critic_target}

    def cnns(self) -> dict[str, torch.nn.Module]:
        return {"encoder": self.critic}

    def target_features(self, next_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encode(self.critic_target, next_frames)
        return features, features

    def actor_features(self, frames: torch.Tensor, critic_features: torch.Tensor) -> torch.Tensor:
        return critic_features

    def actor_cnn_l2(self, critic_cnn_l2: float, last_actor_cnn_l2: float) -> float:
        return critic_cnn_l2  # one CNN: the critic's features of this very update


def build_encoders(
    encoder_grad: str, actor_cnn: NatureCNN, make_cnn: Callable[[], NatureCNN], make_part: MakeCnnPart,
    encode: CnnPass,
) -> Encoders:
    """The one place encoder_grad is read. make_cnn builds the critic's own CNN (separate only)."""
    if encoder_grad == "critic_only":
        return SharedEncoder(actor_cnn, make_part, encode)
    return SeparateEncoders(actor_cnn, make_cnn(), make_part, encode)


class TD3Learner:
    """The stabilized TD3 learner. Not thread-safe: call act/update/state_dict from one thread.

    Attributes: config, device, cnn_dtype (the compute dtype of update()'s CNN passes),
    updates (number of update() calls), policy (PolicyNetwork:
    `.encoder` + `.actor`), encoders (Encoders), actor_encoder, actor, critic_encoder, critic
    and their *_target twins, the four optimizers (actor_cnn_optimizer is None with
    encoder_grad="critic_only"), monitor (FeatureNormMonitor), limiter (ActionLimiter),
    exploration (Exploration, for act(explore=True)).
    """

    def __init__(self, config: TD3Config | None = None):
        self.config = c = config or TD3Config()
        c.validate()
        self.device = resolve_device(c.device)
        self.cnn_dtype = resolve_cnn_precision(c.cnn_precision, self.device)

        fused = c.fused_adam and self.device.type in ("cpu", "cuda")

        def adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)

        def make_cnn_part(name: str, cnn: torch.nn.Module) -> Part:
            lr = {"actor_cnn": c.actor_cnn_lr, "critic_cnn": c.critic_cnn_lr}[name]
            params = _params(cnn)
            # Weight decay on exactly the CNN optimizers.
            return Part(name, params, adam(params, lr, c.cnn_weight_decay))

        # One seed (None = fresh OS entropy) -> independent streams for the initial weights, the
        # target-policy noise and augmentation (torch), and the exploration noise (numpy). The
        # process's global torch RNG is left untouched.
        seeds = np.random.SeedSequence(c.seed)
        init_seed, noise_seed = (int(s) for s in seeds.generate_state(2))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.policy = PolicyNetwork(norm=c.cnn_norm, max_action=c.max_action, in_frames=c.in_frames,
                                        scale_kinematics=c.scale_kinematics)
            self.critic = TwinCritic(scale_kinematics=c.scale_kinematics)
            self.policy.to(self.device)
            self.critic.to(self.device)
            self.encoders = build_encoders(
                c.encoder_grad, self.policy.encoder,
                lambda: NatureCNN(in_frames=c.in_frames, norm=c.cnn_norm).to(self.device), make_cnn_part,
                CnnPass(self.device, self.cnn_dtype),
            )
        e = self.encoders
        self.actor = self.policy.actor
        self.actor_encoder, self.critic_encoder = e.actor, e.critic
        self.actor_encoder_target, self.critic_encoder_target = e.actor_target, e.critic_target
        self.actor_target, self.critic_target = _frozen_copy(self.actor), _frozen_copy(self.critic)
        # (online, target) parameter lists for the soft update
        self._soft_pairs = [
            (_params(online), _params(target))
            for online, target in [(self.actor, self.actor_target), (self.critic, self.critic_target),
                                   *e.soft_pairs()]
        ]

        self.actor_optimizer = adam(_params(self.actor), c.actor_lr)
        self.critic_optimizer = adam(_params(self.critic), c.critic_lr)
        self.critic_cnn_optimizer = e.critic_part.optimizer
        self.actor_cnn_optimizer: torch.optim.Adam | None = e.optimizers().get("actor_cnn")
        # What each loss trains, clipped part by part.
        self._critic_parts = [Part("critic", _params(self.critic), self.critic_optimizer), e.critic_part]
        self._actor_parts = [Part("actor", _params(self.actor), self.actor_optimizer), *e.actor_parts]

        self.monitor = FeatureNormMonitor.from_config(c, e.optimizers())
        self.limiter = ActionLimiter.from_config(c)

        # Every random draw of the learner comes from these two (saved in checkpoints).
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(noise_seed)
        self._np_rng = np.random.default_rng(seeds.spawn(1)[0])
        self.exploration = Exploration.from_config(c, rng=self._np_rng, limiter=self.limiter)
        # Random-shift augmentation (DrQ) of the sampled frames, or none.
        self._augment: Callable[[torch.Tensor], torch.Tensor] = (
            functools.partial(random_shift, pad=c.augment_pad, generator=self._generator)
            if c.augment_pad > 0 else (lambda frames: frames)
        )

        self.updates = 0
        # Actor-side numbers are measured on actor updates (every policy_delay) and carried over.
        # With one CNN the actor loss trains no CNN: grad_norm_actor_cnn stays 0.
        self._actor_stats = {
            "actor_cnn_l2": 0.0, "cnn_features_mean": 0.0, "cnn_features_std": 0.0,
            "saturated_share": 0.0, "grad_norm_actor": 0.0, "grad_norm_actor_cnn": 0.0,
        }

    # --- structure ------------------------------------------------------------------------------
    def _named_modules(self) -> dict[str, torch.nn.Module]:
        """Every network under its state-dict name."""
        return {
            **self.encoders.named_online(), "actor": self.actor, "critic": self.critic,
            **self.encoders.named_targets(), "actor_target": self.actor_target,
            "critic_target": self.critic_target,
        }

    def _named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, **self.encoders.optimizers()}

    # --- acting ---------------------------------------------------------------------------------
    def _tensor(self, x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    @property
    def action_limit(self) -> float:
        """PolicyWeights.action_limit: the limiter's clip while active, 0 = no limit."""
        return self.limiter.current_limit

    def act(self, frames: Any, kinematics: Any, explore: bool, env_step: int = 0) -> np.ndarray:
        """Actions for one stack ((4, 84, 84) + (23,) -> (2,)) or a batch ((B, ...) -> (B, 2)).

        explore: the training action of `exploration` (Gaussian noise with the schedule's std at
        env step `env_step`, clipped to +-max_action); else the deterministic actor. The active
        action limit is applied last either way, so it also bounds the noise.
        """
        frames_t = self._tensor(frames)
        kin_t = self._tensor(kinematics, torch.float32)
        single = frames_t.dim() == 3
        if single:
            frames_t, kin_t = frames_t.unsqueeze(0), kin_t.unsqueeze(0)
        with torch.inference_mode():
            actions = self.policy(frames_t, kin_t).cpu().numpy()
        if explore:
            actions = self.exploration.action(actions, env_step)
        else:
            actions = self.limiter.apply(actions).astype(np.float32)
        return actions[0] if single else actions

    def record_episode_length(self, length: int) -> None:
        """Tell the action limiter an episode ended after `length` steps."""
        self.limiter.record_episode(length)

    def record_env_steps(self, steps: int) -> None:
        """Tell the action limiter `steps` transitions were added to replay: its healthy span and
        its lift's ramp are counted in env steps, so every runner that feeds replay must call this."""
        self.limiter.observe_env_steps(steps)

    # --- learning -------------------------------------------------------------------------------
    def _clip(self, params: list[torch.nn.Parameter]) -> float:
        """Clip the gradient norm of one part to grad_clip; return the norm before clipping."""
        if self.config.grad_clip is None:
            return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        return float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip, foreach=True))

    def _step(self, loss: torch.Tensor, parts: list[Part]) -> dict[str, float]:
        """Backpropagate `loss` into `parts`, clip each part on its own, step their optimizers.
        Returns each part's pre-clip gradient norm as grad_norm_<part>."""
        for part in parts:
            part.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms = {f"grad_norm_{part.name}": self._clip(part.params) for part in parts}
        for part in parts:
            part.optimizer.step()
        return norms

    @torch.no_grad()
    def _soft_update(self) -> None:
        # Soft target updates: every target trails its online twin by tau (Polyak averaging).
        for online, target in self._soft_pairs:
            torch._foreach_lerp_(target, online, self.config.tau)

    def _executed_limit(self) -> float:
        """The bound of the actions the car executes: the active limit, else max_action."""
        return self.limiter.current_limit or self.config.max_action

    def _batch_tensors(
        self, batch: Any
    ) -> tuple[Observation, torch.Tensor, torch.Tensor, torch.Tensor, Observation]:
        """(obs, actions, rewards, bootstrap, next_obs); rewards and bootstrap are (B, 1), with
        bootstrap = (1 - terminated) * gamma^k (k = 1, or the batch's n-step `discounts`)."""
        c = self.config
        discounts = getattr(batch, "discounts", None)
        if discounts is None and c.n_step > 1:
            raise ValueError(
                f"TD3Config.n_step = {c.n_step} needs n-step batches (with `discounts`): "
                f"sample with FrameReplayBuffer.sample(batch_size, n_step={c.n_step}, gamma=...)"
            )
        # Normalized once per batch here, then shared by the CNNs that read it.
        obs = Observation(NatureCNN.prepare(self._augment(self._tensor(batch.frames))),
                          self._tensor(batch.kinematics, torch.float32))
        actions = self._tensor(batch.actions, torch.float32)
        rewards = self._tensor(batch.rewards, torch.float32).view(-1, 1)
        next_obs = Observation(NatureCNN.prepare(self._augment(self._tensor(batch.next_frames))),
                               self._tensor(batch.next_kinematics, torch.float32))
        not_done = 1.0 - self._tensor(batch.terminated, torch.float32).view(-1, 1)
        gamma = c.gamma if discounts is None else self._tensor(discounts, torch.float32).view(-1, 1)
        return obs, actions, rewards, not_done * gamma, next_obs

    def update(self, batch: Any) -> dict[str, float]:
        """One TD3 update on a ReplayBatch (numpy arrays or tensors). Returns scalars:
        critic_loss, actor_loss (only when the actor was updated), q_mean, target_q_mean,
        td_error, grad_norm_{actor,actor_cnn,critic,critic_cnn} (pre-clip), cnn_l2 (per sample,
        the larger of the two CNNs), actor_cnn_l2, critic_cnn_l2, cnn_features_mean/std (the
        actor's features), lr_{actor,actor_cnn,critic,critic_cnn}, saturated_share (raw actor
        outputs with |a| > 0.99 max_action on the batch), action_limit_active, action_limit,
        actor_updated, lr_cut (1 when the monitor cut the CNN LRs now); every weight_norms_every
        updates also weight_norm/<cnn>/<param>.
        Actor-side values are from the latest actor update (0 before the first);
        with encoder_grad="critic_only", grad_norm_actor_cnn and lr_actor_cnn are 0.
        """
        obs, actions, rewards, bootstrap, next_obs = self._batch_tensors(batch)
        self.updates += 1  # counted once the batch converted: a malformed batch is not an update

        metrics, critic_features = self._update_critic(obs, actions, rewards, bootstrap, next_obs)
        raw_actions = None
        # Delayed policy updates: the actor and the targets move once per policy_delay critic steps.
        if self.updates % self.config.policy_delay == 0:
            actor_metrics, raw_actions = self._update_actor(obs, critic_features)
            self._soft_update()
            metrics["actor_loss"] = actor_metrics.pop("actor_loss")
            self._actor_stats.update(actor_metrics)
        metrics.update(self._actor_stats)
        critic_cnn_l2 = metrics["critic_cnn_l2"]
        metrics["actor_cnn_l2"] = self.encoders.actor_cnn_l2(critic_cnn_l2, metrics["actor_cnn_l2"])
        metrics["cnn_l2"] = max(metrics["actor_cnn_l2"], critic_cnn_l2)
        metrics.update(self._update_stabilizers(metrics["cnn_l2"], raw_actions))
        metrics.update(self._telemetry(metrics))
        return metrics

    def _update_critic(
        self, obs: Observation, actions: torch.Tensor, rewards: torch.Tensor, bootstrap: torch.Tensor,
        next_obs: Observation,
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One critic step. Returns its metrics and the critic's features of obs, detached."""
        c = self.config
        limit = self._executed_limit()
        with torch.no_grad():
            next_features, next_actor_features = self.encoders.target_features(next_obs.frames)
            # Target policy smoothing: clipped noise on the target action.
            noise = torch.randn(actions.shape, generator=self._generator, device=self.device)
            noise = (noise * c.policy_noise * c.max_action).clamp(
                -c.noise_clip * c.max_action, c.noise_clip * c.max_action
            )
            # While the limiter is active the car executes clip(pi(s'), +-limit): bootstrap from
            # that action, not from one the behaviour never takes and the critic never saw.
            next_actions = (self.actor_target(next_actor_features, next_obs.kinematics) + noise).clamp(
                -limit, limit
            )
            # Clipped double Q-learning: bootstrap from the smaller of the two target critics.
            target_q1, target_q2 = self.critic_target(next_features, next_obs.kinematics, next_actions)
            target_q = rewards + bootstrap * torch.min(target_q1, target_q2)

        features = self.encoders.encode(self.critic_encoder, obs.frames)
        q1, q2 = self.critic(features, obs.kinematics, actions)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        grad_norms = self._step(critic_loss, self._critic_parts)

        features = features.detach()
        return {
            "critic_loss": critic_loss.item(),
            "q_mean": q1.mean().item(),
            "target_q_mean": float(target_q.mean()),
            "td_error": float((q1.detach() - target_q).abs().mean()),
            **grad_norms,
            "critic_cnn_l2": per_sample_l2(features),
        }, features

    def _update_actor(
        self, obs: Observation, critic_features: torch.Tensor
    ) -> tuple[dict[str, float], np.ndarray]:
        """One actor step on the critic step's (detached) features. Returns its metrics and the
        raw (pre-limit) actor outputs on the batch."""
        c = self.config
        limit = self._executed_limit()
        actor_features = self.encoders.actor_features(obs.frames, critic_features)
        raw_actions = self.actor(actor_features, obs.kinematics)
        # Score the action the car executes, clip(pi(s), +-limit): the critic has data only
        # inside the limit, and asking it about |a| up to 1 let its extrapolation drive the
        # tanh into saturation, which in turn kept the limiter's own "unsaturated" criterion
        # from ever holding. The clip has no gradient outside, so a squared penalty on the
        # excess pulls the output back inside. Without an active limit both are identities.
        executed = raw_actions.clamp(-limit, limit)
        excess = (raw_actions.abs() - limit).clamp(min=0.0)
        # Deterministic policy gradient through Q1 only, as TD3.
        actor_loss = (-self.critic.q1(critic_features, obs.kinematics, executed).mean()
                      + LIMIT_PENALTY * excess.pow(2).sum(dim=1).mean())
        grad_norms = self._step(actor_loss, self._actor_parts)

        actor_features, raw_actions = actor_features.detach(), raw_actions.detach()
        saturated = raw_actions.abs() > c.limiter_saturation * c.max_action
        return {
            "actor_loss": actor_loss.item(),
            "actor_cnn_l2": per_sample_l2(actor_features),
            "cnn_features_mean": float(actor_features.mean()),
            "cnn_features_std": float(actor_features.std()),
            "saturated_share": float(saturated.float().mean()),
            **grad_norms,
        }, raw_actions.cpu().numpy()

    def _update_stabilizers(self, cnn_l2: float, raw_actions: np.ndarray | None) -> dict[str, float]:
        """The monitor may cut the CNN LRs, the limiter may lift itself; returns their state."""
        cuts = self.monitor.observe(cnn_l2, self.updates)
        self.limiter.observe_update(cnn_l2, raw_actions)
        lrs = {name: opt.param_groups[0]["lr"] for name, opt in self._named_optimizers().items()}
        return {
            "lr_actor": lrs["actor"], "lr_actor_cnn": lrs.get("actor_cnn", 0.0),
            "lr_critic": lrs["critic"], "lr_critic_cnn": lrs["critic_cnn"],
            "action_limit_active": float(self.limiter.active), "action_limit": self.limiter.current_limit,
            "actor_updated": float(raw_actions is not None), "lr_cut": float(bool(cuts)),
        }

    def _telemetry(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Periodic logs; every weight_norms_every updates the CNN weight norms (returned)."""
        if self.monitor.stats_due(self.updates):
            self.monitor.report_stats(self.updates, metrics)
        if not self.monitor.weight_norms_due(self.updates):
            return {}
        if self.limiter.active:
            log.info("update %d: action limit still active: %s", self.updates, self.limiter.describe())
        return self.monitor.report_weight_norms(self.updates, self.encoders.cnns())

    # --- weights and state ----------------------------------------------------------------------
    def actor_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly what a policy node loads into PolicyNetwork: `encoder.*` and `actor.*`, CPU,
        contiguous copies (safe to hand to another thread or to encode_policy_weights)."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically. Tensors alias the live ones (torch
        convention): serialize before the next update()."""
        return {
            "config": self.config.to_dict(),
            "updates": self.updates,
            "modules": {name: m.state_dict() for name, m in self._named_modules().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self._named_optimizers().items()},
            "monitor": self.monitor.state_dict(),
            "limiter": self.limiter.state_dict(),
            "rng": {"torch": self._generator.get_state(), "numpy": self._np_rng.bit_generator.state},
            "actor_stats": dict(self._actor_stats),
        }

    @staticmethod
    def _from_before_the_kinematics_scale(state: Mapping[str, Any]) -> Mapping[str, Any]:
        """A checkpoint saved before `scale_kinematics` existed is one whose networks took raw
        metres: it reads as scale_kinematics false, with divisors of ones. Any other is unchanged."""
        config = state.get("config", {})
        if "scale_kinematics" in config or "modules" not in state:
            return state
        modules = {}
        for name, module in state["modules"].items():
            module = dict(module)
            if "l1.weight" in module:  # an actor or critic MLP (the CNNs have conv layers)
                module.setdefault("kinematics_scale", kinematics_scale(scaled=False))
            modules[name] = module
        return {**state, "config": {**config, "scale_kinematics": False}, "modules": modules}

    def architecture_mismatches(self, state: Mapping[str, Any]) -> list[str]:
        """What differs between a state dict's architecture and this learner's ([] = none)."""
        state = self._from_before_the_kinematics_scale(state)
        problems = []
        config = state.get("config", {})
        for key in ARCHITECTURE_KEYS:
            if key in config and config[key] != getattr(self.config, key):
                problems.append(f"{key}: checkpoint {config[key]!r}, learner {getattr(self.config, key)!r}")
        ours = {name: m.state_dict() for name, m in self._named_modules().items()}
        theirs = state.get("modules", {})
        if set(ours) != set(theirs):
            missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
            problems.append(f"modules missing in checkpoint: {missing}, unexpected in checkpoint: {extra}")
        for name in sorted(set(ours) & set(theirs)):
            mine, other = ours[name], theirs[name]
            for key in sorted(set(mine) | set(other)):
                if key not in other:
                    problems.append(f"{name}.{key}: missing in checkpoint (learner {tuple(mine[key].shape)})")
                elif key not in mine:
                    problems.append(f"{name}.{key}: unexpected in checkpoint ({tuple(other[key].shape)})")
                elif tuple(mine[key].shape) != tuple(other[key].shape) or mine[key].dtype != other[key].dtype:
                    problems.append(
                        f"{name}.{key}: checkpoint {tuple(other[key].shape)} {other[key].dtype}, "
                        f"learner {tuple(mine[key].shape)} {mine[key].dtype}"
                    )
        return problems

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = self._from_before_the_kinematics_scale(state)
        problems = self.architecture_mismatches(state)
        if problems:
            raise ArchitectureMismatch(
                "checkpoint architecture differs from this learner: " + "; ".join(problems[:12])
                + (f"; ... {len(problems) - 12} more" if len(problems) > 12 else "")
            )
        for name, module in self._named_modules().items():
            module.load_state_dict(state["modules"][name])
        optimizers = self._named_optimizers()
        if set(optimizers) != set(state["optimizers"]):
            raise ArchitectureMismatch(
                f"optimizers differ: checkpoint {sorted(state['optimizers'])}, learner {sorted(optimizers)}"
            )
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            _match_param_layout(opt)
        self.updates = int(state["updates"])
        self.monitor.load_state_dict(state["monitor"])
        self.limiter.load_state_dict(state["limiter"])
        self._generator.set_state(state["rng"]["torch"].to(torch.uint8).cpu())
        self._np_rng.bit_generator.state = state["rng"]["numpy"]
        self._actor_stats = {k: float(v) for k, v in state["actor_stats"].items()}
