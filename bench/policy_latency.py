"""Policy node latency: compute per frame, and camera -> control through DDS between processes.

    .venv/bin/python bench/policy_latency.py [--frames 300] [--skip-dds] [--skip-compute]

1. compute: the node's real camera callback (a PolicyNode in this process, configured and
   active, weights loaded) fed 800x600 bgra8 Image messages directly: callback entry -> control
   published (and, in train mode, the transition). p50/p99 in ms, plus the parts (image ->
   84x84 gray, kinematics, actor forward).
2. dds: a fake bridge process publishes 800x600 bgra8 frames at 20 Hz (header stamp = wall time)
   and receives the policy node's control (same stamp); the node runs in its own process.
   Reported: camera publish -> control received at the bridge (the whole loop, one way from the
   camera's point of view: image transport + node compute + control transport), p50/p99, with
   Fast DDS default transports vs config/fastdds_shm.xml in both processes.

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and one ROS_DOMAIN_ID (from the
environment, else a random one in 1..100). Not a timed test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from av_td3_ros.demo.environment import caller_ros_environment

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_shm.xml"
ROUTE = [(float(x), 0.0) for x in range(200)]
POSE = dict(x=5.0, y=0.4, yaw=0.05, speed=5.0)


def _env() -> dict[str, str]:
    env = caller_ros_environment(1, 100)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pct(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def _line(name: str, values_ms) -> str:
    slow = sum(1 for v in values_ms if v > 20.0)
    return (
        f"  {name:<34} p50 {_pct(values_ms, 50):7.2f} ms   p90 {_pct(values_ms, 90):7.2f} ms   "
        f"p99 {_pct(values_ms, 99):7.2f} ms   max {max(values_ms, default=float('nan')):7.2f} ms   "
        f"(n={len(values_ms)}, {slow} > 20 ms)"
    )


def _messages():
    import math

    import numpy as np
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from nav_msgs.msg import Path as PathMsg

    from av_td3_ros.ros.conversions import array_to_image

    image = np.random.default_rng(7).integers(0, 256, (600, 800, 4), dtype=np.uint8)
    frame = array_to_image(image, "bgra8", frame_id="camera")
    path = PathMsg()
    path.header.frame_id = "map"
    for x, y in ROUTE:
        pose = PoseStamped()
        pose.pose.position.x, pose.pose.position.y = x, y
        path.poses.append(pose)
    odom = Odometry()
    odom.header.frame_id = "map"
    odom.pose.pose.position.x, odom.pose.pose.position.y = POSE["x"], POSE["y"]
    odom.pose.pose.orientation.z = math.sin(POSE["yaw"] / 2)
    odom.pose.pose.orientation.w = math.cos(POSE["yaw"] / 2)
    odom.twist.twist.linear.x = POSE["speed"]
    return image, frame, path, odom


def _weights_file(directory: str) -> str:
    import torch

    from av_td3_ros.learning.weights import encode_policy_weights
    from av_td3_ros.model import PolicyNetwork

    torch.manual_seed(0)
    path = Path(directory) / "policy.safetensors"
    path.write_bytes(encode_policy_weights(PolicyNetwork().state_dict(), {"version": 1}))
    return str(path)


# ----------------------------------------------------------------------------------------------
# 1. compute
# ----------------------------------------------------------------------------------------------


def bench_compute(frames: int, weights: str) -> None:
    import numpy as np
    import rclpy
    from rclpy.context import Context
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file
    from av_td3_ros.nodes.policy_node import PolicyNode
    from av_td3_ros.perception.image import to_gray84
    from av_td3_ros.perception.kinematics import KinematicsEncoder, Route
    from av_td3_ros.ros.conversions import image_to_array

    image, frame, path, odom = _messages()
    # A received message (array-backed data), as the callback gets it.
    received = deserialize_message(serialize_message(frame), Image)

    print(f"compute, 800x600 bgra8, {frames} frames, torch threads 1 (back to back; 'paced': one per 50 ms):")
    for mode, period in (("deploy", 0.0), ("train", 0.0), ("deploy", 0.05)):
        context = Context()
        rclpy.init(
            context=context,
            args=[
                "--ros-args",
                "-p",
                f"mode:={mode}",
                "-p",
                "weights_trust:=any",
                "-p",
                f"weights_file:={weights}",
                "-p",
                "sensor_timeout:=60.0",
                "-p",
                "reset_service:=''",
                "-p",
                "reward.max_episode_steps:=100000",
            ],
        )
        node = PolicyNode(f"bench_policy_{mode}", context=context)
        node.trigger_configure()
        node.trigger_activate()
        node._on_route(path)
        samples = []
        tick = time.perf_counter()
        for i in range(frames + 20):
            received.header.stamp.sec, received.header.stamp.nanosec = 1000 + i, 0
            odom.header.stamp = received.header.stamp  # the bridge stamps a tick's odometry and image alike
            node._on_odometry(odom)
            start = time.perf_counter()
            node._on_camera(received)
            samples.append((time.perf_counter() - start) * 1e3)
            tick += period
            time.sleep(max(0.0, tick - time.perf_counter()))
        samples = samples[20:]
        print(_line(f"{mode}{', paced' if period else ''}: camera callback -> publish", samples))
        node.trigger_deactivate()
        node.destroy_node()
        rclpy.shutdown(context=context)

    # The parts, outside the node.
    runtime = PolicyRuntime()
    runtime.install(runtime.prepare(load_weights_file(weights, runtime), "bench"))
    encoder, route = KinematicsEncoder(), Route(np.asarray(ROUTE))
    parts = {"image -> 84x84 gray (cv_bridge+cv2)": [], "kinematics": [], "actor forward": []}
    stack = np.stack([to_gray84(image, "bgra8")] * 4)
    for _ in range(frames):
        t0 = time.perf_counter()
        to_gray84(image_to_array(received), received.encoding)
        t1 = time.perf_counter()
        kin = encoder.encode(route, POSE["x"], POSE["y"], POSE["yaw"], POSE["speed"])
        t2 = time.perf_counter()
        runtime.act(stack, kin)
        t3 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[key].append(dt * 1e3)
    for key, values in parts.items():
        print(_line(key, values))


def bench_swap(weights: str, swaps: int = 60, trust: str = "any") -> None:
    """Weights updates (7.7 MB PolicyWeights) handled in one thread while frames run in another,
    as in the node (two callback groups): swap time, and the camera callback with and without a
    swap in flight; with the node's FrameWindows (updates pause during frames) and without them
    (max_wait 0: an update never waits), side by side. `trust` signed: every update is signed and
    the node verifies it (weights_trust signed)."""
    results = {}
    for gated in (True, False):
        results[gated] = _bench_swap(weights, swaps, gated, trust)
    (g_swap, g_out, g_in), (u_swap, u_out, u_in) = results[True], results[False]

    def blocked(during, quiet) -> str:  # "inference never blocked > 1 ms": slower than quiet p99 + 1 ms
        return f"{sum(1 for d in during if d > _pct(quiet, 99) + 1.0)} of {len(during)}"

    gated_excess = _pct(g_in, 99) - _pct(g_out, 99)
    print(
        f"  ratio: callback p99 during a swap minus without, FrameWindows {gated_excess:+.2f} ms"
        f" vs none {_pct(u_in, 99) - _pct(u_out, 99):+.2f} ms (target <= 1 ms); p90 "
        f"{_pct(g_in, 90) - _pct(g_out, 90):+.2f} vs {_pct(u_in, 90) - _pct(u_out, 90):+.2f} ms\n"
        f"  callbacks during a swap > 1 ms slower than the quiet p99: FrameWindows {blocked(g_in, g_out)}, "
        f"none {blocked(u_in, u_out)}; message -> installed p50 "
        f"{_pct(g_swap, 50):.1f} vs {_pct(u_swap, 50):.1f} ms ({_pct(g_swap, 50) / _pct(u_swap, 50):.2f}x)"
    )


def _bench_swap(weights: str, swaps: int, gated: bool, trust: str = "any"):
    import threading

    import rclpy
    import torch
    from av_td3_msgs.msg import PolicyWeights
    from rclpy.context import Context
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from av_td3_ros.model import PolicyNetwork
    from av_td3_ros.nodes.policy_node import GIL_SWITCH_INTERVAL, PolicyNode
    from av_td3_ros.ros.conversions import policy_weights_to_message

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as policy_node's main() does
    _, frame, path, odom = _messages()
    received = deserialize_message(serialize_message(frame), Image)
    updates, key, trust_args = [], None, ["-p", "weights_trust:=any"]
    if trust == "signed":
        from av_td3_ros.learning import signing

        key = signing.generate_key_pair(Path(tempfile.mkdtemp()) / "bench.key")
        trust_args = ["-p", "weights_trust:=signed", "-p", f"trusted_keys:=[{key.source}.pub]"]
        Path(weights).write_bytes(signing.sign_payload(
            signing.with_metadata(Path(weights).read_bytes(), {"version": "1", "cnn_norm": "layer"}), key))
    for version in range(2, swaps + 2):
        torch.manual_seed(version)
        msg = policy_weights_to_message(PolicyNetwork().state_dict(), version, cnn_norm="layer",
                                        signing_key=key)
        updates.append(deserialize_message(serialize_message(msg), PolicyWeights))
    context = Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "mode:=deploy", *trust_args,
                                      "-p", f"weights_file:={weights}", "-p", "sensor_timeout:=60.0"])
    node = PolicyNode("bench_policy_swap", context=context)
    if not gated:
        from av_td3_ros.driving.frame_windows import FrameWindows

        node.windows = FrameWindows(max_wait=0.0)
    node.trigger_configure()
    node.trigger_activate()
    node._on_route(path)
    windows: list[tuple[float, float]] = []
    frames: list[tuple[float, float]] = []  # (start, duration ms)
    done = threading.Event()

    def camera_loop():  # a 20 Hz camera, as the bridge's 0.05 s tick
        i, tick = 0, time.perf_counter()
        while not done.is_set():
            received.header.stamp.sec, i = 5000 + i, i + 1
            odom.header.stamp = received.header.stamp
            node._on_odometry(odom)
            start = time.perf_counter()
            node._on_camera(received)
            frames.append((start, (time.perf_counter() - start) * 1e3))
            tick += 0.05
            time.sleep(max(0.0, tick - time.perf_counter()))

    thread = threading.Thread(target=camera_loop)
    thread.start()
    time.sleep(0.5)
    for msg in updates:
        start = time.perf_counter()
        node._on_weights(msg)
        windows.append((start, time.perf_counter()))
        time.sleep(0.2 + 0.05 * random.random())  # not in phase with the camera
    done.set()
    thread.join()
    assert node.runtime.version == swaps + 1, node.runtime.version
    swap_ms = [(b - a) * 1e3 for a, b in windows]
    during = [d for t, d in frames if any(a - 0.003 <= t <= b for a, b in windows)]
    outside = [d for t, d in frames if not any(a - 0.003 <= t <= b + 0.003 for a, b in windows)]
    print(f"weights swap ({swaps} x 7.7 MB PolicyWeights, weights_trust {trust}, validated + built off the "
          "camera thread, "
          f"{'FrameWindows: the update pauses during frames' if gated else 'no FrameWindows'}):")
    print(_line("message -> installed", swap_ms))
    print(_line("camera callback, no swap running", outside))
    print(_line("camera callback during a swap", during))
    node.trigger_deactivate()
    node.destroy_node()
    rclpy.shutdown(context=context)
    return swap_ms, outside, during


# ----------------------------------------------------------------------------------------------
# 2. camera -> control through DDS
# ----------------------------------------------------------------------------------------------


def run_bridge(frames: int, period: float) -> None:
    """Subprocess role: publish frames, wait for each control, print the latencies as JSON."""
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    import threading

    import rclpy
    from carla_msgs.msg import CarlaEgoVehicleControl
    from nav_msgs.msg import Odometry
    from nav_msgs.msg import Path as PathMsg
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from av_td3_ros.ros import qos

    _, frame, path, odom = _messages()
    rclpy.init()
    node = rclpy.create_node("bench_bridge")
    camera = node.create_publisher(Image, "/carla/bench/rgb_front/image", qos.CAMERA_QOS)
    odom_pub = node.create_publisher(Odometry, "/carla/bench/odometry", 10)
    route_pub = node.create_publisher(PathMsg, "/carla/bench/waypoints", qos.ROUTE_QOS)
    received: dict[int, int] = {}
    got = threading.Event()

    def on_control(msg):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        received[stamp] = time.time_ns()
        got.set()

    node.create_subscription(
        CarlaEgoVehicleControl, "/carla/bench/vehicle_control_cmd", on_control, qos.CONTROL_QOS
    )
    node.create_timer(0.05, lambda: odom_pub.publish(odom))
    route_pub.publish(path)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + 60
    while camera.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # route and odometry reach the node
    latencies, lost = [], 0
    for i in range(frames + 20):
        tick = time.monotonic()
        now = time.time_ns()
        frame.header.stamp.sec, frame.header.stamp.nanosec = divmod(now, 1_000_000_000)
        odom.header.stamp = frame.header.stamp  # one bridge tick: odometry and image, one stamp
        odom_pub.publish(odom)
        got.clear()
        camera.publish(frame)
        end = time.monotonic() + 1.0
        while now not in received and time.monotonic() < end:
            got.wait(0.05)
            got.clear()
        if now in received:
            if i >= 20:
                latencies.append((received[now] - now) / 1e6)
        elif i >= 20:
            lost += 1
        time.sleep(max(0.0, period - (time.monotonic() - tick)))
    print(json.dumps({"latencies_ms": latencies, "lost": lost}), flush=True)
    executor.shutdown()
    spinner.join(timeout=5)
    node.destroy_node()
    rclpy.try_shutdown()


def bench_dds(frames: int, weights: str) -> None:
    print(f"camera -> control between processes, 800x600 bgra8 at 20 Hz, {frames} frames:")
    results = {}
    for label, profile in (("default transports", ""), ("config/fastdds_shm.xml", str(PROFILE))):
        env = _env()
        if profile:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "av_td3_ros.nodes.policy_node",
                "--ros-args",
                "-p",
                "role_name:=bench",
                "-p",
                "mode:=deploy",
                "-p",
                "weights_trust:=any",  # unsigned weights; bench/weights_signing.py times signing
                "-p",
                f"weights_file:={weights}",
                "-p",
                "sensor_timeout:=5.0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            bridge = subprocess.run(
                [sys.executable, __file__, "--bridge", "--frames", str(frames)],
                env=env,
                capture_output=True,
                text=True,
                timeout=frames * 1.2 + 120,
            )
        finally:
            node.terminate()
            node.wait(timeout=20)
        if bridge.returncode != 0 or not bridge.stdout.strip():
            print(bridge.stdout[-2000:], bridge.stderr[-2000:])
            raise SystemExit(f"bridge failed ({label})")
        data = json.loads(bridge.stdout.strip().splitlines()[-1])
        results[label] = data["latencies_ms"]
        print(_line(label, data["latencies_ms"]) + f"   lost {data['lost']}")
    a, b = results["default transports"], results["config/fastdds_shm.xml"]
    if a and b:
        p50, p99 = _pct(a, 50) / _pct(b, 50), _pct(a, 99) / _pct(b, 99)
        print(f"  ratio default / profile: p50 {p50:.1f}x, p99 {p99:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--skip-dds", action="store_true")
    parser.add_argument("--skip-compute", action="store_true")
    parser.add_argument("--swap-trust", choices=("any", "signed"), default="any",
                        help="signed: the swap part sends signed weights to a weights_trust signed node")
    parser.add_argument("--swap-only", action="store_true", help="only the in-node swap part")
    parser.add_argument("--bridge", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bridge:
        run_bridge(args.frames, 0.05)
        return
    env = _env()
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR"):
        os.environ[key] = env[key]
    with tempfile.TemporaryDirectory() as tmp:
        weights = _weights_file(tmp)
        if args.swap_only:
            bench_swap(weights, trust=args.swap_trust)
            return
        if not args.skip_compute:
            bench_compute(args.frames, weights)
            bench_swap(weights, trust=args.swap_trust)
        if not args.skip_dds:
            bench_dds(args.frames, weights)


if __name__ == "__main__":
    main()
