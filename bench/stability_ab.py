"""A/B stability, the long version of test/test_stability_ab.py: per-sample CNN feature L2 over
hundreds of full TD3 updates on synthetic data, stabilized defaults vs the design's failing setup
(no LayerNorm, no weight decay, no clipping, no LR cut, no action limit, lr 1e-3 everywhere),
in both encoder_grad modes.

Usage: python bench/stability_ab.py [--updates 300] [--batch 32] [--lr 1e-3] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from av_td3_ros.learning import TD3Config, TD3Learner

REPORT_AT = (0, 10, 25, 50, 100, 200, 300, 500, 1000)


def synthetic_batches(batch: int, n: int = 16, seed: int = 0) -> list[SimpleNamespace]:
    rng = np.random.default_rng(seed)
    return [
        SimpleNamespace(
            frames=rng.integers(0, 256, (batch, 4, 84, 84), dtype=np.uint8),
            kinematics=rng.normal(size=(batch, 23)).astype(np.float32),
            actions=rng.uniform(-1, 1, (batch, 2)).astype(np.float32),
            rewards=rng.normal(size=batch).astype(np.float32),
            next_frames=rng.integers(0, 256, (batch, 4, 84, 84), dtype=np.uint8),
            next_kinematics=rng.normal(size=(batch, 23)).astype(np.float32),
            terminated=(rng.random(batch) < 0.05).astype(np.float32),
        )
        for _ in range(n)
    ]


def run(config: TD3Config, batches: list[SimpleNamespace], updates: int) -> tuple[list[float], float, float]:
    learner = TD3Learner(config)
    with torch.no_grad():
        first = torch.from_numpy(batches[0].frames)
        initial = max(
            float(torch.linalg.vector_norm(encoder(first), dim=1).mean())
            for encoder in (learner.actor_encoder, learner.critic_encoder)
        )
    start = time.perf_counter()
    norms = [initial]
    saturated = 0.0
    for i in range(updates):
        info = learner.update(batches[i % len(batches)])
        norms.append(info["cnn_l2"])
        saturated = info["saturated_share"]
    return norms, time.perf_counter() - start, saturated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="every learning rate of the unstabilized variant")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.CRITICAL)  # the monitor's explosion alarms would interleave
    batches = synthetic_batches(args.batch)
    lr = args.lr
    variants = {}
    for mode in ("separate", "critic_only"):
        variants[f"stabilized {mode}"] = TD3Config(encoder_grad=mode, batch_size=args.batch, seed=0)
        variants[f"unstabilized {mode}"] = TD3Config.unstabilized(
            encoder_grad=mode, batch_size=args.batch, seed=0,
            actor_lr=lr, critic_lr=lr, actor_cnn_lr=lr, critic_cnn_lr=lr,
        )
    points = [p for p in REPORT_AT if p <= args.updates]
    print(f"per-sample CNN feature L2 (max of actor and critic CNN), batch {args.batch}, synthetic frames")
    print(f"{'variant':>26} " + " ".join(f"{'@' + str(p):>9}" for p in points) + "   growth  sat.share  time")
    for name, config in variants.items():
        norms, seconds, saturated = run(config, batches, args.updates)
        growth = max(norms) / norms[0]
        print(f"{name:>26} " + " ".join(f"{norms[p]:9.3g}" for p in points)
              + f"  {growth:6.1f}x  {saturated:9.2f}  {seconds:4.1f}s")


if __name__ == "__main__":
    main()
