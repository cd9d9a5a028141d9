"""What a demo run prints and leaves behind: the evaluation table, the stability report (the design's
success criteria, each PASS/FAIL with its measured value) and learning_curve.png. No ROS.

The training-side numbers come from the trainer's TensorBoard events (every `metrics_every`
updates), not from 1 Hz status samples, so "throughout" really means every logged update.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from av_td3_ros.learning.metrics import TAGS

__all__ = ["Check", "read_scalars", "stability_checks", "format_table", "plot_learning_curve"]

GRAD_TAGS = [
    TAGS[k] for k in ("grad_norm_actor", "grad_norm_actor_cnn", "grad_norm_critic", "grad_norm_critic_cnn")
]
L2_TAGS = [TAGS["actor_cnn_l2"], TAGS["critic_cnn_l2"]]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: could not be measured (says why in `measured`)
    measured: str

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]


def read_scalars(log_dir: Path) -> dict[str, np.ndarray]:
    """tag -> (N, 2) array of (step, value) from every TensorBoard event file under log_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: np.asarray(sorted(rows), dtype=np.float64) for tag, rows in out.items()}


def stability_checks(
    scalars: dict[str, np.ndarray],
    evaluation,
    *,
    l2_healthy: float = 30.0,
    grad_clip: float = 10.0,
    grad_share: float = 0.9,
    min_length: float = 100.0,
    max_saturated: float = 0.05,
    min_speed: float = 2.0,
) -> list[Check]:
    checks = []
    l2 = [scalars[t][:, 1] for t in L2_TAGS if t in scalars and len(scalars[t])]
    if l2:
        values = np.concatenate(l2)
        peak = float(values.max())
        checks.append(
            Check(
                f"per-sample CNN L2 < {l2_healthy:g} throughout",
                peak < l2_healthy,
                f"max {peak:.2f} over {len(values)} logged values (first {values[0]:.2f})",
            )
        )
    else:
        checks.append(Check(f"per-sample CNN L2 < {l2_healthy:g} throughout", None, "no update was logged"))
    grads = [scalars[t][:, 1] for t in GRAD_TAGS if t in scalars and len(scalars[t])]
    grads = [g[g > 0] for g in grads]  # 0 = a part that was not trained (critic_only mode)
    if grads and sum(len(g) for g in grads):
        values = np.concatenate(grads)
        share = float((values < grad_clip).mean())
        checks.append(
            Check(
                f"pre-clip grad norms mostly < {grad_clip:g} (>= {grad_share:.0%})",
                share >= grad_share,
                f"{share:.1%} below, max {values.max():.1f}",
            )
        )
    else:
        checks.append(Check(f"pre-clip grad norms mostly < {grad_clip:g}", None, "no update was logged"))
    sat = evaluation.saturated_share
    std = evaluation.action_std
    checks.append(
        Check(
            f"actions not saturated (|a| > 0.99 below {max_saturated:.0%}, std > 0.05)",
            sat < max_saturated and std > 0.05,
            f"{sat:.1%} saturated, min std {std:.3f}",
        )
    )
    checks.append(
        Check(
            f"mean evaluation episode length > {min_length:g}",
            evaluation.mean_length > min_length,
            f"{evaluation.mean_length:.1f} steps",
        )
    )
    # Not one of the design's criteria, but without it a car that learned to stand still passes
    # them all: no saturation needed, no crash, and a long episode until the stuck cut.
    checks.append(
        Check(
            f"it drives: mean evaluation speed > {min_speed:g} m/s",
            evaluation.mean_speed > min_speed,
            f"{evaluation.mean_speed:.2f} m/s",
        )
    )
    checks.append(
        Check(
            "no collisions in evaluation",
            evaluation.collisions == 0,
            f"{evaluation.collisions} in {len(evaluation.episodes)} episodes",
        )
    )
    return checks


def format_table(headers: list[str], rows: list[list]) -> str:
    text = [[str(h) for h in headers]] + [
        [f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows
    ]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_learning_curve(
    path: Path, episodes, scalars: dict[str, np.ndarray], random_length: float | None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [e.env_steps for e in episodes]
    for ax, values, label in (
        (axes[0], [e.ret for e in episodes], "episode return"),
        (axes[1], [e.length for e in episodes], "episode length [steps]"),
    ):
        ax.plot(steps, values, ".", alpha=0.4, label="episode")
        if len(values) >= 10:
            kernel = np.ones(10) / 10
            ax.plot(steps[9:], np.convolve(values, kernel, mode="valid"), "-", label="mean of 10")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
    if random_length is not None:
        axes[1].axhline(random_length, color="grey", linestyle="--", label="random policy")
    for ax in axes[:2]:
        ax.legend(loc="best")
    for tag, label in zip(L2_TAGS, ("actor CNN", "critic CNN"), strict=True):
        if tag in scalars and len(scalars[tag]):
            axes[2].plot(scalars[tag][:, 0], scalars[tag][:, 1], label=label)
    axes[2].axhline(30.0, color="green", linestyle="--", label="healthy < 30")
    axes[2].axhline(50.0, color="orange", linestyle="--", label="warning > 50")
    axes[2].set_xlabel("updates")
    axes[2].set_ylabel("per-sample CNN feature L2")
    axes[2].legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
