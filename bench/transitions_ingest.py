"""Trainer ingest and weights swap, across processes over real DDS.

    .venv/bin/python bench/transitions_ingest.py [--publishers 4] [--messages 2500] [--rate 400]
                                                 [--skip-ingest] [--skip-swap]

1. ingest: a trainer_node process and N transition publisher processes (test/programs/
   transition_publisher.py: valid START/STEP streams of 84x84 frames, exactly what a policy node
   sends, RELIABLE depth 1000). Measured from the trainer's own TrainingStatus counters: messages
   received per second from the first to the last, lost (seq gaps) and dropped. Three runs:
     a. paced at --rate msg/s per publisher, learner idle (pure ingest);
     b. paced, learner busy (TD3 updates at batch 64 in the learner thread, competing for CPU);
     c. unpaced (each publisher as fast as it can), learner idle: the ceiling.
   Target: >= 1,000 transitions/s with 0 lost (4 policy nodes at 20 Hz send 80/s).
2. swap: the trainer publishes the full actor (NatureCNN + MLP, ~7.7 MB safetensors) every few
   updates; a policy-side process receives each PolicyWeights, validates it with the policy
   node's own path (conversions.policy_weights_from_message + PolicyRuntime.prepare/install, off
   the inference thread, pausing during inferences through FrameWindows) while an inference
   thread runs the actor at 50 Hz. Reported: trainer
   publish decision (the message stamp, before encoding) -> received -> applied, p50/p99/max, and
   inference latency with and without swaps in flight. Target: applied < 200 ms after publish;
   inference never blocked > 1 ms by a swap.

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and one ROS_DOMAIN_ID (from the
environment, else a random one in 101..200). Not a timed test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from av_td3_ros.demo.environment import caller_ros_environment

REPO = Path(__file__).resolve().parents[1]
PUBLISHER = REPO / "test" / "programs" / "transition_publisher.py"


def _env() -> dict[str, str]:
    env = caller_ros_environment(101, 200)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pct(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def _line(name: str, values_ms) -> str:
    return (f"  {name:<40} p50 {_pct(values_ms, 50):8.2f} ms  p99 {_pct(values_ms, 99):8.2f} ms  "
            f"max {max(values_ms, default=float('nan')):8.2f} ms  (n={len(values_ms)})")


def _trainer(env, workdir: Path, **params) -> subprocess.Popen:
    values = {"status_period": 0.1, "checkpoint_dir": '""', "log_dir": '""', "replay_capacity": 50_000,
              "td3.device": "cpu", "seed": 0}
    values.update(params)
    args = [sys.executable, "-m", "av_td3_ros.nodes.trainer_node", "--ros-args"]
    for key, value in values.items():
        args += ["-p", f"{key}:={value}"]
    err = open(workdir / f"trainer-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=err, stderr=err, cwd=workdir)
    proc.log_path = err.name  # type: ignore[attr-defined]
    return proc


class _StatusWatcher:
    """(monotonic time, TrainingStatus) samples from an in-process subscriber."""

    def __init__(self, node) -> None:
        from av_td3_msgs.msg import TrainingStatus

        from av_td3_ros.ros.qos import STATUS_QOS

        self.samples: list = []
        self.lock = threading.Lock()
        node.create_subscription(TrainingStatus, "/av_td3/training_status", self._on, STATUS_QOS)

    def _on(self, msg) -> None:
        with self.lock:
            self.samples.append((time.monotonic(), msg))

    def clear(self) -> None:
        with self.lock:
            self.samples.clear()

    def last(self):
        with self.lock:
            return self.samples[-1][1] if self.samples else None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait(pred, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"trainer exited ({proc.returncode}) while waiting for {what}; "
                             f"see {proc.log_path}")
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def run_ingest(env, workdir: Path, watcher: _StatusWatcher, label: str, publishers: int, messages: int,
               rate: float, learn: bool, executor: str) -> dict:
    params = {"learning_starts": 500, "td3.batch_size": 64, "update_to_data_ratio": 1.0} if learn \
        else {"learning_starts": 1_000_000_000}
    params["executor"] = executor
    trainer = _trainer(env, workdir, **params)
    try:
        watcher.clear()
        _wait(lambda: watcher.last() is not None, 60, "the trainer's status", trainer)
        time.sleep(1.0)
        rss_start = _rss_mb(trainer.pid)
        episodes = max(1, messages // 20)
        pubs = [subprocess.Popen(
            [sys.executable, str(PUBLISHER), "--actor-id", f"bench{i}", "--episodes", str(episodes),
             "--episode-length", "19", "--rate", str(rate)], env=env, stdout=subprocess.PIPE, text=True)
            for i in range(publishers)]
        results = []
        for p in pubs:
            out, _ = p.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]))
        total = sum(r["sent"] for r in results)
        # wait until everything is accounted for, or nothing changed for 3 s (a flood loses the
        # first messages of a stream without a trace: no earlier seq reveals them)
        last_change, last_count = time.monotonic(), -1
        while time.monotonic() - last_change < 3.0:
            s = watcher.last()
            count = s.transitions_received + s.transitions_lost
            if count >= total:
                break
            if count != last_count:
                last_change, last_count = time.monotonic(), count
            if trainer.poll() is not None:
                raise SystemExit(f"trainer exited ({trainer.returncode}); see {trainer.log_path}")
            time.sleep(0.05)
        time.sleep(0.3)
        rss_end = _rss_mb(trainer.pid)
        with watcher.lock:
            samples = list(watcher.samples)
        final = samples[-1][1]
        start = next(t for t, s in samples if s.transitions_received > 0)
        end = next(t for t, s in samples if s.transitions_received >= final.transitions_received)
        unaccounted = total - final.transitions_received - final.transitions_lost
        # status samples are 0.1 s apart: count the first sample's messages as arriving at its time
        first_count = next(s.transitions_received for t, s in samples if s.transitions_received > 0)
        elapsed = max(end - start, 1e-9)
        rate_rx = (final.transitions_received - first_count) / elapsed if end > start else float("nan")
        offered = sum(r["sent"] for r in results) / max(max(r["seconds"] for r in results), 1e-9)
        out = {"label": label, "sent": total, "received": final.transitions_received,
               "lost": final.transitions_lost, "unaccounted": unaccounted,
               "dropped": final.transitions_dropped, "offered_per_s": offered,
               "received_per_s": rate_rx, "updates": final.updates, "replay": final.replay_size,
               "rss_start_mb": rss_start, "rss_end_mb": rss_end}
        print(f"  {label:<44} sent {total:6d}  received {out['received']:6d}  lost {out['lost']:4d}  "
              f"dropped {out['dropped']:4d}  offered {offered:7.0f}/s  ingested {rate_rx:7.0f}/s  "
              f"(updates: {final.updates}{f', never seen: {unaccounted}' if unaccounted else ''})",
              flush=True)
        # every accepted message (START or STEP) takes one replay slot of ~7.2 KB
        slots = final.transitions_received - final.transitions_dropped
        print(f"  {'':<44} trainer RSS {rss_start:6.0f} -> {rss_end:6.0f} MB: "
              f"+{rss_end - rss_start:5.0f} MB for {slots} replay slots x 7.19 KB = "
              f"{slots * 7193 / 2**20:5.0f} MB", flush=True)
        return out
    finally:
        trainer.terminate()
        trainer.wait(timeout=60)


def run_swap(env, workdir: Path, seconds: float, publish_every: int, torch_threads: int) -> dict:
    trainer = _trainer(env, workdir, learning_starts=64, **{"td3.batch_size": 32}, update_to_data_ratio=1.0,
                       publish_every=publish_every, torch_threads=torch_threads)
    sub = subprocess.Popen([sys.executable, __file__, "--role", "swap-subscriber", "--seconds", str(seconds)],
                           env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)  # both up; the subscriber measures its no-swap inference baseline meanwhile
        feeder = subprocess.Popen(
            [sys.executable, str(PUBLISHER), "--actor-id", "swapfeed", "--episodes", "1000",
             "--episode-length", "19", "--rate", "80"], env=env, stdout=subprocess.DEVNULL)
        out, _ = sub.communicate(timeout=seconds + 120)
        feeder.kill()
        feeder.wait()
        return json.loads(out.strip().splitlines()[-1])
    finally:
        trainer.terminate()
        trainer.wait(timeout=60)


def swap_subscriber(seconds: float) -> None:
    """The policy side: receive PolicyWeights, validate + install off the inference thread, while an
    inference thread runs the actor at 50 Hz. Prints one JSON line."""
    import numpy as np
    import rclpy
    from av_td3_msgs.msg import PolicyWeights
    from rclpy.executors import SingleThreadedExecutor

    from av_td3_ros.driving.frame_windows import FrameWindows
    from av_td3_ros.driving.runtime import PolicyRuntime
    from av_td3_ros.nodes.policy_node import GIL_SWITCH_INTERVAL
    from av_td3_ros.ros.conversions import policy_weights_from_message
    from av_td3_ros.ros.qos import WEIGHTS_QOS

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as policy_node's main() does
    rclpy.init()
    node = rclpy.create_node("swap_bench_policy")
    runtime = PolicyRuntime(torch_threads=1)
    windows = FrameWindows()  # as the node: the update pauses while an inference runs
    swaps: list[dict] = []
    swapping = threading.Event()
    frames = np.random.default_rng(0).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    kin = np.zeros(23, np.float32)

    def on_weights(msg) -> None:
        received = time.time()
        swapping.set()
        stamp = msg.stamp.sec + msg.stamp.nanosec * 1e-9
        try:
            decoded = policy_weights_from_message(msg, runtime.reference_state_dict,
                                                  runtime.max_weights_bytes, windows.pause)
            policy = runtime.prepare(decoded, "topic", windows.pause)
            prepared = time.time()
            runtime.install(policy)
            applied = time.time()
            swaps.append({"version": msg.version, "bytes": len(msg.payload),
                          "transport_ms": 1000 * (received - stamp),
                          "validate_ms": 1000 * (prepared - received),
                          "install_ms": 1000 * (applied - prepared),
                          "publish_to_applied_ms": 1000 * (applied - stamp)})
        finally:
            swapping.clear()

    node.create_subscription(PolicyWeights, "/av_td3/policy_weights", on_weights, WEIGHTS_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    spin = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
    infer_quiet: list[float] = []
    infer_swap: list[float] = []
    spin.start()
    deadline = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < deadline:
        busy = swapping.is_set()
        t0 = time.perf_counter()
        if runtime.policy is not None:  # nothing to run before the first weights
            with windows.frame():
                runtime.act(frames, kin)
        dt = 1000 * (time.perf_counter() - t0)
        if runtime.policy is not None:
            (infer_swap if busy or swapping.is_set() else infer_quiet).append(dt)
        next_tick += 0.02
        time.sleep(max(0.0, next_tick - time.monotonic()))
    stop.set()
    spin.join(5)
    print(json.dumps({"swaps": swaps, "infer_quiet_ms": infer_quiet, "infer_during_swap_ms": infer_swap}),
          flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _spin(executor, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)


def report_swap(res: dict) -> None:
    swaps = res["swaps"]
    if not swaps:
        print("  no weights arrived", flush=True)
        return
    warm_up = [f"{s['publish_to_applied_ms']:.0f}" for s in swaps[:2]]
    print(f"  {len(swaps)} swaps of {swaps[0]['bytes'] / 1e6:.1f} MB; warm-up (not counted below): the first "
          f"(torch's lazy init in the subscriber) and the next (queued behind it) took "
          f"{', '.join(warm_up)} ms to apply", flush=True)
    swaps = swaps[2:]
    if os.environ.get("AV_TD3_BENCH_VERBOSE"):
        print("  publish -> received per swap (ms):", [round(s["transport_ms"]) for s in swaps], flush=True)
    for key, name in (("transport_ms", "publish decision -> received"),
                      ("validate_ms", "validate (off thread)"),
                      ("install_ms", "install (reference swap)"),
                      ("publish_to_applied_ms", "publish decision -> applied")):
        print(_line(name, [s[key] for s in swaps]), flush=True)
    print(_line("inference, no swap in flight", res["infer_quiet_ms"]), flush=True)
    print(_line("inference, swap in flight", res["infer_during_swap_ms"]), flush=True)
    applied = [s["publish_to_applied_ms"] for s in swaps]
    quiet, busy = res["infer_quiet_ms"], res["infer_during_swap_ms"]
    print(f"  ratio applied p99 / 200 ms target = {_pct(applied, 99) / 200:.2f}; inference p99 "
          f"during swap - quiet = {_pct(busy, 99) - _pct(quiet, 99):.2f} ms (target <= 1 ms)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--messages", type=int, default=2500, help="per publisher")
    ap.add_argument("--rate", type=float, default=400.0, help="msg/s per publisher in the paced runs")
    ap.add_argument("--fast-rate", type=float, default=1000.0, help="msg/s per publisher in run c")
    ap.add_argument("--executors", default="events,single_threaded", help="trainer executors to compare")
    ap.add_argument("--swap-seconds", type=float, default=25.0)
    ap.add_argument("--swap-publish-every", type=int, default=10, help="trainer updates per weights version")
    ap.add_argument("--profiles", default="default,shm", help="DDS transports for the swap runs")
    ap.add_argument("--swap-torch-threads", default="0,1",
                    help="trainer torch_threads for the swap runs (0 = torch's default: all cores)")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-swap", action="store_true")
    ap.add_argument("--role", default="driver", choices=("driver", "swap-subscriber"))
    ap.add_argument("--seconds", type=float, default=25.0)
    args = ap.parse_args()
    if args.role == "swap-subscriber":
        swap_subscriber(args.seconds)
        return

    env = _env()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR")})
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    workdir = Path(tempfile.mkdtemp(prefix="av_td3_bench_ingest-"))
    print(f"domain {env['ROS_DOMAIN_ID']}, {os.cpu_count()} cores, logs in {workdir}", flush=True)
    results = {}
    if not args.skip_ingest:
        rclpy.init()
        node = rclpy.create_node("ingest_bench")
        watcher = _StatusWatcher(node)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        stop = threading.Event()
        spin = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
        spin.start()
        n, m, r = args.publishers, args.messages, args.rate
        print(f"ingest: {n} publisher processes x {m} messages -> trainer_node", flush=True)
        runs = [("paced_idle", f"a. {r:.0f}/s each, learner idle", r, False),
                ("paced_learning", f"b. {r:.0f}/s each, learner updating", r, True),
                ("fast_idle", f"c. {args.fast_rate:.0f}/s each, learner idle", args.fast_rate, False),
                ("unpaced_idle", "d. unpaced flood, learner idle", 0, False)]
        for executor_name in args.executors.split(","):
            print(f" executor {executor_name}:", flush=True)
            for key, label, rate, learn in runs:
                results[f"{executor_name}/{key}"] = run_ingest(env, workdir, watcher, label, n, m, rate,
                                                               learn, executor_name)
        stop.set()
        spin.join(5)
        node.destroy_node()
        rclpy.shutdown()
        for key, res in results.items():
            print(f"  ratio {key}: ingested / (1,000/s target) = {res['received_per_s'] / 1000:.2f}x, "
                  f"received / offered = {res['received_per_s'] / res['offered_per_s']:.2f}; "
                  f"lost {res['lost']}", flush=True)
    if not args.skip_swap:
        print(f"swap: full actor weights, trainer -> policy-side process, {args.swap_seconds:.0f} s",
              flush=True)
        for profile in args.profiles.split(","):
            swap_env = dict(env)
            if profile == "shm":
                swap_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
            transports = "config/fastdds_shm.xml" if profile == "shm" else "Fast DDS defaults"
            for threads in (int(t) for t in args.swap_torch_threads.split(",")):
                print(f" transports: {transports}, "
                      f"publish_every {args.swap_publish_every}, trainer torch_threads "
                      f"{threads or 'default'}", flush=True)
                report_swap(run_swap(swap_env, workdir, args.swap_seconds, args.swap_publish_every, threads))


if __name__ == "__main__":
    main()
