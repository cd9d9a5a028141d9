#!/usr/bin/env python3
"""This project's TD3 learner vs Stable-Baselines3 TD3 on the same task, side by side.

Both sides learn on one gymnasium wrapper (av_td3_ros.sim.gym_env.DrivingEnv): the embedded
simulator and the policy node's DrivingCore, so the same 4x84x84 gray stack + 23 kinematics, the
same reward and the same episode ends (collision, off route, stuck, 300-step cap). Each side gets
the same env-step budget, the same update-to-data ratio (--utd), the same seeds, and the same
evaluation: `demo.evaluation.evaluate` (the deterministic actor through the DrivingCore) on the
same starts, every --eval-every env steps and at the end.

    ours: TD3Learner + FrameReplayBuffer driven in process with the demo's learner settings
          (TD3Config defaults, i.e. trainer.yaml's td3.*, with the demo's batch 128; every
          stabilizer on; learning_starts 1000; the action limiter and exploration of the learner).
          This measures the LEARNER on identical env steps, not the ROS transport: there is no
          weights-publishing lag here and the env waits for every update. The demo's ROS run
          (`av-td3 demo`, sim_node + policy_node + trainer_node) is a separate measurement.
    SB3:  TD3("MultiInputPolicy") (CombinedExtractor: NatureCNN on the frames + the 23 values
          flattened, separate actor/critic extractors) with SB3's defaults (lr 1e-3, batch 256,
          tau 0.005, gamma 0.99, policy_delay 2) plus TD3's Gaussian exploration noise 0.1 (SB3
          adds none by default), 256x256 heads as this project's, and the same learning_starts.

`--observations` (ours only) is the camera's ablation on the same seeds, budget and evaluation
starts: `both` (image + kinematics, the node's input), `kinematics` (every frame zeroed, in training,
replay and evaluation: the CNN sees a constant, so only the 23 values can tell the actor anything),
`image` (the 23 kinematics zeroed). With traffic on (`--traffic 6 --random-start`) nothing in the
kinematics reveals another car: the gap in collisions/km is what the camera is worth.

Printed per side and seed and as mean +- std over seeds: env steps and training wall-clock minutes
(evaluation excluded) to the first evaluation whose mean length reaches the cap, the final mean
evaluation length, collisions per km, the measured update-to-data ratio, ours / SB3 ratios, and
(ours) the share of every update's pre-clip grad norms below 10, the demo report's criterion.

    python bench/learning_vs_sb3.py --steps 1500 --seeds 0 --eval-every 500      # smoke
    nice -n 10 python bench/learning_vs_sb3.py --steps 6000 --utd 0.1 --out runs/vs_sb3.json
SB3 is a bench-only extra: pip install -c requirements/constraints.txt -r requirements/bench.txt
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from av_td3_ros.atomic_file import write_atomic
from av_td3_ros.demo.evaluation import Evaluation, evaluate, random_driver
from av_td3_ros.demo.run import DemoOptions
from av_td3_ros.learning import FrameReplayBuffer, TD3Config, TD3Learner
from av_td3_ros.learning.config import ENCODER_GRAD_MODES
from av_td3_ros.sim.gym_env import DrivingEnv, demo_reward
from av_td3_ros.sim.simulator import SimConfig

DEMO = DemoOptions()
EVAL_SEED = 10_000  # + the run's seed, as the demo: evaluation starts differ from training's
REPLAY_CAPACITY = 100_000  # trainer.yaml's replay_capacity
STREAM = "car"


@dataclass
class EvalPoint:
    env_steps: int
    train_wall_s: float  # training wall-clock so far (env steps + updates; evaluations excluded)
    # The same span in this process's CPU seconds (all threads): other jobs on a shared machine
    # stretch wall-clock a lot and CPU time much less.
    train_cpu_s: float
    updates: int
    mean_length: float
    mean_return: float
    mean_speed: float
    collisions: int
    km: float
    saturated_share: float = 0.0  # of the evaluation's action components, |a| > 0.99 (the report's)
    action_std: float = 0.0  # the smallest per-dimension std of the evaluation's actions

    @property
    def collisions_per_km(self) -> float | None:
        return self.collisions / self.km if self.km > 0 else None


@dataclass
class Run:
    side: str
    seed: int
    batch_size: int
    curve: list[EvalPoint] = field(default_factory=list)
    env_steps: int = 0
    updates: int = 0
    train_wall_s: float = 0.0
    train_cpu_s: float = 0.0
    limit_lifted_at: int | None = None  # ours: the env step at which the action limit lifted
    # ours: every update's pre-clip grad norms of the trained parts (the demo report's criterion)
    grad_norms: list[float] = field(default_factory=list)

    def grad_share_below(self, clip: float = 10.0) -> float | None:
        return float(np.mean(np.asarray(self.grad_norms) < clip)) if self.grad_norms else None

    def first_at_cap(self, cap: int) -> EvalPoint | None:
        return next((p for p in self.curve if p.mean_length >= cap), None)

    def summary(self, cap: int) -> dict:
        first, last = self.first_at_cap(cap), self.curve[-1]
        return {
            "side": self.side, "seed": self.seed, "batch_size": self.batch_size,
            "env_steps": self.env_steps, "updates": self.updates,
            "update_to_data": self.updates / self.env_steps if self.env_steps else 0.0,
            "update_to_data_after_learning_starts": (self.updates / (self.env_steps - DEMO.learning_starts)
                                                     if self.env_steps > DEMO.learning_starts else 0.0),
            "train_minutes": self.train_wall_s / 60.0,
            "train_cpu_minutes": self.train_cpu_s / 60.0,
            "steps_to_cap": first.env_steps if first else None,
            "minutes_to_cap": first.train_wall_s / 60.0 if first else None,
            "cpu_minutes_to_cap": first.train_cpu_s / 60.0 if first else None,
            "final_mean_length": last.mean_length, "final_mean_speed": last.mean_speed,
            "final_collisions": last.collisions, "final_km": last.km,
            "final_collisions_per_km": last.collisions_per_km,
            "limit_lifted_at": self.limit_lifted_at,
            "grad_norms_below_10": self.grad_share_below(),
            "curve": [asdict(p) for p in self.curve],
        }


def distance_km(result: Evaluation, dt: float) -> float:
    """Metres driven, from each episode's mean forward speed over its steps."""
    return sum(e.length * e.mean_speed * dt for e in result.episodes) / 1000.0


class Evaluator:
    """demo.evaluation.evaluate on the same starts for every side and checkpoint of one seed."""

    def __init__(self, args, seed: int, sim_config: SimConfig):
        self.episodes, self.seed, self.sim_config = args.eval_episodes, EVAL_SEED + seed, sim_config
        self.reward = demo_reward()

    def __call__(self, driver, run: Run) -> EvalPoint:
        result = evaluate(driver, run.side, episodes=self.episodes, seed=self.seed, reward=self.reward,
                          sim_config=self.sim_config)
        point = EvalPoint(run.env_steps, run.train_wall_s, run.train_cpu_s, run.updates, result.mean_length,
                          result.mean_return, result.mean_speed, result.collisions,
                          distance_km(result, self.sim_config.fixed_delta_seconds),
                          result.saturated_share, result.action_std)
        run.curve.append(point)
        return point


def sb3_schedule(utd: float) -> tuple[int, int]:
    """(train_freq, gradient_steps) of SB3 closest to `utd`; their ratio is what both sides run."""
    if utd >= 1.0:
        return 1, int(round(utd))
    return int(round(1.0 / utd)), 1


def updates_owed(env_steps: int, updates: int, learning_starts: int, utd: float, replay_len: int,
                 batch: int) -> int:
    """TrainingService.updates_owed's rule: after learning_starts transitions, utd per transition."""
    if env_steps < learning_starts or replay_len < batch:
        return 0
    return max(0, int((env_steps - learning_starts + 1) * utd) - updates)


def checkpoints(budget: int, every: int) -> list[int]:
    marks = list(range(every, budget, every)) if every > 0 else []
    return [*marks, budget]


def train_ours(args, seed: int, make_env: Callable[[], DrivingEnv], evaluator: Evaluator, log,
               observation: str = "both", recipe: str = "default") -> Run:
    config = TD3Config(**{"batch_size": DEMO.batch_size, "seed": seed, "encoder_grad": args.encoder_grad,
                          **recipe_overrides(recipe, args.steps)})
    config.validate()
    learner = TD3Learner(config)
    replay = FrameReplayBuffer(REPLAY_CAPACITY, seed=seed)
    run = Run(side_label("ours", observation, recipe), seed, config.batch_size)
    env = make_env()

    def deterministic(frames, kinematics):  # the published actor, as the demo evaluates it
        view = masked({"frames": frames, "kinematics": kinematics}, observation)
        frames, kinematics = view["frames"], view["kinematics"]
        with torch.inference_mode():
            out = learner.policy(torch.as_tensor(frames)[None], torch.as_tensor(kinematics)[None])
        return out[0].numpy()

    def start(obs):
        replay.start_episode(STREAM, obs["frames"][-1], obs["kinematics"])

    obs, _ = env.reset(seed=seed)
    obs = masked(obs, observation)
    start(obs)
    try:
        for mark in checkpoints(args.steps, args.eval_every):
            began, began_cpu = time.perf_counter(), time.process_time()
            while run.env_steps < mark:
                if learner.updates == 0:  # no weights yet: the policy node's uniform exploration
                    action = learner.exploration.action(None, run.env_steps)
                else:
                    action = learner.act(obs["frames"], obs["kinematics"], explore=True,
                                         env_step=run.env_steps)
                obs, reward, terminated, truncated, info = env.step(action)
                obs = masked(obs, observation)
                run.env_steps += 1
                replay.add_step(STREAM, action, reward, obs["frames"][-1], obs["kinematics"],
                                terminated, truncated)
                # As the trainer node does on ingest. (Before 2026-12-04 this bench did not, so its
                # limit never lifted.)
                learner.record_env_steps(1)
                if run.limit_lifted_at is None and not learner.limiter.active:  # the ramp's end
                    run.limit_lifted_at = run.env_steps
                if terminated or truncated:
                    learner.record_episode_length(info["episode_step"])
                    obs = masked(env.reset()[0], observation)
                    start(obs)
                for _ in range(updates_owed(run.env_steps, run.updates, DEMO.learning_starts, args.utd,
                                            len(replay), config.batch_size)):
                    batch = (replay.sample(config.batch_size) if config.n_step == 1 else
                             replay.sample(config.batch_size, n_step=config.n_step, gamma=config.gamma))
                    metrics = learner.update(batch)
                    # As the demo report reads them: 0 = a part that is not trained (critic_only's actor CNN)
                    run.grad_norms.extend(v for k, v in metrics.items()
                                          if k.startswith("grad_norm_") and v > 0)
                    run.updates += 1
                    if run.limit_lifted_at is None and not learner.limiter.active:  # an instant lift
                        run.limit_lifted_at = run.env_steps
            run.train_wall_s += time.perf_counter() - began
            run.train_cpu_s += time.process_time() - began_cpu
            log(run, evaluator(deterministic, run))
    finally:
        env.close()
    return run


def train_sb3(args, seed: int, make_env: Callable[[], DrivingEnv], evaluator: Evaluator, log) -> Run:
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.noise import NormalActionNoise

    train_freq, gradient_steps = sb3_schedule(args.utd)
    env = make_env()
    model = TD3(
        "MultiInputPolicy", env, buffer_size=args.steps + 1, learning_starts=DEMO.learning_starts,
        batch_size=args.sb3_batch, train_freq=(train_freq, "step"), gradient_steps=gradient_steps,
        action_noise=NormalActionNoise(np.zeros(2), 0.1 * np.ones(2)),
        policy_kwargs={"net_arch": [256, 256]}, device="cpu", seed=seed, verbose=0,
    )
    model.set_logger(configure(folder=None, format_strings=[]))
    run = Run("sb3", seed, args.sb3_batch)

    def deterministic(frames, kinematics):
        action, _ = model.predict({"frames": frames, "kinematics": kinematics}, deterministic=True)
        return np.asarray(action, np.float32)

    try:
        for mark in checkpoints(args.steps, args.eval_every):
            began, began_cpu = time.perf_counter(), time.process_time()
            model.learn(total_timesteps=mark - run.env_steps, reset_num_timesteps=run.env_steps == 0,
                        progress_bar=False)
            run.train_wall_s += time.perf_counter() - began
            run.train_cpu_s += time.process_time() - began_cpu
            run.env_steps, run.updates = int(model.num_timesteps), int(model._n_updates)
            log(run, evaluator(deterministic, run))
    finally:
        env.close()
        model.replay_buffer = None  # its ~57 KB per step, before the next run allocates its own
        gc.collect()
    return run


SIDES = {"ours": train_ours, "sb3": train_sb3}
OBSERVATIONS = ("both", "kinematics", "image")


def recipe_overrides(name: str, budget: int) -> dict:
    """TD3Config overrides of one issue-14 recipe part (ours only), each measured alone against
    `default` on the same seeds. Values are DrQ-v2's where it has one; the noise decay is scaled
    from its 500k-frame schedule to this run's budget (0.3 -> 0.05 over the first half). The
    default shifts frames (augment_pad 4) since section 11 of docs/benchmarks.md: `shift` is then
    the default itself, `no-shift` the part switched off."""
    parts = {
        "default": {},
        "shift": {"augment_pad": 4},
        "no-shift": {"augment_pad": 0},
        "nstep3": {"n_step": 3},
        "noise-decay": {"exploration_schedule": "linear", "exploration_noise": 0.3,
                        "exploration_noise_final": 0.05, "exploration_decay_steps": max(1, budget // 2)},
        "critic-only": {"encoder_grad": "critic_only"},
        # The default CNN passes are bfloat16 where the CPU has it natively; this is SB3's float32.
        "float32": {"cnn_precision": "float32"},
        # The action limit off at once when its criteria hold (the design's lift), not on a ramp.
        "instant-lift": {"limiter_lift_env_steps": 0},
        # The 23 kinematics divided by their typical size inside the networks (raw metres by default).
        "scaled-kinematics": {"scale_kinematics": True},
    }
    # "a+b": both parts at once (e.g. no-shift+float32, the traffic task's learner in float32);
    # drq is every part switched on at once.
    names = [n for part in name.split("+") for n in (DRQ_PARTS if part == "drq" else [part])]
    return {k: v for n in names for k, v in parts[n].items()}


RECIPES = ("default", "shift", "no-shift", "nstep3", "noise-decay", "critic-only", "float32", "instant-lift",
           "scaled-kinematics", "drq")
DRQ_PARTS = ("shift", "nstep3", "noise-decay", "critic-only")


def recipe_name(text: str) -> str:
    """argparse type of --recipes: one recipe, or parts joined with +."""
    if any(part not in RECIPES for part in text.split("+")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: recipes are {', '.join(RECIPES)}, or parts joined with +")
    return text


def masked(obs: dict, observation: str) -> dict:
    """The agent's view of `obs` for an ablation: the part it must not see, zeroed."""
    if observation == "kinematics":
        return {**obs, "frames": np.zeros_like(obs["frames"])}
    if observation == "image":
        return {**obs, "kinematics": np.zeros_like(obs["kinematics"])}
    return obs


def side_label(side: str, observation: str, recipe: str = "default") -> str:
    label = side if observation == "both" else f"{side}:{observation}"
    return label if recipe == "default" else f"{label}+{recipe}"


def spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return f"n/a (0/{len(values)})"
    mean = statistics.fmean(known)
    std = statistics.stdev(known) if len(known) > 1 else 0.0
    tail = "" if len(known) == len(values) else f" ({len(known)}/{len(values)} seeds)"
    return f"{mean:.4g} +- {std:.2g}{tail}"


def mean_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def aggregate(summaries: list[dict], sides: list[str]) -> dict:
    keys = ("steps_to_cap", "minutes_to_cap", "cpu_minutes_to_cap", "final_mean_length",
            "final_collisions_per_km", "update_to_data", "update_to_data_after_learning_starts",
            "train_minutes", "train_cpu_minutes", "updates", "grad_norms_below_10")
    out: dict = {}
    for side in sides:
        rows = [s for s in summaries if s["side"] == side]
        out[side] = {
            key: {"values": [r[key] for r in rows], "mean": mean_or_none([r[key] for r in rows]),
                  "std": (statistics.stdev([r[key] for r in rows if r[key] is not None])
                          if sum(r[key] is not None for r in rows) > 1 else 0.0),
                  "text": spread([r[key] for r in rows])}
            for key in keys
        }
        out[side]["reached_cap"] = sum(r["steps_to_cap"] is not None for r in rows)
        out[side]["seeds"] = len(rows)
    if "ours" in out and "sb3" in out:
        out["ratio_ours_over_sb3"] = {
            key: (out["ours"][key]["mean"] / out["sb3"][key]["mean"]
                  if out["ours"][key]["mean"] is not None and out["sb3"][key]["mean"] not in (None, 0.0)
                  else None)
            for key in keys
        }
    return out


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000, help="env-step budget per side and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--traffic", type=int, default=0, help="SimConfig.traffic (IDM cars)")
    parser.add_argument("--traffic-speed", type=float, nargs=2, default=list(SimConfig().traffic_speed),
                        metavar=("LOW", "HIGH"), help="SimConfig.traffic_speed: the IDM cars' speed [m/s]")
    parser.add_argument("--random-start", action="store_true",
                        help="SimConfig.random_start, in training and evaluation")
    parser.add_argument("--eval-every", type=int, default=1000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--utd", type=float, default=0.25,
                        help="updates per env step after learning_starts, both sides (SB3: train_freq / "
                             "gradient_steps; SB3's own default is 1, DrQ-v2's 0.5)")
    parser.add_argument("--sb3-batch", type=int, default=256, help="SB3's batch (its default)")
    parser.add_argument("--encoder-grad", choices=ENCODER_GRAD_MODES, default=TD3Config().encoder_grad,
                        help="ours: TD3Config.encoder_grad (default: the demo's)")
    parser.add_argument("--sides", nargs="+", choices=sorted(SIDES), default=["ours", "sb3"])
    parser.add_argument("--observations", nargs="+", choices=OBSERVATIONS, default=["both"],
                        help="ours: what the agent sees (the camera's ablation; see the module doc)")
    parser.add_argument("--recipes", nargs="+", type=recipe_name, default=["default"],
                        help=f"ours: recipe parts ({', '.join(RECIPES)}), each alone on top of the defaults, "
                             "or joined with + (drq = all of them); see recipe_overrides")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--out", default=f"runs/learning_vs_sb3-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    if args.steps <= DEMO.learning_starts:
        parser.error(f"--steps must exceed learning_starts ({DEMO.learning_starts})")
    if not (0.0 < args.utd <= 64.0):
        parser.error("--utd must be in (0, 64]")
    torch.set_num_threads(args.threads)
    train_freq, gradient_steps = sb3_schedule(args.utd)
    args.utd = gradient_steps / train_freq  # SB3 can only run whole gradient steps per train_freq
    # The limiter warns once per episode while active: thousands of lines in a benchmark.
    logging.getLogger("av_td3_ros.learning.action_limiter").setLevel(logging.ERROR)
    cap = demo_reward().max_episode_steps
    started = time.perf_counter()
    print(f"learning vs SB3: {args.steps} env steps, utd {args.utd}, seeds {args.seeds}, "
          f"traffic {args.traffic} at {args.traffic_speed[0]:g}-{args.traffic_speed[1]:g} m/s, "
          f"random_start {args.random_start}, eval {args.eval_episodes} "
          f"episodes every {args.eval_every} steps, cap {cap}; torch {torch.__version__} on "
          f"{args.threads} threads", flush=True)

    def log(run: Run, point: EvalPoint) -> None:
        print(f"  {run.side:>4} seed {run.seed}: {point.env_steps:>6} steps {point.updates:>6} updates "
              f"{point.train_wall_s / 60:6.2f} min ({point.train_cpu_s / 60:6.2f} CPU) | eval length "
              f"{point.mean_length:6.1f} return {point.mean_return:7.2f} speed {point.mean_speed:4.1f} "
              f"collisions {point.collisions} ({fmt(point.collisions_per_km)} /km) saturated "
              f"{point.saturated_share:.1%} min std {point.action_std:.3f}", flush=True)

    # (side, observation, recipe) of every run of a seed: the ablation and the recipe are ours only.
    contenders = [(side, o, r) for side in args.sides
                  for o in (args.observations if side == "ours" else ["both"])
                  for r in (args.recipes if side == "ours" else ["default"])]
    labels = [side_label(*contender) for contender in contenders]
    summaries, randoms = [], {}
    out = Path(args.out)
    for seed in args.seeds:
        world = {"traffic": args.traffic, "traffic_speed": tuple(args.traffic_speed),
                 "random_start": args.random_start}
        sim_config = SimConfig(**world, seed=seed)
        eval_config = SimConfig(**world)
        evaluator = Evaluator(args, seed, eval_config)
        baseline = evaluate(random_driver(seed), "random", episodes=args.eval_episodes, seed=EVAL_SEED + seed,
                            reward=demo_reward(), sim_config=eval_config)
        randoms[seed] = {**baseline.summary(), "km": distance_km(baseline, eval_config.fixed_delta_seconds)}
        print(f"seed {seed}: random policy eval length {baseline.mean_length:.1f}", flush=True)
        for side, observation, recipe in contenders:
            def make_env(c=sim_config):
                return DrivingEnv(c, demo_reward())

            options = {"observation": observation, "recipe": recipe} if side == "ours" else {}
            run = SIDES[side](args, seed, make_env, evaluator, log, **options)
            summaries.append(run.summary(cap))
            result = {"args": vars(args), "cap": cap, "random": randoms, "runs": summaries,
                      "aggregate": aggregate(summaries, labels),
                      "total_minutes": (time.perf_counter() - started) / 60.0}
            out.parent.mkdir(parents=True, exist_ok=True)
            # After every run, so that an interrupted benchmark keeps what it measured.
            write_atomic(out, json.dumps(result, indent=1).encode())

    print("\nper side and seed:")
    print(f"{'side':>15} {'seed':>4} {'batch':>5} {'steps':>6} {'updates':>7} {'utd':>6} {'train min':>9} "
          f"{'CPU min':>7} {'steps to cap':>12} {'min to cap':>10} {'CPU min to cap':>14} {'final len':>9} "
          f"{'coll/km':>8} {'lifted at':>9} {'grads < 10':>10}")
    for s in summaries:
        print(f"{s['side']:>15} {s['seed']:>4} {s['batch_size']:>5} {s['env_steps']:>6} {s['updates']:>7} "
              f"{s['update_to_data']:>6.3f} {s['train_minutes']:>9.2f} {s['train_cpu_minutes']:>7.2f} "
              f"{fmt(s['steps_to_cap']):>12} {fmt(s['minutes_to_cap']):>10} "
              f"{fmt(s['cpu_minutes_to_cap']):>14} {s['final_mean_length']:>9.1f} "
              f"{fmt(s['final_collisions_per_km']):>8} {fmt(s.get('limit_lifted_at')):>9} "
              f"{fmt(s.get('grad_norms_below_10'), 3):>10}")
    agg = aggregate(summaries, labels)
    print("\nmean +- std over seeds (steps/minutes to cap: over the seeds that reached it):")
    for side in labels:
        a = agg[side]
        print(f"  {side:>4}: reached cap {a['reached_cap']}/{a['seeds']}; "
              f"steps to cap {a['steps_to_cap']['text']}; minutes to cap {a['minutes_to_cap']['text']}; "
              f"final length {a['final_mean_length']['text']}; "
              f"collisions/km {a['final_collisions_per_km']['text']}; utd {a['update_to_data']['text']} "
              f"(after learning_starts {a['update_to_data_after_learning_starts']['text']}); "
              f"train minutes {a['train_minutes']['text']}; pre-clip grad norms < 10 "
              f"{a['grad_norms_below_10']['text']}")
    ratios = agg.get("ratio_ours_over_sb3")
    if ratios:
        print("  ours / SB3 (ratio of means): " + ", ".join(f"{k} {fmt(v, 3)}" for k, v in ratios.items()))
    random_len = statistics.fmean(r["mean_length"] for r in randoms.values())
    print(f"  random policy eval length: {random_len:.1f}")
    print(f"written: {out} (total {(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
