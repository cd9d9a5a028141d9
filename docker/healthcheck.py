#!/usr/bin/env python3
"""Container healthcheck: healthy (exit 0) when a message arrives on a topic within a time-out,
optionally one whose text contains a given string; unhealthy (exit 1) otherwise.

    av-td3-healthcheck --topic /clock --type rosgraph_msgs/msg/Clock
    av-td3-healthcheck --topic /diagnostics --type diagnostic_msgs/msg/DiagnosticArray --contains policy_node

It subscribes BEST_EFFORT + VOLATILE (matches any publisher), writes no log files (a check every
30 s must not fill the disk) and uses a hidden node name (not listed by `ros2 node list`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time


def message_class(type_name: str):
    """'pkg/msg/Type' (or 'pkg/Type') -> the message class."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type {type_name!r} is not 'package/msg/Type'")
    module = importlib.import_module(f"{parts[0]}.{parts[1]}")
    return getattr(module, parts[2])


def check(topic: str, type_name: str, contains: str, timeout: float) -> bool:
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    cls = message_class(type_name)
    context = rclpy.Context()
    rclpy.init(args=["av_td3_healthcheck", "--ros-args", "--disable-external-lib-logs",
                     "--disable-rosout-logs"], context=context)
    try:
        node = rclpy.create_node(f"_av_td3_healthcheck_{os.getpid()}", context=context)
        seen: list[bool] = []

        def on_message(msg) -> None:
            if not contains or contains in str(msg):
                seen.append(True)

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
        node.create_subscription(cls, topic, on_message, qos)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout
        while not seen and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
        return bool(seen)
    finally:
        rclpy.try_shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--type", required=True, help="message type, e.g. rosgraph_msgs/msg/Clock")
    parser.add_argument("--contains", default="", help="text the message must contain")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    args = parser.parse_args(argv)
    ok = check(args.topic, args.type, args.contains, args.timeout)
    what = f"{args.topic}" + (f" containing {args.contains!r}" if args.contains else "")
    print(f"{'healthy' if ok else 'unhealthy'}: {'a' if ok else 'no'} message on {what} "
          f"within {args.timeout:g} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
