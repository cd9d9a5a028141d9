"""Publish or receive 800x600 bgra8 images (1.9 MB) to measure transport delivery and latency.

    big_image.py sub --count 30 [--best-effort] [--timeout 20]   prints "ready", then one JSON line
    big_image.py pub --count 30 [--best-effort] [--period 0.05]

The header stamp carries the wall-clock send time (ns), so the receiver computes the one-way
latency. Which Fast DDS profile the process uses is set by FASTDDS_DEFAULT_PROFILES_FILE in its
environment (an empty value is treated as unset).
"""

from __future__ import annotations

import argparse
import json
import os
import time

if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
    os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

TOPIC = "/test/big_image"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("pub", "sub"))
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--best-effort", action="store_true")
    parser.add_argument("--period", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    qos = QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.BEST_EFFORT if args.best_effort else ReliabilityPolicy.RELIABLE,
    )
    rclpy.init()
    node = rclpy.create_node(f"big_image_{args.role}")
    if args.role == "sub":
        latencies: list[float] = []
        sizes: set[int] = set()

        def on_image(msg: Image) -> None:
            sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            latencies.append((time.time_ns() - sent) / 1e6)
            sizes.add(len(msg.data))

        node.create_subscription(Image, TOPIC, on_image, qos)
        print("ready", flush=True)
        deadline = time.monotonic() + args.timeout
        # Quiet for 2 s after the first message = the publisher is done.
        while time.monotonic() < deadline and len(latencies) < args.count:
            rclpy.spin_once(node, timeout_sec=0.1)
        print(
            json.dumps({"received": len(latencies), "latencies_ms": latencies, "sizes": sorted(sizes)}),
            flush=True,
        )
    else:
        pub = node.create_publisher(Image, TOPIC, qos)
        msg = Image(height=600, width=800, encoding="bgra8", step=3200)
        msg.data = np.random.default_rng(0).integers(0, 255, 600 * 800 * 4, dtype=np.uint8).tobytes()
        deadline = time.monotonic() + args.timeout
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the reader's matching settle on both sides
        for _ in range(args.count):
            now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            pub.publish(msg)
            time.sleep(args.period)
        time.sleep(1.0)
        print(json.dumps({"sent": args.count}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
