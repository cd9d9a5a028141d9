"""Weights swap end to end, unsigned and signed side by side in one run: publish -> first frame
driven by the new weights, and where that time went.

    PYTHONPATH=. .venv/bin/python bench/weights_swap.py [--swaps 12] [--warmup 2] [--size 800x600]

Two deploy-mode policy nodes run as their own processes on real DDS: `any_car` with
`weights_trust any` and `signed_car` with `weights_trust signed` (one trusted key). This process
is their CARLA bridge (camera frames at the camera's 20 Hz to both, odometry, route) and their
trainer: it publishes full 7.7 MB PolicyWeights (stamped with the wall clock at publish), taking
turns between the two cars (which goes first alternates), at a random phase of the frame period.
A swap's latency is publish -> the first control received whose action is the new policy's (the
action of the 4-frame stack at the fixed pose, computed here), so it contains the wait for the
next camera frame after the install and that frame's compute: the budget is "driving with the new
weights". Each swap's breakdown comes from the node's /diagnostics (`last_swap_*`, SwapTiming):
delivery (stamp -> weights callback: serialization, DDS, deserialization, executor hand-off),
decode and prepare (validation, signature, safetensors, network build, trial run), the part of
those two spent in FrameWindows.pause, and the rest (install -> the next frame's control here).

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and one ROS_DOMAIN_ID (the caller's,
else a random one in 150..200). Not a timed test: it prints numbers; the criterion (median and
p90 of the signed swap < 200 ms) is docs/benchmarks.md's.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from av_td3_ros.demo.environment import caller_ros_environment

REPO = Path(__file__).resolve().parents[1]
MODES = ("any", "signed")
ROLES = {"any": "any_car", "signed": "signed_car"}
BUDGET_MS = 200.0
FRAME_PERIOD = 0.05  # the camera's 20 Hz
T0, DT = 1_000_000_000_000, 50_000_000  # frame stamps: sim time 1000 s + i * 50 ms
POSE = dict(x=5.0, y=0.4, yaw=0.05, speed=5.0)
STEPS = ("delivery", "decode", "prepare", "frame_wait")


def _pct(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def _weights(seed: int) -> dict:
    import torch

    from av_td3_ros.model import PolicyNetwork

    torch.manual_seed(seed)
    net = PolicyNetwork()
    with torch.no_grad():  # larger actor weights than the init, so two policies clearly differ
        for p in net.actor.parameters():
            p.mul_(3.0)
    return net.state_dict()


class Bridge:
    """Camera, odometry and route for both cars, their weights publishers, and what they send."""

    def __init__(self, image):
        import numpy as np
        import rclpy
        from av_td3_msgs.msg import PolicyWeights
        from carla_msgs.msg import CarlaEgoVehicleControl
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from nav_msgs.msg import Path as PathMsg
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image

        from av_td3_ros.ros import qos
        from av_td3_ros.ros.conversions import array_to_image, stamp_to_ns

        rclpy.init()
        self.node = rclpy.create_node("weights_swap_bench")
        self.image_msg = array_to_image(image, "bgra8", frame_id="ego_camera")
        self.Odometry, self.stamp_to_ns = Odometry, stamp_to_ns
        self.lock = threading.Lock()
        self.controls = {mode: [] for mode in MODES}  # (steer, throttle, brake, received monotonic)
        self.diagnostics = {mode: {} for mode in MODES}
        self.cameras, self.odometry, self.weights = {}, {}, {}
        route = PathMsg()
        route.header.frame_id = "map"
        for x in np.arange(0.0, 200.0, 1.0):
            pose = PoseStamped()
            pose.pose.position.x = float(x)
            route.poses.append(pose)
        self.routes = []
        for mode, role in ROLES.items():
            prefix = f"/carla/{role}"
            node = self.node
            self.cameras[mode] = node.create_publisher(Image, f"{prefix}/rgb_front/image", qos.CAMERA_QOS)
            self.odometry[mode] = node.create_publisher(Odometry, f"{prefix}/odometry", QoSProfile(depth=10))
            self.routes.append(node.create_publisher(PathMsg, f"{prefix}/waypoints", qos.ROUTE_QOS))
            self.routes[-1].publish(route)
            self.weights[mode] = node.create_publisher(PolicyWeights, f"/{role}/weights", qos.WEIGHTS_QOS)
            node.create_subscription(CarlaEgoVehicleControl, f"{prefix}/vehicle_control_cmd",
                                     lambda msg, mode=mode: self._on_control(mode, msg), qos.CONTROL_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                      qos.DIAGNOSTICS_QOS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.running = True
        self.threads = [threading.Thread(target=self._spin, daemon=True),
                        threading.Thread(target=self._stream, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _spin(self) -> None:
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def _stream(self) -> None:
        """Odometry then a camera frame for each car, every 50 ms on a fixed schedule."""
        tick, start = 0, time.monotonic()
        while self.running:
            odometry = self.Odometry()
            odometry.header.frame_id = "map"
            odometry.header.stamp = self.node.get_clock().now().to_msg()
            odometry.pose.pose.position.x, odometry.pose.pose.position.y = POSE["x"], POSE["y"]
            odometry.pose.pose.orientation.z = math.sin(POSE["yaw"] / 2)
            odometry.pose.pose.orientation.w = math.cos(POSE["yaw"] / 2)
            odometry.twist.twist.linear.x = POSE["speed"]
            stamp = T0 + tick * DT
            header = self.image_msg.header
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            for mode in MODES:
                self.odometry[mode].publish(odometry)
                self.cameras[mode].publish(self.image_msg)
            tick += 1
            time.sleep(max(start + tick * FRAME_PERIOD - time.monotonic(), 0.0))

    def _on_control(self, mode: str, msg) -> None:
        with self.lock:
            self.controls[mode].append((msg.steer, msg.throttle, msg.brake, time.monotonic()))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            for mode, role in ROLES.items():
                if status.hardware_id == role:
                    with self.lock:
                        self.diagnostics[mode] = {kv.key: kv.value for kv in status.values}

    def diag(self, mode: str) -> dict:
        with self.lock:
            return dict(self.diagnostics[mode])

    def first_driven(self, mode: str, after: float, action, timeout: float = 10.0) -> float | None:
        """The receive time of the first control after `after` that the policy with `action` drove."""
        import numpy as np

        steer, pedal = float(np.clip(action[0], -1, 1)), float(np.clip(action[1], -1, 1))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for s, throttle, brake, received in self.controls[mode]:
                    if received > after and abs(s - steer) < 1e-4 and abs(throttle - brake - pedal) < 1e-4:
                        return received
                del self.controls[mode][:-200]
            time.sleep(0.002)
        return None

    def close(self) -> None:
        import rclpy

        self.running = False
        for thread in self.threads:
            thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _expected_action(state_dict, image):
    import numpy as np
    import torch

    from av_td3_ros.model import PolicyNetwork
    from av_td3_ros.perception.image import to_gray84
    from av_td3_ros.perception.kinematics import KinematicsEncoder, Route

    net = PolicyNetwork(norm="layer")
    net.load_state_dict(state_dict)
    net.eval()
    frames = torch.from_numpy(np.stack([to_gray84(image, "bgra8")] * 4)).unsqueeze(0)
    route = Route(np.stack([np.arange(0.0, 200.0, 1.0), np.zeros(200)], axis=1))
    kin = KinematicsEncoder().encode(route, POSE["x"], POSE["y"], POSE["yaw"], POSE["speed"])
    with torch.inference_mode():
        return net(frames, torch.from_numpy(kin).unsqueeze(0))[0].numpy()


def _start_node(mode: str, weights_file: Path, public_key: Path, env: dict, log: Path) -> subprocess.Popen:
    role = ROLES[mode]
    args = [sys.executable, "-m", "av_td3_ros.nodes.policy_node", "--ros-args",
            "-r", f"__node:=policy_{role}"]
    for param in (f"role_name:={role}", f"actor_id:={role}", "mode:=deploy",
                  f"weights_topic:=/{role}/weights", "sensor_timeout:=5.0", "diagnostics_period:=0.2",
                  f"weights_file:={weights_file}", f"weights_trust:={mode}", f"trusted_keys:=[{public_key}]"):
        args += ["-p", param]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _line(name: str, values) -> str:
    return f"  {name:<22} p50 {_pct(values, 50):7.1f} ms   p90 {_pct(values, 90):7.1f} ms   " \
           f"max {max(values, default=float('nan')):7.1f} ms   (n={len(values)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--swaps", type=int, default=12, help="measured swaps per mode")
    ap.add_argument("--warmup", type=int, default=2, help="swaps per mode not counted (torch lazy init)")
    ap.add_argument("--size", default="800x600", help="camera frame WIDTHxHEIGHT (bgra8)")
    ap.add_argument("--transports", choices=("shm", "default"), default="shm",
                    help="shm: config/fastdds_shm.xml in every process (what `make demo` and the "
                         "Docker image use); default: Fast DDS's built-in transports (512 KB "
                         "shared-memory segments)")
    args = ap.parse_args()
    import numpy as np

    from av_td3_ros.learning import signing
    from av_td3_ros.ros.conversions import policy_weights_to_message

    env = caller_ros_environment(150, 200)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if args.transports == "shm":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    os.environ.update(env)
    print(f"ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, transports {args.transports}, "
          f"load average {os.getloadavg()[0]:.2f}")
    width, height = (int(v) for v in args.size.split("x"))
    image = np.random.default_rng(7).integers(0, 256, (height, width, 4), dtype=np.uint8)
    folder = Path(tempfile.mkdtemp(prefix="weights_swap_bench-"))
    key = signing.generate_key_pair(folder / "trainer.key")
    nodes = {}
    for mode in MODES:
        first = policy_weights_to_message(_weights(1), 1, action_limit=0.6, cnn_norm="layer", max_action=1.0,
                                          signing_key=key if mode == "signed" else None)
        (folder / f"{mode}.safetensors").write_bytes(first.payload.tobytes())
        nodes[mode] = _start_node(mode, folder / f"{mode}.safetensors", folder / "trainer.key.pub", env,
                                  folder / f"{mode}.stderr")
    bridge = Bridge(image)
    latencies = {mode: [] for mode in MODES}
    parts = {mode: {step: [] for step in (*STEPS, "rest")} for mode in MODES}
    try:
        for mode in MODES:  # both nodes drive their v1 file
            if bridge.first_driven(mode, 0.0, _expected_action(_weights(1), image), timeout=60) is None:
                log = (folder / f"{mode}.stderr").read_text()[-2000:]
                raise SystemExit(f"{mode} node never drove: {log}")
        rng = random.Random(3)
        for i in range(args.warmup + args.swaps):
            version = i + 2
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                state = _weights(100 * version + MODES.index(mode))
                action = _expected_action(state, image)
                msg = policy_weights_to_message(state, version, action_limit=0.6, cnn_norm="layer",
                                                max_action=1.0, signing_key=key if mode == "signed" else None)
                time.sleep(rng.uniform(0.0, FRAME_PERIOD))  # a random phase against the frames
                msg.stamp = bridge.node.get_clock().now().to_msg()
                published = time.monotonic()
                bridge.weights[mode].publish(msg)
                driven = bridge.first_driven(mode, published, action)
                if driven is None:
                    raise SystemExit(f"{mode} version {version} never drove: {bridge.diag(mode)}")
                deadline = time.monotonic() + 5
                while (bridge.diag(mode).get("last_swap_version") != str(version)
                       and time.monotonic() < deadline):
                    time.sleep(0.02)
                diag = bridge.diag(mode)
                total = (driven - published) * 1e3
                tag = "warm-up" if i < args.warmup else ""
                got = {step: float(diag.get(f"last_swap_{step}_ms", "nan")) for step in STEPS}
                print(f"  {mode:<6} v{version:<3} {total:6.1f} ms  " +
                      "  ".join(f"{s} {v:5.1f}" for s, v in got.items()) + f"  {tag}", flush=True)
                if i < args.warmup:
                    continue
                latencies[mode].append(total)
                for step, value in got.items():
                    parts[mode][step].append(value)
                parts[mode]["rest"].append(total - got["delivery"] - got["decode"] - got["prepare"])
                time.sleep(0.3)
    finally:
        bridge.close()
        for proc in nodes.values():
            proc.terminate()
        for proc in nodes.values():
            proc.wait(timeout=20)
    print(f"\nweights swap, publish -> first frame driven by the new weights ({width}x{height} frames "
          f"at 20 Hz, 7.7 MB payload, transports {args.transports}, "
          f"load average now {os.getloadavg()[0]:.2f}):")
    for mode in MODES:
        print(f" weights_trust {mode}:")
        print(_line("publish -> driving", latencies[mode]))
        for step in (*STEPS, "rest"):
            print(_line(step + (" (in decode+prepare)" if step == "frame_wait" else ""), parts[mode][step]))
    ratio50 = _pct(latencies["signed"], 50) / _pct(latencies["any"], 50)
    ratio90 = _pct(latencies["signed"], 90) / _pct(latencies["any"], 90)
    print(f"  ratio signed / unsigned: p50 {ratio50:.2f}x, p90 {ratio90:.2f}x")
    for mode in MODES:
        p50, p90 = _pct(latencies[mode], 50), _pct(latencies[mode], 90)
        print(f"  ratio {mode} p50 / {BUDGET_MS:.0f} ms budget = {p50 / BUDGET_MS:.2f}, "
              f"p90 = {p90 / BUDGET_MS:.2f}")
    ok = _pct(latencies["signed"], 90) < BUDGET_MS
    print(f"  signed swap p90 < {BUDGET_MS:.0f} ms: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
