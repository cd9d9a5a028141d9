"""Policy compute per frame: torch (PolicyRuntime.act) vs onnxruntime (OnnxPolicyRuntime.act), side by side.

    .venv/bin/python bench/inference_backends.py [--calls 2000] [--weights policy.safetensors]

Both backends run the same weights (a file given with --weights, else a seeded PolicyNetwork:
same architecture, same arithmetic) on 1 thread, batch 1, on observations rendered by the embedded
simulator (frames through the policy node's perception, the 23 kinematics from its pose and route).
Each call is timed around `act(frames, kinematics)` - what the policy node's control loop calls:
numpy in, (2,) numpy out. The two backends alternate call by call (the order flips every call), so
both see the same machine load. Prints p50/p90/p99/max per backend, their ratio, and the largest
action difference between them. No ROS; not a timed test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q))


def _line(name: str, ms: list[float]) -> str:
    return (f"  {name:<12} p50 {_pct(ms, 50):6.3f} ms   p90 {_pct(ms, 90):6.3f} ms   "
            f"p99 {_pct(ms, 99):6.3f} ms   max {max(ms):7.3f} ms   (n={len(ms)})")


def _busy_share(seconds: float = 1.0) -> float:
    """Share of all CPU time busy over `seconds` (/proc/stat), before the bench starts."""
    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def _observations(runtime, count: int, seed: int):
    from av_td3_ros.demo.evaluation import evaluate
    from av_td3_ros.perception.reward import RewardConfig

    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def driver(frames, kinematics):
        seen.append((frames.copy(), kinematics.copy()))
        return runtime.act(frames, kinematics)[0]

    episode = 0
    while len(seen) < count:
        evaluate(driver, "torch", episodes=1, seed=seed + episode, reward=RewardConfig(max_episode_steps=300))
        episode += 1
    return seen[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per backend (2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per backend first (100)")
    parser.add_argument("--observations", type=int, default=300, help="distinct simulator observations (300)")
    parser.add_argument("--weights", default="", help="safetensors weights (default: a seeded PolicyNetwork)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import onnxruntime
    import torch

    from av_td3_ros.deploy.onnx_policy import OnnxPolicyRuntime, export_onnx
    from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file
    from av_td3_ros.learning.weights import encode_policy_weights
    from av_td3_ros.model import PolicyNetwork

    busy = _busy_share()
    with tempfile.TemporaryDirectory(prefix="av_td3_bench_onnx-") as directory:
        weights = Path(args.weights) if args.weights else Path(directory) / "policy.safetensors"
        if not args.weights:
            torch.manual_seed(args.seed)
            weights.write_bytes(encode_policy_weights(PolicyNetwork().state_dict(), {"version": 1}))
        onnx_path = Path(directory) / "policy.onnx"
        export_onnx(weights, onnx_path)
        torch_backend = PolicyRuntime(torch_threads=1)
        torch_backend.install(torch_backend.prepare(load_weights_file(weights, torch_backend), str(weights)))
        onnx_backend = OnnxPolicyRuntime(threads=1)
        onnx_backend.load(onnx_path)

    observations = _observations(torch_backend, args.observations, args.seed)
    backends = {"torch": torch_backend, "onnxruntime": onnx_backend}
    for backend in backends.values():
        for i in range(args.warmup):
            backend.act(*observations[i % len(observations)])

    timings: dict[str, list[float]] = {name: [] for name in backends}
    difference = 0.0
    order = list(backends)
    for i in range(args.calls):
        frames, kinematics = observations[i % len(observations)]
        actions = {}
        for name in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            actions[name] = backends[name].act(frames, kinematics)[0]
            timings[name].append((time.perf_counter() - start) * 1e3)
        difference = max(difference, float(np.abs(actions["torch"] - actions["onnxruntime"]).max()))

    print(f"policy compute per frame, batch 1, 1 thread: torch {torch.__version__} (intra-op threads "
          f"{torch.get_num_threads()}) vs onnxruntime {onnxruntime.__version__} (intra_op_num_threads 1)")
    print(f"machine: {os.cpu_count()} cores, {busy:.0%} busy in the second before the bench, "
          f"load average {os.getloadavg()[0]:.2f}; {len(observations)} simulator observations, cycled")
    for name, ms in timings.items():
        print(_line(name, ms))
    t, o = timings["torch"], timings["onnxruntime"]
    ratio50, ratio99 = _pct(o, 50) / _pct(t, 50), _pct(o, 99) / _pct(t, 99)
    print(f"  onnxruntime / torch: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x")
    print(f"  largest |action difference| over all calls: {difference:.2e}")


if __name__ == "__main__":
    main()
