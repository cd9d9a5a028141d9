#!/usr/bin/env python3
"""Updates per environment step: `av-td3 demo` at held update-to-data ratios, side by side.

The lock-step simulator runs as fast as the policy answers while the CPU learner makes a few updates
per second, so an unheld run learns from ~0.06-0.1 updates per env step. With `--hold-ratio R`
the simulator waits for the learner (sim_node hold_update_ratio) and the run keeps R. Each ratio
runs the real nodes, one after the other (2 cores cannot run two fair trainings at once), with the
same seed and wall budget, and prints, per ratio: the effective ratio reached, env steps and
updates made, env steps and wall minutes to the first training episode that reaches the 300-step
cap three episodes in a row (exploration noise on; one early lucky episode is not learning), the
mean training episode length per env-step bin (learning per env step), and the final deterministic
evaluation.

ONE SEED per ratio unless --seeds says more: a first look, not a result (a learning curve from one
seed is an anecdote).

    .venv/bin/python bench/update_ratio.py                          # 0 (unheld), 0.25, 0.5; 7 min each
    .venv/bin/python bench/update_ratio.py --ratios 0 1 --minutes 5 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from av_td3_ros.demo.report import format_table
from av_td3_ros.demo.run import DemoOptions, run_demo

STEP_BINS = (0, 1000, 2000, 3000, 4500, 6000, 9000, 12000, 18000)


def training_episodes(run_dir: Path) -> list[dict]:
    path = run_dir / "episodes.csv"
    if not path.exists():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def first_capped_run(episodes: list[dict], cap: int, in_a_row: int = 3) -> tuple[int, float] | None:
    """(env steps, wall minutes) at the start of the first `in_a_row` consecutive training
    episodes of `cap` steps: one lucky early episode (it happens at policy version 1) is not
    learning, three in a row are."""
    run = 0
    for i, row in enumerate(episodes):
        run = run + 1 if int(row["length"]) >= cap else 0
        if run == in_a_row:
            first = episodes[i - in_a_row + 1]
            return int(first["env_steps"]), float(first["wall_s"]) / 60.0
    return None


def mean_length_by_steps(episodes: list[dict]) -> list[str]:
    """Mean training episode length of the episodes that ended in each env-step bin."""
    out = []
    for low, high in zip(STEP_BINS, STEP_BINS[1:], strict=False):
        lengths = [int(r["length"]) for r in episodes if low <= int(r["env_steps"]) < high]
        out.append(f"{sum(lengths) / len(lengths):.0f}" if lengths else "-")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5],
                        help="held update-to-data ratios; 0 = unheld (the simulator runs free)")
    parser.add_argument("--minutes", type=float, default=7.0, help="training budget per run")
    parser.add_argument("--eval", type=int, default=5, help="evaluation episodes per run")
    parser.add_argument("--episode-steps", type=int, default=300, help="episode cap (300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=f"runs/update-ratio-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--keep-existing", action="store_true",
                        help="reuse a run whose summary.json is already in --out (resume, or re-print)")
    args = parser.parse_args()
    out = Path(args.out)
    rows, curves = [], []
    for seed in args.seeds:
        for ratio in args.ratios:
            name = f"hold {ratio:g}" if ratio > 0 else "unheld"
            run_dir = out / f"ratio-{ratio:g}-seed-{seed}"
            started = time.monotonic()
            if args.keep_existing and (run_dir / "summary.json").exists():
                print(f"reusing {run_dir / 'summary.json'}")
            else:
                print(f"\n=== {name}, seed {seed}: {args.minutes:g} min ===", flush=True)
                code = run_demo(DemoOptions(minutes=args.minutes, eval_episodes=args.eval, seed=seed,
                                            episode_steps=args.episode_steps, hold_ratio=ratio,
                                            run_dir=str(run_dir), progress_every=30.0))
                if code != 0:
                    rows.append([name, seed, "failed", "", "", "", "", "", ""])
                    continue
                print(f"({(time.monotonic() - started) / 60:.1f} min with the evaluation)", flush=True)
            s = json.loads((run_dir / "summary.json").read_text())
            episodes = training_episodes(run_dir)
            capped = first_capped_run(episodes, args.episode_steps)
            curves.append([name, seed, *mean_length_by_steps(episodes)])
            ev = s["evaluation"] or {}
            lift = s.get("limiter_lift")
            rows.append([
                name, seed, f"{s['effective_update_to_data_ratio']:.3f}", s["env_steps"],
                s["trainer_updates"],
                f"{capped[0]} / {capped[1]:.1f}" if capped else "not reached",
                f"{ev.get('mean_length', 0):.1f}", f"{ev.get('mean_speed', 0):.2f}",
                f"step {lift['env_steps']}, min {lift['wall_s'] / 60:.1f}" if lift else "active",
            ])
    print(f"\nupdate-to-data ratio, {args.minutes:g} min per run, seeds {args.seeds}"
          + (" (ONE seed: a first look, not a result)" if len(args.seeds) == 1 else ""))
    print(format_table(
        ["run", "seed", "effective ratio", "env steps", "updates",
         f"3 x {args.episode_steps} steps in a row from: env steps / min", "eval length", "eval speed",
         "limit lifted"],
        rows,
    ))
    print("\nmean training episode length (exploration on) of the episodes ending in each env-step bin:")
    print(format_table(["run", "seed", *(f"{a / 1000:g}-{b / 1000:g}k" for a, b in
                                         zip(STEP_BINS, STEP_BINS[1:], strict=False))], curves))
    print(f"runs in {out}")


if __name__ == "__main__":
    main()
