"""Embedded simulator throughput: steps/s of the front camera vs the top view, side by side.

For each image size (400x300, objects.json's 800x600, 84x84) both camera views run in the same
process, in alternating blocks of `--block` steps, so the load of a shared machine hits both alike;
each figure is the median over the blocks. The car is driven by the pure-pursuit follower (so it
stays on the road and the frame keeps changing, as in real use); an episode restarts when the car
leaves the road. Three numbers per view: `step` times sim.step() alone (physics + events + render),
`closed loop` adds route() and the follower each tick, as a node that re-reads the route every
tick would, and `render` is the camera alone (ms per frame, median). The ratio column is front / top
of `step`; the issue's target is >= 0.80 at 400x300.

`--warp` adds the alternative the front camera does not use, for comparison: a top-down render of
the ground ahead (0-60 m, 120 m wide, at 10 px/m - already blurry in the bottom rows, which sample
the ground at ~75 px/m at 400x300) warped into the camera image with the ground homography
(cv2.warpPerspective), against the front renderer on the same frames (ms per frame, median).

Usage: python bench/sim_speed.py [--steps N] [--block B] [--traffic K] [--warp]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from av_td3_ros.sim import EmbeddedSimulator, SimConfig, WaypointFollower
from av_td3_ros.sim.camera import rgb_front_camera
from av_td3_ros.sim.render import TopDownRenderer

SIZES = ((400, 300), (800, 600), (84, 84))
VIEWS = ("top", "front")


class Runner:
    """One simulator and its driver; `block(n)` runs n ticks and records their timings."""

    def __init__(self, view: str, width: int, height: int, traffic: int):
        self.sim = EmbeddedSimulator(SimConfig(camera_view=view, image_width=width, image_height=height,
                                               traffic=traffic))
        self.follower = WaypointFollower()
        self.state = self.sim.reset(seed=0)
        for _ in range(20):  # warm-up: first-call allocations, lazy imports
            self.state = self.sim.step(*self.follower.control_state(self.sim.route(), self.state))
        self.state = self.sim.reset(seed=1)
        self.step_rates: list[float] = []
        self.loop_rates: list[float] = []
        self.render_ms: list[float] = []
        self.resets = 0

    def block(self, steps: int) -> None:
        sim = self.sim
        step_time = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            control = self.follower.control_state(sim.route(), self.state)
            t0 = time.perf_counter()
            self.state = sim.step(*control)
            step_time += time.perf_counter() - t0
            if not self.state.on_road:
                self.state = sim.reset()
                self.resets += 1
        total = time.perf_counter() - start
        self.step_rates.append(steps / step_time)
        self.loop_rates.append(steps / total)
        # The camera alone, on the frame just reached (the renderer is the simulator's own).
        env = sim._env  # noqa: SLF001 - a bench may look inside
        t0 = time.perf_counter()
        sim._renderer.render(env.vehicle, sim._others())  # noqa: SLF001
        self.render_ms.append((time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        self.sim.close()


def measure(width: int, height: int, steps: int, block: int, traffic: int) -> dict[str, Runner]:
    runners = {view: Runner(view, width, height, traffic) for view in VIEWS}
    for _ in range(max(1, steps // block)):
        for view in VIEWS:
            runners[view].block(block)
    for runner in runners.values():
        runner.close()
    return runners


def warp_comparison(width: int, height: int, frames: int = 300) -> tuple[float, float, float]:
    """(front renderer, top-down source render, warpPerspective) ms per frame, medians."""
    sim = EmbeddedSimulator(SimConfig(image_width=width, image_height=height))
    follower = WaypointFollower()
    state = sim.reset(seed=1)
    ppm, ahead_m, wide_m = 10.0, 60.0, 120.0
    source = TopDownRenderer(int(wide_m * ppm), int(ahead_m * ppm), wide_m, (0.5, 1.0))
    source.set_road(sim._env.road.network)  # noqa: SLF001 - a bench may look inside
    # Source pixel (a, b) -> car-frame ground (forward, right) -> camera pixel.
    to_ground = np.array([[0.0, -1.0 / ppm, ahead_m], [1.0 / ppm, 0.0, -wide_m / 2.0], [0.0, 0.0, 1.0]])
    homography = rgb_front_camera(width, height).ground_homography @ to_ground
    front, top, warp = [], [], []
    image = np.zeros((height, width, 4), np.uint8)
    for _ in range(frames):
        state = sim.step(*follower.control_state(sim.route(), state))
        ego, others = sim._env.vehicle, sim._others()  # noqa: SLF001
        t0 = time.perf_counter()
        sim._renderer.render(ego, others)  # noqa: SLF001
        t1 = time.perf_counter()
        ground = source.render(ego, others)
        t2 = time.perf_counter()
        cv2.warpPerspective(ground, homography, (width, height), dst=image, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_TRANSPARENT)
        t3 = time.perf_counter()
        front.append(t1 - t0)
        top.append(t2 - t1)
        warp.append(t3 - t2)
    sim.close()
    return tuple(1e3 * statistics.median(x) for x in (front, top, warp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per view and size")
    parser.add_argument("--block", type=int, default=100, help="steps per alternating block")
    parser.add_argument("--traffic", type=int, default=0)
    parser.add_argument("--warp", action="store_true", help="also time the warped top-down alternative")
    args = parser.parse_args()
    print(f"{args.steps} steps per view and size in blocks of {args.block}, traffic {args.traffic}")
    print(f"{'size':>9}  {'view':>5}  {'step/s':>7}  {'closed loop/s':>13}  {'render ms':>9}  resets  "
          f"{'front/top':>9}")
    for width, height in SIZES:
        runners = measure(width, height, args.steps, args.block, args.traffic)
        rates = {view: statistics.median(r.step_rates) for view, r in runners.items()}
        for view, r in runners.items():
            ratio = f"{rates['front'] / rates['top']:9.2f}" if view == "front" else ""
            loop, render = statistics.median(r.loop_rates), statistics.median(r.render_ms)
            print(f"{width:>4}x{height:<4}  {view:>5}  {rates[view]:7.0f}  {loop:13.0f}  {render:9.3f}  "
                  f"{r.resets:6d}  {ratio}")

    if args.warp:
        print("front renderer vs a 1200x600 top-down source (10 px/m) + cv2.warpPerspective, ms per frame:")
        for width, height in SIZES[:2]:
            front, source, warp = warp_comparison(width, height)
            print(f"{width:>4}x{height:<4}  front {front:6.3f}  source {source:6.3f} + warp {warp:6.3f} = "
                  f"{source + warp:6.3f}  ({(source + warp) / front:.1f}x)")


if __name__ == "__main__":
    main()
