"""FeatureNormMonitor: watch the CNN feature norm per sample and cut the CNN learning rates.

Why per sample: the design computed sqrt(sum(features**2)) over the whole batch. For B rows of
similar norm r that is r * sqrt(B): a healthy-looking 65 per sample reads ~1,045 at batch 256,
most of the "1,242 explosion" the design saw during batch training. Thresholds are per sample.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from av_td3_ros.config_schema import Settings, setting_from
from av_td3_ros.learning.config import TD3Config

log = logging.getLogger("av_td3_ros.learning.monitor")

HEALTHY, ELEVATED, WARNING, FAILURE = "healthy", "elevated", "warning", "failure"


def per_sample_l2(features: torch.Tensor) -> float:
    """Mean over the batch of each row's L2 norm: the number the thresholds mean."""
    return float(torch.linalg.vector_norm(features.detach().float(), dim=1).mean())


def batch_summed_l2(features: torch.Tensor) -> float:
    """The design's misleading metric: one norm over the whole batch (grows with sqrt(B))."""
    return float(torch.linalg.vector_norm(features.detach().float()))


def layer_weight_norms(encoder: torch.nn.Module) -> dict[str, float]:
    """L2 norm of every weight tensor of a CNN, by parameter name ("conv1.weight", ...)."""
    return {
        name: float(torch.linalg.vector_norm(p.detach().float()))
        for name, p in encoder.named_parameters()
        if name.endswith("weight")
    }


@dataclass(frozen=True)
class FeatureNormConfig(Settings):
    """The monitor's settings under its own names; each is TD3Config's (default, range, doc)."""

    healthy: float = setting_from(TD3Config, "l2_healthy")
    warning: float = setting_from(TD3Config, "l2_warning")
    failure: float = setting_from(TD3Config, "l2_failure")
    adaptive_lr: bool = setting_from(TD3Config, "adaptive_lr")
    lr_factor: float = setting_from(TD3Config, "lr_cut_factor")
    cooldown: int = setting_from(TD3Config, "lr_cut_cooldown")
    lr_floor: float = setting_from(TD3Config, "lr_floor")
    stats_every: int = setting_from(TD3Config, "stats_every")
    weight_norms_every: int = setting_from(TD3Config, "weight_norms_every")


class FeatureNormMonitor:
    """Classifies per-sample feature L2 norms and halves the CNN learning rates above `warning`.

    healthy < 30 <= elevated <= 50 < warning <= 100 < failure (the design's thresholds). A cut
    multiplies every CNN optimizer's lr by `lr_factor` (0.5), at most once per `cooldown`
    updates and never below `lr_floor`, so a streak of bad batches cannot drive the LR to zero.
    Each cut is logged at WARNING with the old and new LR. Feature norm, mean and std are logged
    every `stats_every` updates, the CNN layers' weight norms every `weight_norms_every`.
    """

    def __init__(
        self,
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        config: FeatureNormConfig | None = None,
        **overrides: Any,
    ):
        """`overrides` by FeatureNormConfig's names (e.g. cooldown=10) change single settings."""
        c = dataclasses.replace(config or FeatureNormConfig(), **overrides)
        self.optimizers = dict(optimizers or {})
        self.healthy, self.warning, self.failure = c.healthy, c.warning, c.failure
        self.adaptive_lr = c.adaptive_lr
        self.lr_factor = c.lr_factor
        self.cooldown = c.cooldown
        self.lr_floor = c.lr_floor
        self.stats_every = c.stats_every
        self.weight_norms_every = c.weight_norms_every
        self.last_cut_update: int | None = None
        self.cuts = 0
        self.last_alarm_update: int | None = None
        self.last_l2 = 0.0
        self.max_l2 = 0.0

    @classmethod
    def from_config(
        cls, config: TD3Config, optimizers: Mapping[str, torch.optim.Optimizer] | None = None
    ) -> FeatureNormMonitor:
        return cls(optimizers, FeatureNormConfig.of(config))

    def classify(self, l2: float) -> str:
        if l2 > self.failure:
            return FAILURE
        if l2 > self.warning:
            return WARNING
        if l2 >= self.healthy:
            return ELEVATED
        return HEALTHY

    def _cooled_down(self, last: int | None, update: int) -> bool:
        return last is None or update - last >= self.cooldown

    def observe(self, l2: float, update: int) -> list[tuple[str, float, float]]:
        """Feed one update's per-sample L2. Returns the LR cuts made now: (optimizer, old, new)."""
        self.last_l2 = float(l2)
        self.max_l2 = max(self.max_l2, self.last_l2)
        status = self.classify(l2)
        if status == FAILURE and self._cooled_down(self.last_alarm_update, update):
            self.last_alarm_update = update
            log.error(
                "CNN feature L2 per sample %.1f > %.0f at update %d: the features are exploding",
                l2, self.failure, update,
            )
        if status not in (WARNING, FAILURE) or not self.adaptive_lr:
            return []
        if not self._cooled_down(self.last_cut_update, update):
            return []
        cuts = []
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                old = float(group["lr"])
                new = max(old * self.lr_factor, self.lr_floor)
                if new < old:
                    group["lr"] = new
                    cuts.append((name, old, new))
        if cuts:
            self.last_cut_update = update
            self.cuts += 1
            log.warning(
                "CNN feature L2 per sample %.1f > %.0f at update %d: learning rate cut %s "
                "(next cut possible after %d updates, floor %.1e)",
                l2, self.warning, update, ", ".join(f"{n} {o:.3g} -> {w:.3g}" for n, o, w in cuts),
                self.cooldown, self.lr_floor,
            )
        return cuts

    def stats_due(self, update: int) -> bool:
        return update % self.stats_every == 0

    def weight_norms_due(self, update: int) -> bool:
        return update % self.weight_norms_every == 0

    def report_stats(self, update: int, stats: Mapping[str, float]) -> None:
        """Log the norms, mean and std (every `stats_every` updates)."""
        status = self.classify(stats.get("cnn_l2", self.last_l2))
        log.info(
            "update %d: CNN feature L2 per sample %s (%s), features mean %.3f std %.3f",
            update,
            ", ".join(f"{k.removesuffix('_l2')} {stats[k]:.1f}" for k in ("actor_cnn_l2", "critic_cnn_l2")
                      if k in stats),
            status,
            stats.get("cnn_features_mean", float("nan")),
            stats.get("cnn_features_std", float("nan")),
        )

    def report_weight_norms(self, update: int, encoders: Mapping[str, torch.nn.Module]) -> dict[str, float]:
        """Weight norm of every CNN layer (every `weight_norms_every` updates): logged and returned
        as {"weight_norm/<encoder>/<param>": value}."""
        out = {}
        for enc_name, encoder in encoders.items():
            norms = layer_weight_norms(encoder)
            log.info(
                "update %d: %s weight norms: %s",
                update, enc_name, ", ".join(f"{k.removesuffix('.weight')} {v:.2f}" for k, v in norms.items()),
            )
            out.update({f"weight_norm/{enc_name}/{k}": v for k, v in norms.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_cut_update": self.last_cut_update,
            "cuts": self.cuts,
            "last_alarm_update": self.last_alarm_update,
            "last_l2": self.last_l2,
            "max_l2": self.max_l2,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_cut_update = state["last_cut_update"]
        self.cuts = int(state["cuts"])
        self.last_alarm_update = state["last_alarm_update"]
        self.last_l2 = float(state["last_l2"])
        self.max_l2 = float(state["max_l2"])
