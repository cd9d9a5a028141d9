"""Memory soak: one policy node driven at 20 Hz for a long time; is its RSS flat?

    .venv/bin/python bench/memory_soak.py [--duration 600] [--mode train|deploy] [--warmup 60] [--json]

A fake bridge in this process publishes 800x600 bgra8 frames and odometry at --rate Hz (the car
moves along a 200 m straight route and is put back at its start on every reset), latches the
route and a policy (weights version 1, action limit 0.6), answers the reset service, and
receives the controls (and, in train mode, the transitions, the way a trainer would). The
policy node runs in its own process (`python -m av_td3_ros.nodes.policy_node`); its VmRSS is
read from /proc/<pid>/status every --interval seconds.

Reported: RSS at start/end/max, the median of the first and of the last minute after the
warm-up and their difference (growth_mb), and the least-squares slope after the warm-up (MB per
minute). The warm-up excludes what is bounded by design and filled early: the transitions
writer keeps up to qos.TRANSITIONS_DEPTH = 1000 samples (~7.4 MB), which takes 50 s at 20 Hz.
With --json the last stdout line is a JSON object (test_hardening.py reads it).

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and one ROS_DOMAIN_ID (from the
environment, else a random one in 1..100).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from av_td3_ros.demo.environment import caller_ros_environment

T0 = 1_000_000_000_000  # frame stamps: sim time 1000 s + i / rate
ROLE = "soak"


def _env() -> dict[str, str]:
    env = caller_ros_environment(1, 100)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def analyse(samples: list[tuple[float, float]], warmup: float, window: float = 60.0) -> dict:
    """samples: (seconds since the node started, RSS MB). The first and last `window` seconds
    after `warmup` (each at most a third of what is left, for short runs)."""
    end = samples[-1][0]
    window = min(window, max((end - warmup) / 3.0, 1.0))
    first = [m for t, m in samples if warmup <= t < warmup + window]
    last = [m for t, m in samples if t >= end - window]
    after = [(t, m) for t, m in samples if t >= warmup]
    slope = 0.0
    if len(after) >= 2:
        mean_t = statistics.fmean(t for t, _ in after)
        mean_m = statistics.fmean(m for _, m in after)
        var = sum((t - mean_t) ** 2 for t, _ in after)
        slope = sum((t - mean_t) * (m - mean_m) for t, m in after) / var * 60.0 if var else 0.0
    return {
        "rss_start_mb": round(samples[0][1], 1),
        "rss_end_mb": round(samples[-1][1], 1),
        "rss_max_mb": round(max(m for _, m in samples), 1),
        "rss_first_minute_median_mb": round(statistics.median(first), 2),
        "rss_last_minute_median_mb": round(statistics.median(last), 2),
        "growth_mb": round(statistics.median(last) - statistics.median(first), 2),
        "slope_mb_per_min": round(slope, 3),
        "window_s": round(window, 1),
        "rss_every_10s_mb": [round(next(m for t, m in samples if t >= k), 1)
                             for k in range(0, int(end) + 1, 10)],
    }


class Bridge:
    """The CARLA-bridge side (plus the trainer's weights and reset service) in this process."""

    def __init__(self, mode: str, rate: float):
        import numpy as np
        import rclpy
        import torch
        from av_td3_msgs.msg import PolicyWeights, Transition
        from carla_msgs.msg import CarlaEgoVehicleControl
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from nav_msgs.msg import Path as PathMsg
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger

        from av_td3_ros.model import PolicyNetwork
        from av_td3_ros.ros import qos
        from av_td3_ros.ros.conversions import array_to_image, policy_weights_to_message

        rclpy.init()
        self.node = n = rclpy.create_node("soak_bridge")
        prefix = f"/carla/{ROLE}"
        self.camera = n.create_publisher(Image, f"{prefix}/rgb_front/image", qos.CAMERA_QOS)
        self.odometry = n.create_publisher(Odometry, f"{prefix}/odometry", QoSProfile(depth=10))
        route = n.create_publisher(PathMsg, f"{prefix}/waypoints", qos.ROUTE_QOS)
        weights = n.create_publisher(PolicyWeights, f"/{ROLE}/weights", qos.WEIGHTS_QOS)
        self.lock = threading.Lock()
        self.controls = self.transitions = self.resets = self.bad_controls = 0
        n.create_subscription(CarlaEgoVehicleControl, f"{prefix}/vehicle_control_cmd", self._on_control,
                              qos.CONTROL_QOS)
        if mode == "train":
            n.create_subscription(Transition, f"/{ROLE}/transitions", self._on_transition,
                                  qos.TRANSITIONS_QOS)
        n.create_service(Trigger, f"/{ROLE}/reset", self._on_reset)

        path = PathMsg()
        path.header.frame_id = "map"
        for x in range(200):
            pose = PoseStamped()
            pose.pose.position.x = float(x)
            path.poses.append(pose)
        route.publish(path)
        torch.manual_seed(1)
        weights.publish(policy_weights_to_message(PolicyNetwork().state_dict(), 1, action_limit=0.6))

        rng = np.random.default_rng(7)
        self.frames = [array_to_image(rng.integers(0, 256, (600, 800, 4), dtype=np.uint8), "bgra8",
                                      frame_id="ego_camera") for _ in range(4)]
        self.odom = Odometry()
        self.odom.header.frame_id = "map"
        self.odom.twist.twist.linear.x = 5.0
        self.odom.pose.pose.orientation.w = 1.0
        self.rate, self.x, self.i = rate, 5.0, 0
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_control(self, msg):
        ok = all(math.isfinite(v) for v in (msg.steer, msg.throttle, msg.brake)) and (
            -1 <= msg.steer <= 1 and 0 <= msg.throttle <= 1 and 0 <= msg.brake <= 1)
        with self.lock:
            self.controls += 1
            self.bad_controls += not ok

    def _on_transition(self, msg):
        with self.lock:
            self.transitions += 1

    def _on_reset(self, request, response):
        with self.lock:
            self.resets += 1
            self.x = 5.0
        response.success, response.message = True, "reset"
        return response

    def tick(self):
        """One frame + odometry; the car moves at 5 m/s along the route."""
        from builtin_interfaces.msg import Time

        ns = T0 + int(self.i * 1e9 / self.rate)
        stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        with self.lock:
            self.x = self.x + 5.0 / self.rate if self.x < 190.0 else 5.0
            self.odom.pose.pose.position.x = self.x
        self.odom.header.stamp = stamp
        self.odometry.publish(self.odom)
        frame = self.frames[self.i % len(self.frames)]
        frame.header.stamp = stamp
        self.camera.publish(frame)
        self.i += 1

    def close(self):
        import rclpy

        self._running = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of driving (600)")
    ap.add_argument("--mode", choices=("train", "deploy"), default="train")
    ap.add_argument("--rate", type=float, default=20.0, help="frames per second (20)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the growth (60)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples (1)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the node (finally below)
    env = _env()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR")})
    err = tempfile.NamedTemporaryFile("w+", prefix="memory_soak-node-", suffix=".log", delete=False)
    params = {"role_name": ROLE, "actor_id": ROLE, "mode": args.mode, "weights_topic": f"/{ROLE}/weights",
              "transitions_topic": f"/{ROLE}/transitions", "reset_service": f"/{ROLE}/reset",
              "sensor_timeout": 1.0, "seed": 1, "weights_trust": "any"}  # its weights are unsigned
    cmd = [sys.executable, "-m", "av_td3_ros.nodes.policy_node", "--ros-args", "-r", "__node:=soak_policy"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    bridge = Bridge(args.mode, args.rate)
    samples: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 60
        while bridge.controls == 0:  # the node is up, matched and has its inputs
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"policy node did not start:\n{Path(err.name).read_text()[-3000:]}")
            bridge.tick()
            time.sleep(1.0 / args.rate)
        with bridge.lock:
            bridge.controls = 0
        start = time.monotonic()
        next_tick = next_sample = start
        period = 1.0 / args.rate
        while (now := time.monotonic()) < start + args.duration:
            if node.poll() is not None:
                raise RuntimeError(f"policy node died:\n{Path(err.name).read_text()[-3000:]}")
            if now >= next_sample:
                samples.append((now - start, rss_mb(node.pid)))
                next_sample += args.interval
                if not args.json and len(samples) % 60 == 0:
                    print(f"  {now - start:6.0f} s  RSS {samples[-1][1]:7.1f} MB  controls {bridge.controls}",
                          flush=True)
            if now >= next_tick:
                bridge.tick()
                next_tick += period
            time.sleep(max(0.0, min(next_tick, next_sample) - time.monotonic()))
        elapsed = time.monotonic() - start
        result = {
            "mode": args.mode,
            "duration_s": round(elapsed, 1),
            "frames": bridge.i,
            "controls": bridge.controls,
            "control_rate_hz": round(bridge.controls / elapsed, 2),
            "bad_controls": bridge.bad_controls,
            "transitions": bridge.transitions,
            "resets": bridge.resets,
            "samples": len(samples),
            "warmup_s": args.warmup if args.duration >= args.warmup + 60 else 0.0,
        }
        result.update(analyse(samples, result["warmup_s"]))
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        bridge.close()
    log = Path(err.name).read_text()
    result["node_exit"] = node.returncode
    result["tracebacks"] = log.count("Traceback") + log.count("callback failed")
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
