#!/usr/bin/env python3
"""Where the critic's pre-clip gradient norm comes from: raw-metre kinematics vs divided ones.

The demo's stability report counts pre-clip gradient norms below the clip of 10; the critic's sits
at ~10 from its first updates (docs/benchmarks.md 11h). This bench learns on the embedded track in
process (the learning bench's loop: the learner's own exploration, replay, limiter) with
`scale_kinematics` false and true, same seed and env steps, and splits the critic's squared
gradient norm by where it lands:
    l1/l4 kinematic columns  the first layers' weights that read the 23 kinematics
    l1/l4 feature columns    ... that read the 512 CNN features
    l1/l4 action columns     ... that read the 2 actions
    the rest                 biases, l2/l5, l3/l6
Measured on critic-only updates (an actor update back-propagates through the critic and leaves
its gradient there). The clip scales every gradient of a part by one factor, so the pre-clip
split is the post-clip one divided by it.

    python bench/critic_gradient.py --steps 6000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from av_td3_ros.atomic_file import write_atomic
from av_td3_ros.learning import FrameReplayBuffer, TD3Config, TD3Learner
from av_td3_ros.model.networks import FEATURE_DIM, KINEMATICS_DIM
from av_td3_ros.sim.gym_env import DrivingEnv, demo_reward
from av_td3_ros.sim.simulator import SimConfig

LEARNING_STARTS = 1000
BATCH = 128  # the demo's
BLOCKS = ("kinematic columns", "feature columns", "action columns", "rest")


def split(learner: TD3Learner, pre_clip_norm: float) -> dict[str, float]:
    """Pre-clip squared gradient norm of the critic MLP per block."""
    clip = learner.config.grad_clip
    factor = min(1.0, clip / (pre_clip_norm + 1e-6)) if clip else 1.0
    kin = FEATURE_DIM + KINEMATICS_DIM
    sums = dict.fromkeys(BLOCKS, 0.0)
    firsts = {id(learner.critic.l1.weight), id(learner.critic.l4.weight)}
    for p in learner.critic.parameters():
        g = (p.grad / factor).double()
        if id(p) in firsts:
            sums["feature columns"] += float(g[:, :FEATURE_DIM].pow(2).sum())
            sums["kinematic columns"] += float(g[:, FEATURE_DIM:kin].pow(2).sum())
            sums["action columns"] += float(g[:, kin:].pow(2).sum())
        else:
            sums["rest"] += float(g.pow(2).sum())
    return sums


def run(scale_kinematics: bool, args) -> dict:
    learner = TD3Learner(TD3Config(batch_size=BATCH, seed=args.seed, scale_kinematics=scale_kinematics))
    replay = FrameReplayBuffer(args.steps + 10, seed=args.seed)
    env = DrivingEnv(SimConfig(seed=args.seed), demo_reward())
    obs, _ = env.reset(seed=args.seed)
    replay.start_episode(0, obs["frames"][-1], obs["kinematics"])
    rows, inputs, started = [], [], time.perf_counter()
    every = max(1, round(1 / args.utd))
    for step in range(args.steps):
        action = (learner.exploration.action(None, step) if learner.updates == 0 else
                  learner.act(obs["frames"], obs["kinematics"], explore=True, env_step=step))
        obs, reward, terminated, truncated, info = env.step(action)
        replay.add_step(0, action, reward, obs["frames"][-1], obs["kinematics"], terminated, truncated)
        learner.record_env_steps(1)
        if terminated or truncated:
            learner.record_episode_length(info["episode_step"])
            obs = env.reset()[0]
            replay.start_episode(0, obs["frames"][-1], obs["kinematics"])
        if step < LEARNING_STARTS or step % every:
            continue
        batch = replay.sample(BATCH)
        metrics = learner.update(batch)
        if metrics["actor_updated"]:
            continue
        sums = split(learner, metrics["grad_norm_critic"])
        kinematics = torch.as_tensor(batch.kinematics) / learner.critic.kinematics_scale
        rows.append({"update": learner.updates, "env_step": step + 1, "critic": metrics["grad_norm_critic"],
                     "critic_cnn": metrics["grad_norm_critic_cnn"], "td_error": metrics["td_error"], **sums})
        inputs.append(float(kinematics.norm(dim=1).median()))
    env.close()
    return {"scale_kinematics": scale_kinematics, "rows": rows,
            "kinematics_input_l2_median": float(np.median(inputs)),
            "minutes": (time.perf_counter() - started) / 60}


def summarize(result: dict, parts: int = 4) -> list[str]:
    rows = result["rows"]
    label = "divided" if result["scale_kinematics"] else "raw metres"
    lines = [f"{label}: kinematics entering the critic, per-sample L2 median "
             f"{result['kinematics_input_l2_median']:.2f} (the 512 LayerNorm'd features: ~22.6)"]
    for i in range(parts):
        part = rows[i * len(rows) // parts:(i + 1) * len(rows) // parts]
        if not part:
            continue
        total = np.array([sum(r[b] for b in BLOCKS) for r in part])
        share = {b: float(np.median(np.array([r[b] for r in part]) / total)) for b in BLOCKS}
        critic = np.array([r["critic"] for r in part])
        cnn = np.array([r["critic_cnn"] for r in part])
        lines.append(
            f"  updates {part[0]['update']:>5}-{part[-1]['update']:<5} critic norm median "
            f"{np.median(critic):6.2f} (< 10: {np.mean(critic < 10):4.0%}), critic CNN {np.median(cnn):6.2f} "
            f"(< 10: {np.mean(cnn < 10):4.0%}), |TD| {np.median([r['td_error'] for r in part]):.2f}; "
            "share of the critic's norm^2: " + ", ".join(f"{b} {share[b]:.0%}" for b in BLOCKS))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000, help="env steps per arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utd", type=float, default=0.2, help="updates per env step after learning starts")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=f"runs/critic_gradient-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"critic gradient split: {args.steps} env steps per arm, seed {args.seed}, utd {args.utd}, "
          f"batch {BATCH}; torch {torch.__version__}", flush=True)
    results = [run(False, args), run(True, args)]
    for result in results:
        print("\n".join(summarize(result)), flush=True)
    raw, divided = (np.median([r["critic"] for r in res["rows"]]) for res in results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps({"args": vars(args), "results": results}).encode())
    print(f"critic pre-clip norm median, raw / divided: {raw:.2f} / {divided:.2f} = {raw / divided:.2f}x; "
          f"written: {out}")


if __name__ == "__main__":
    main()
