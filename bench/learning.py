#!/usr/bin/env python3
"""Learning benchmark: the stabilized defaults vs the design's unstabilized setup, side by side.

Both variants run `av-td3 demo` (the real nodes) with the same seed and the same budget, one after
the other (2 cores cannot run two fair trainings at once), and are evaluated deterministically on
the same starts next to a random policy. Prints one table; the runs stay in --out for TensorBoard.

    .venv/bin/python bench/learning.py --minutes 30            # the issue's budget (~65 min total)
    .venv/bin/python bench/learning.py --minutes 3 --eval 3    # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from av_td3_ros.demo.report import format_table
from av_td3_ros.demo.run import DemoOptions, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per variant")
    parser.add_argument("--eval", type=int, default=10, help="evaluation episodes per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=f"runs/learning-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument(
        "--keep-existing",
        action="store_true",
        help="reuse a variant whose summary.json is already in --out (resume an interrupted run)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    summaries = {}
    for name, stabilized in (("stabilized", True), ("unstabilized", False)):
        print(f"\n=== {name}: {args.minutes:g} min ===", flush=True)
        run_dir = out / name
        if args.keep_existing and (run_dir / "summary.json").exists():
            print(f"reusing {run_dir / 'summary.json'}")
            summaries[name] = json.loads((run_dir / "summary.json").read_text())
            continue
        code = run_demo(
            DemoOptions(
                minutes=args.minutes,
                eval_episodes=args.eval,
                seed=args.seed,
                run_dir=str(run_dir),
                stabilized=stabilized,
                progress_every=30.0,
            )
        )
        summaries[name] = json.loads((run_dir / "summary.json").read_text()) if code == 0 else None
    rows = []
    for name, s in summaries.items():
        if s is None:
            rows.append([name, "failed", "", "", "", "", "", "", ""])
            continue
        ev = s["evaluation"] or {}
        rows.append(
            [
                name,
                s["env_steps"],
                s["updates"],
                f"{s['cnn_l2_first'] or 0:.1f}",
                f"{s['cnn_l2_max'] or 0:.4g}",
                f"{ev.get('mean_length', 0):.1f}",
                f"{ev.get('mean_return', 0):.2f}",
                ev.get("collisions", ""),
                f"{ev.get('mean_speed', 0):.2f}",
            ]
        )
    random = next((s["random"] for s in summaries.values() if s is not None), None)
    if random is not None:
        rows.append(
            [
                "random policy",
                "",
                "",
                "",
                "",
                f"{random['mean_length']:.1f}",
                f"{random['mean_return']:.2f}",
                random["collisions"],
                f"{random['mean_speed']:.2f}",
            ]
        )
    print(
        "\n"
        + format_table(
            [
                "variant",
                "env steps",
                "updates",
                "L2 first",
                "L2 max",
                "eval length",
                "eval return",
                "collisions",
                "eval speed",
            ],
            rows,
        )
    )
    if random is not None and summaries.get("stabilized") and summaries["stabilized"]["evaluation"]:
        ratio = summaries["stabilized"]["evaluation"]["mean_length"] / random["mean_length"]
        print(f"stabilized evaluation length / random: {ratio:.2f}x (target >= 10x within 30 min)")


if __name__ == "__main__":
    main()
