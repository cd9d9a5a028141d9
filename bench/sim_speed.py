"""Embedded simulator throughput: steps/s with rendering at 400x300 and at 84x84.

The car is driven by the pure-pursuit follower (so it stays on the road and the frame keeps
changing, as in real use); an episode restarts when the car leaves the road. Two numbers per size:
`step` times sim.step() alone (physics + events + render), `closed loop` adds route() and the
follower each tick, as a node that re-reads the route every tick would.

Usage: python bench/sim_speed.py [--steps N] [--traffic K]
"""

from __future__ import annotations

import argparse
import time

from av_td3_ros.sim import EmbeddedSimulator, SimConfig, WaypointFollower


def measure(width: int, height: int, steps: int, traffic: int) -> tuple[float, float, int]:
    sim = EmbeddedSimulator(SimConfig(image_width=width, image_height=height, traffic=traffic))
    follower = WaypointFollower()
    state = sim.reset(seed=0)
    for _ in range(20):  # warm-up: first-call allocations, lazy imports
        state = sim.step(*follower.control_state(sim.route(), state))
    state = sim.reset(seed=1)
    step_time = 0.0
    resets = 0
    start = time.perf_counter()
    for _ in range(steps):
        control = follower.control_state(sim.route(), state)
        t0 = time.perf_counter()
        state = sim.step(*control)
        step_time += time.perf_counter() - t0
        if not state.on_road:
            state = sim.reset()
            resets += 1
    total = time.perf_counter() - start
    sim.close()
    return steps / step_time, steps / total, resets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--traffic", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.steps} steps per size, traffic {args.traffic}")
    print(f"{'size':>9}  {'step/s':>8}  {'closed loop/s':>13}  resets")
    for width, height in ((400, 300), (84, 84)):
        step_rate, loop_rate, resets = measure(width, height, args.steps, args.traffic)
        print(f"{width:>4}x{height:<4}  {step_rate:8.0f}  {loop_rate:13.0f}  {resets:6d}")


if __name__ == "__main__":
    main()
