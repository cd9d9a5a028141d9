"""TD3Learner: TD3 (Fujimoto et al. 2018, after sfujim/TD3) on 4x84x84 frames + 23 kinematics,
with every stabilizer of the design measurable and switchable (see TD3Config).

One update():
  critic: y = r + gamma * (1 - terminated) * min(Q1', Q2')(s', clip(pi'(s') + clipped noise)),
          loss = MSE(Q1, y) + MSE(Q2, y); critic MLP and critic CNN each clipped to grad_clip.
  every policy_delay updates: actor loss = -Q1(s, pi(s)); actor MLP and actor CNN clipped; then
          every target network moves tau towards its online twin.
The actor loss reads the critic's features of this update's critic step, detached (as DrQ-v2):
the critic CNN is never trained by the actor loss, and one CNN forward pass is saved.
With encoder_grad="critic_only" there is one CNN, trained by the critic loss only; the actor
reads its features detached (DrQ-v2, SAC-AE) and there is no actor CNN optimizer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from av_td3_ros.learning.action_limiter import ActionLimiter
from av_td3_ros.learning.config import TD3Config
from av_td3_ros.learning.monitor import FeatureNormMonitor, per_sample_l2
from av_td3_ros.model import NatureCNN, PolicyNetwork, TwinCritic

log = logging.getLogger("av_td3_ros.learning.td3")

# Config fields that change the tensors a learner holds: a checkpoint must agree on them.
ARCHITECTURE_KEYS = ("encoder_grad", "cnn_norm", "in_frames")
# Weight of the squared actor output beyond the active action limit in the actor loss. Outside the
# limit it is the only gradient (the clip has none), so any positive weight pulls the output back.
LIMIT_PENALTY = 1.0


class ArchitectureMismatch(ValueError):
    """A state dict or checkpoint of another architecture; the message names the mismatch."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _params(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


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


class TD3Learner:
    """The stabilized TD3 learner. Not thread-safe: call act/update/state_dict from one thread.

    Attributes: config, device, updates (number of update() calls), policy (PolicyNetwork:
    `.encoder` + `.actor`), actor_encoder, actor, critic_encoder, critic and their *_target
    twins, the four optimizers (actor_cnn_optimizer is None with encoder_grad="critic_only"),
    monitor (FeatureNormMonitor), limiter (ActionLimiter).
    """

    def __init__(self, config: TD3Config | None = None):
        self.config = c = config or TD3Config()
        c.validate()
        self.device = resolve_device(c.device)
        self.shared_encoder = c.encoder_grad == "critic_only"

        # One seed (None = fresh OS entropy) -> independent streams for the initial weights, the
        # target-policy noise (torch) and the exploration noise (numpy). The process's global
        # torch RNG is left untouched.
        seeds = np.random.SeedSequence(c.seed)
        init_seed, noise_seed = (int(s) for s in seeds.generate_state(2))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.policy = PolicyNetwork(norm=c.cnn_norm, max_action=c.max_action, in_frames=c.in_frames)
            self.critic = TwinCritic()
            if not self.shared_encoder:
                self.critic_encoder = NatureCNN(in_frames=c.in_frames, norm=c.cnn_norm)
        self.actor_encoder, self.actor = self.policy.encoder, self.policy.actor
        if self.shared_encoder:
            self.critic_encoder = self.actor_encoder
        self.policy.to(self.device)
        self.critic.to(self.device)
        self.critic_encoder.to(self.device)

        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_encoder_target = copy.deepcopy(self.critic_encoder)
        self.actor_encoder_target = (
            self.critic_encoder_target if self.shared_encoder else copy.deepcopy(self.actor_encoder)
        )
        for target in self._targets():
            target.requires_grad_(False)
        # (online, target) parameter lists for the soft update
        self._soft_pairs = [
            (_params(online), _params(target))
            for online, target in zip(self._onlines(), self._targets(), strict=True)
        ]

        fused = c.fused_adam and self.device.type in ("cpu", "cuda")

        def adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)

        self._actor_params = _params(self.actor)
        self._critic_params = _params(self.critic)
        self._critic_cnn_params = _params(self.critic_encoder)
        self._actor_cnn_params = [] if self.shared_encoder else _params(self.actor_encoder)
        self.actor_optimizer = adam(self._actor_params, c.actor_lr)
        self.critic_optimizer = adam(self._critic_params, c.critic_lr)
        # Weight decay on exactly the two CNN optimizers.
        self.critic_cnn_optimizer = adam(self._critic_cnn_params, c.critic_cnn_lr, c.cnn_weight_decay)
        self.actor_cnn_optimizer: torch.optim.Adam | None = (
            None if self.shared_encoder else adam(self._actor_cnn_params, c.actor_cnn_lr, c.cnn_weight_decay)
        )

        self.monitor = FeatureNormMonitor.from_config(
            c, {name: opt for name, opt in self._named_optimizers().items() if name.endswith("_cnn")}
        )
        self.limiter = ActionLimiter.from_config(c)

        # Every random draw of the learner comes from these two (saved in checkpoints).
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(noise_seed)
        self._np_rng = np.random.default_rng(seeds.spawn(1)[0])

        self.updates = 0
        # Actor-side numbers are measured on actor updates (every policy_delay) and carried over.
        self._actor_stats = {
            "actor_cnn_l2": 0.0, "cnn_features_mean": 0.0, "cnn_features_std": 0.0,
            "saturated_share": 0.0, "grad_norm_actor": 0.0, "grad_norm_actor_cnn": 0.0,
        }

    # --- structure ------------------------------------------------------------------------------
    def _named_modules(self) -> dict[str, torch.nn.Module]:
        if self.shared_encoder:
            return {
                "encoder": self.critic_encoder, "actor": self.actor, "critic": self.critic,
                "encoder_target": self.critic_encoder_target, "actor_target": self.actor_target,
                "critic_target": self.critic_target,
            }
        return {
            "actor_encoder": self.actor_encoder, "actor": self.actor,
            "critic_encoder": self.critic_encoder, "critic": self.critic,
            "actor_encoder_target": self.actor_encoder_target, "actor_target": self.actor_target,
            "critic_encoder_target": self.critic_encoder_target, "critic_target": self.critic_target,
        }

    def _onlines(self) -> list[torch.nn.Module]:
        onlines = [self.actor, self.critic, self.critic_encoder]
        return onlines if self.shared_encoder else [*onlines, self.actor_encoder]

    def _targets(self) -> list[torch.nn.Module]:
        targets = [self.actor_target, self.critic_target, self.critic_encoder_target]
        return targets if self.shared_encoder else [*targets, self.actor_encoder_target]

    def _named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"actor": self.actor_optimizer}
        if self.actor_cnn_optimizer is not None:
            optimizers["actor_cnn"] = self.actor_cnn_optimizer
        optimizers["critic"] = self.critic_optimizer
        optimizers["critic_cnn"] = self.critic_cnn_optimizer
        return optimizers

    def _encoders(self) -> dict[str, torch.nn.Module]:
        if self.shared_encoder:
            return {"encoder": self.critic_encoder}
        return {"actor_cnn": self.actor_encoder, "critic_cnn": self.critic_encoder}

    # --- acting ---------------------------------------------------------------------------------
    def _tensor(self, x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    @property
    def action_limit(self) -> float:
        """PolicyWeights.action_limit: the limiter's clip while active, 0 = no limit."""
        return self.limiter.current_limit

    def act(self, frames: Any, kinematics: Any, explore: bool) -> np.ndarray:
        """Actions for one stack ((4, 84, 84) + (23,) -> (2,)) or a batch ((B, ...) -> (B, 2)).

        explore adds Gaussian noise (exploration_noise * max_action). The active action limit
        is applied last, so it also bounds the noise.
        """
        frames_t = self._tensor(frames)
        kin_t = self._tensor(kinematics, torch.float32)
        single = frames_t.dim() == 3
        if single:
            frames_t, kin_t = frames_t.unsqueeze(0), kin_t.unsqueeze(0)
        with torch.inference_mode():
            actions = self.policy(frames_t, kin_t).cpu().numpy()
        if explore:
            max_action = self.config.max_action
            noise = self._np_rng.normal(0.0, self.config.exploration_noise * max_action, size=actions.shape)
            actions = np.clip(actions + noise, -max_action, max_action)
        actions = self.limiter.apply(actions).astype(np.float32)
        return actions[0] if single else actions

    def record_episode_length(self, length: int) -> None:
        """Tell the action limiter an episode ended after `length` steps."""
        self.limiter.record_episode(length)

    # --- learning -------------------------------------------------------------------------------
    def _clip(self, params: list[torch.nn.Parameter]) -> float:
        """Clip the gradient norm of one part to grad_clip; return the norm before clipping."""
        if not params:
            return 0.0
        if self.config.grad_clip is None:
            return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        return float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip, foreach=True))

    @torch.no_grad()
    def _soft_update(self) -> None:
        for online, target in self._soft_pairs:
            torch._foreach_lerp_(target, online, self.config.tau)

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
        c = self.config
        # Normalized once per batch here, then shared by the CNNs that read it.
        frames = NatureCNN.prepare(self._tensor(batch.frames))
        kinematics = self._tensor(batch.kinematics, torch.float32)
        actions = self._tensor(batch.actions, torch.float32)
        rewards = self._tensor(batch.rewards, torch.float32).view(-1, 1)
        next_frames = NatureCNN.prepare(self._tensor(batch.next_frames))
        next_kinematics = self._tensor(batch.next_kinematics, torch.float32)
        not_done = 1.0 - self._tensor(batch.terminated, torch.float32).view(-1, 1)
        self.updates += 1  # counted once the batch converted: a malformed batch is not an update

        with torch.no_grad():
            next_features = self.critic_encoder_target(next_frames, prepared=True)
            if self.shared_encoder:
                next_actor_features = next_features
            else:
                next_actor_features = self.actor_encoder_target(next_frames, prepared=True)
            # Target policy smoothing: clipped noise on the target action.
            noise = torch.randn(actions.shape, generator=self._generator, device=self.device)
            noise = (noise * c.policy_noise * c.max_action).clamp(
                -c.noise_clip * c.max_action, c.noise_clip * c.max_action
            )
            # While the limiter is active the car executes clip(pi(s'), +-limit): bootstrap from
            # that action, not from one the behaviour never takes and the critic never saw.
            limit = self.limiter.current_limit or c.max_action
            next_actions = (self.actor_target(next_actor_features, next_kinematics) + noise).clamp(
                -limit, limit
            )
            target_q1, target_q2 = self.critic_target(next_features, next_kinematics, next_actions)
            target_q = rewards + not_done * c.gamma * torch.min(target_q1, target_q2)

        features = self.critic_encoder(frames, prepared=True)
        q1, q2 = self.critic(features, kinematics, actions)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.critic_cnn_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        grad_norm_critic = self._clip(self._critic_params)
        grad_norm_critic_cnn = self._clip(self._critic_cnn_params)
        self.critic_optimizer.step()
        self.critic_cnn_optimizer.step()

        features = features.detach()
        critic_cnn_l2 = per_sample_l2(features)
        info = {
            "critic_loss": critic_loss.item(),
            "q_mean": q1.mean().item(),
            "target_q_mean": float(target_q.mean()),
            "td_error": float((q1.detach() - target_q).abs().mean()),
            "grad_norm_critic": grad_norm_critic,
            "grad_norm_critic_cnn": grad_norm_critic_cnn,
            "critic_cnn_l2": critic_cnn_l2,
        }

        raw_actions = None
        if self.updates % c.policy_delay == 0:
            actor_features = features if self.shared_encoder else self.actor_encoder(frames, prepared=True)
            raw_actions = self.actor(actor_features, kinematics)
            # Score the action the car executes, clip(pi(s), +-limit): the critic has data only
            # inside the limit, and asking it about |a| up to 1 let its extrapolation drive the
            # tanh into saturation, which in turn kept the limiter's own "unsaturated" criterion
            # from ever holding. The clip has no gradient outside, so a squared penalty on the
            # excess pulls the output back inside. Without an active limit both are identities.
            executed = raw_actions.clamp(-limit, limit)
            excess = (raw_actions.abs() - limit).clamp(min=0.0)
            actor_loss = (-self.critic.q1(features, kinematics, executed).mean()
                          + LIMIT_PENALTY * excess.pow(2).sum(dim=1).mean())
            self.actor_optimizer.zero_grad(set_to_none=True)
            if self.actor_cnn_optimizer is not None:
                self.actor_cnn_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            grad_norm_actor = self._clip(self._actor_params)
            grad_norm_actor_cnn = self._clip(self._actor_cnn_params)
            self.actor_optimizer.step()
            if self.actor_cnn_optimizer is not None:
                self.actor_cnn_optimizer.step()
            self._soft_update()

            actor_features = actor_features.detach()
            raw_actions = raw_actions.detach()
            self._actor_stats = {
                "actor_cnn_l2": per_sample_l2(actor_features),
                "cnn_features_mean": float(actor_features.mean()),
                "cnn_features_std": float(actor_features.std()),
                "saturated_share": float((raw_actions.abs() > c.limiter_saturation * c.max_action)
                                         .float().mean()),
                "grad_norm_actor": grad_norm_actor,
                "grad_norm_actor_cnn": grad_norm_actor_cnn,
            }
            info["actor_loss"] = actor_loss.item()
            raw_actions = raw_actions.cpu().numpy()
        info.update(self._actor_stats)
        if self.shared_encoder:
            info["actor_cnn_l2"] = critic_cnn_l2  # one CNN
        cnn_l2 = max(info["actor_cnn_l2"], critic_cnn_l2)
        info["cnn_l2"] = cnn_l2

        # Stabilizers: the monitor may cut the CNN LRs, the limiter may lift itself.
        cuts = self.monitor.observe(cnn_l2, self.updates)
        self.limiter.observe_update(cnn_l2, raw_actions)
        lrs = {name: opt.param_groups[0]["lr"] for name, opt in self._named_optimizers().items()}
        info.update(
            lr_actor=lrs["actor"], lr_actor_cnn=lrs.get("actor_cnn", 0.0),
            lr_critic=lrs["critic"], lr_critic_cnn=lrs["critic_cnn"],
            action_limit_active=float(self.limiter.active), action_limit=self.limiter.current_limit,
            actor_updated=float(raw_actions is not None), lr_cut=float(bool(cuts)),
        )
        if self.monitor.stats_due(self.updates):
            self.monitor.report_stats(self.updates, info)
        if self.monitor.weight_norms_due(self.updates):
            info.update(self.monitor.report_weight_norms(self.updates, self._encoders()))
            if self.limiter.active:
                log.info("update %d: action limit still active: %s", self.updates, self.limiter.describe())
        return info

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

    def architecture_mismatches(self, state: Mapping[str, Any]) -> list[str]:
        """What differs between a state dict's architecture and this learner's ([] = none)."""
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
