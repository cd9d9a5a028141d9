"""TD3 updates/s at batch 256: this learner (both encoder_grad modes) vs Stable-Baselines3.

Every contender samples its batches from its own replay buffer filled with the same kind of
data (random 84x84 uint8 frames in 4-stacks, random actions and rewards), so sampling is part of
each update, as it is in SB3's train(). This learner runs with every stabilization on (the
defaults: LayerNorm, CNN weight decay, grad clipping on four parts, feature-norm monitor, action
limiter). SB3: TD3 "CnnPolicy" (its NatureCNN, separate actor and critic extractors, the same
256x256 heads) on a (4, 84, 84) uint8 Box observation. Contenders take turns for several rounds
(other jobs on a shared machine then slow them alike); each reports its median round.
The default learner shifts its frames (TD3Config.augment_pad=4); `--no-augment` adds both modes
without it and `--n-step` both modes with n-step returns (TD3Config.n_step=3): what those recipe
options cost.

SB3 is a bench-only extra (requirements/bench.txt), never a runtime dependency:
    .venv/bin/pip install -c requirements/constraints.txt -r requirements/bench.txt
Without it the SB3 column is skipped with a message.

The default learner's CNN passes compute in bfloat16 where the CPU has it natively
(TD3Config.cnn_precision=auto); `--float32` adds both modes in float32, as SB3 computes.

Usage: python bench/train_throughput.py [--rounds 5] [--updates 8] [--batch 256] [--threads N]
                                        [--no-augment] [--n-step] [--float32]
The last line printed is the ratio to SB3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from av_td3_ros.learning import FrameReplayBuffer, TD3Config, TD3Learner
from av_td3_ros.learning.td3 import resolve_cnn_precision

FILL = 3000  # transitions per buffer: plenty for uniform sampling, little memory


def fill_frame_buffer(seed: int) -> FrameReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = FrameReplayBuffer(FILL + 100, seed=seed)
    buffer.start_episode("car", rng.integers(0, 256, (84, 84), dtype=np.uint8), np.zeros(23, np.float32))
    for step in range(1, FILL + 1):
        end = step % 200 == 0
        buffer.add_step("car", rng.uniform(-1, 1, 2), float(rng.normal()),
                        rng.integers(0, 256, (84, 84), dtype=np.uint8),
                        rng.normal(size=23).astype(np.float32), terminated=end, truncated=False)
        if end:
            buffer.start_episode("car", rng.integers(0, 256, (84, 84), dtype=np.uint8),
                                 np.zeros(23, np.float32))
    return buffer


def ours(batch: int, **options) -> Callable[[int], None]:
    config = TD3Config(batch_size=batch, seed=0, **options)
    learner = TD3Learner(config)
    buffer = fill_frame_buffer(seed=0)

    def run(n: int) -> None:
        for _ in range(n):
            learner.update(buffer.sample(batch, n_step=config.n_step, gamma=config.gamma))

    return run


def sb3(batch: int) -> Callable[[int], None] | str:
    try:
        import gymnasium as gym
        from stable_baselines3 import TD3
        from stable_baselines3.common.logger import configure
    except ImportError as exc:
        return (f"stable-baselines3 is not installed ({exc.name}): SB3 skipped. Install the bench extra with "
                "`.venv/bin/pip install -c requirements/constraints.txt -r requirements/bench.txt`")

    class ImageEnv(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    model = TD3("CnnPolicy", ImageEnv(), buffer_size=FILL + 100, learning_starts=0, batch_size=batch,
                policy_kwargs={"net_arch": [256, 256]}, device="cpu", seed=0, verbose=0)
    model.set_logger(configure(folder=None, format_strings=[]))
    rng = np.random.default_rng(0)
    for step in range(FILL):
        model.replay_buffer.add(
            rng.integers(0, 256, (1, 4, 84, 84), dtype=np.uint8),
            rng.integers(0, 256, (1, 4, 84, 84), dtype=np.uint8),
            rng.uniform(-1, 1, (1, 2)).astype(np.float32), np.array([rng.normal()], np.float32),
            np.array([step % 200 == 199]), [{}],
        )

    def run(n: int) -> None:
        model.train(gradient_steps=n, batch_size=batch)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=8, help="updates per contender per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: cores)")
    parser.add_argument("--no-augment", action="store_true", help="also both modes with augment_pad=0")
    parser.add_argument("--n-step", action="store_true", help="also both modes with n_step=3")
    parser.add_argument("--float32", action="store_true",
                        help="also both modes with cnn_precision=float32 (what bfloat16 CNN passes gain)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{args.rounds} rounds x {args.updates} updates; the default learner's CNN passes in "
          f"{str(resolve_cnn_precision('auto', torch.device('cpu'))).removeprefix('torch.')}")

    variants: dict[str, dict] = {"": {}}
    if args.no_augment:
        variants[" -aug"] = {"augment_pad": 0}
    if args.n_step:
        variants[" +n3"] = {"n_step": 3}
    if args.float32:
        variants[" fp32"] = {"cnn_precision": "float32"}
    contenders: dict[str, Callable[[int], None]] = {
        f"ours {mode}{suffix}": ours(args.batch, encoder_grad=mode, **options)
        for suffix, options in variants.items() for mode in ("separate", "critic_only")
    }
    sb3_run = sb3(args.batch)
    if isinstance(sb3_run, str):
        print(sb3_run)
    else:
        contenders["SB3 TD3 CnnPolicy"] = sb3_run

    for run in contenders.values():  # warm-up: allocations, oneDNN primitive caches
        run(3)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run(args.updates)
            rates[name].append(args.updates / (time.perf_counter() - start))
    # Median: the typical round. Best: the round least disturbed by other jobs on the machine.
    median = {name: statistics.median(r) for name, r in rates.items()}
    best = {name: max(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"{name:>25}: median {median[name]:5.2f}, best {best[name]:5.2f} updates/s  "
              f"(rounds: {', '.join(f'{x:.2f}' for x in r)})")

    sb3_name = "SB3 TD3 CnnPolicy"
    if sb3_name not in median:
        print("ratio vs SB3: n/a (stable-baselines3 not installed)")
        return

    def ratios(rate: dict[str, float]) -> str:
        return ", ".join(f"{name.removeprefix('ours ')} {rate[name] / rate[sb3_name]:.2f}x"
                         for name in rate if name != sb3_name)

    print(f"ratio vs SB3 (target >= 1.5x, all stabilizers on): median {ratios(median)}; best {ratios(best)}")


if __name__ == "__main__":
    main()
