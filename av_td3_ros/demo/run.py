"""`av-td3 demo`: drive and learn in the embedded simulator, then evaluate and report.

Three OS processes, exactly what `ros2 launch av_td3_ros embedded.launch.py` starts: sim_node,
policy_node (mode train) and trainer_node, on a ROS domain claimed for this run, discovery kept on
this host. Separate processes rather than one executor because the learner's updates are seconds
of CPU-bound torch per batch: in one process they would hold the GIL against the control loop
(the lock-step simulator waits for every control), and the policy node would be judged on the
trainer's latency. This process only watches (DemoMonitor) and prints progress.

At the end of the budget: the policy node is stopped (one brake), the trainer checkpoints, and
the last published weights are evaluated deterministically for N episodes next to a random policy
on the same starts (av_td3_ros.demo.evaluation), with the stability report and a run folder:
  config.json, tensorboard/, checkpoints/, weights/policy.safetensors, learning_curve.png,
  episodes.csv, report.md, logs/<node>.log, keys/trainer.key(.pub)

Signed weights out of the box: each run folder gets its own ed25519 key pair (keys/, made at the
start or reused when the folder has one); the trainer signs every payload with it and the policy
node runs with `weights_trust: signed` trusting only its public key, so the demo drives the same
path a deployed car does, and the saved weights are a signed file a deploy-mode node loads.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from av_td3_ros.config_schema import parameter_values
from av_td3_ros.learning.config import TD3Config

__all__ = ["DemoOptions", "NodeProcesses", "config_dir", "encoder_norm", "ensure_run_keys", "node_parameters",
           "run_demo", "run_keys"]

# TD3Config.unstabilized() as trainer parameters: the td3.* values it changes (grad_clip 0 = none).
UNSTABILIZED_TRAINER = parameter_values(TD3Config.unstabilized(), "td3.", changed_from=TD3Config())
TRANSITIONS_TOPIC = "/av_td3/transitions"  # the trainer's and the monitor's (trainer.yaml default)


def config_dir() -> Path:
    """config/ of a source checkout (editable install), else the installed share directory."""
    source = Path(__file__).resolve().parents[2] / "config"
    if (source / "policy.yaml").exists():
        return source
    return Path(sys.prefix) / "share" / "av_td3_ros" / "config"


@dataclass
class DemoOptions:
    minutes: float = 12.0  # training budget (wall); evaluation and the report come after
    steps: int = 0  # environment-step budget; 0 = only the time budget
    eval_episodes: int = 10
    seed: int = 0
    episode_steps: int = 300  # step limit of an episode, training and evaluation
    # 5 s at the embedded simulator's 5 Hz: the same 5 s as policy.yaml's 100 steps at CARLA's
    # 20 Hz. At 100 steps a car that brakes to a standstill "survives" past 100 steps and would
    # pass the report's episode-length criterion without driving.
    stuck_steps: int = 25
    batch_size: int = 128  # measured ~2x the updates/s of 256 here, which matters in minutes
    learning_starts: int = 1000
    publish_every: int = 100
    update_to_data_ratio: float = 1.0  # the trainer's cap (its updates can fall short of it)
    # > 0: the simulator waits for the learner so the run keeps this many updates per env step
    # (sim_node hold_update_ratio); 0 = the simulator runs as fast as the policy answers.
    hold_ratio: float = 0.0
    run_dir: str = ""  # "" = runs/demo-<date>-<time>
    # False: the design's failing setup (TD3Config.unstabilized: no LayerNorm, no CNN weight decay,
    # no clipping, no LR cut, no action limit, MLP lr on the CNNs), for side-by-side comparisons.
    stabilized: bool = True
    progress_every: float = 5.0
    trainer: dict = field(default_factory=dict)  # extra trainer parameters (key -> value)
    policy: dict = field(default_factory=dict)  # extra policy parameters
    sim: dict = field(default_factory=dict)  # extra sim parameters


def encoder_norm(opts: DemoOptions) -> str:
    """The CNN normalization the trainer trains with; the policy node and the evaluation must
    build the same network, or every weights update is refused as another architecture."""
    return str(
        {**(UNSTABILIZED_TRAINER if not opts.stabilized else {}), **opts.trainer}.get("td3.cnn_norm", "layer")
    )


def evaluation_world(opts: DemoOptions):
    """The sim node's world of this run: its camera (view, image size) and its task (traffic,
    random starts, step period, start speed), so the evaluation drives the policy on what it was
    trained on. A run with `--sim-param traffic:=6` evaluated on the empty track would report a
    collision-free score for a task it never faced."""
    import yaml

    from av_td3_ros.sim.simulator import NODE_SETTINGS, SimConfig

    # Not the seed: the evaluation picks its own starts.
    world = set(NODE_SETTINGS) - {"seed"}
    given = {key: yaml.safe_load(value) if isinstance(value, str) else value
             for key, value in opts.sim.items() if key in world}
    return SimConfig.from_namespace(given)


def run_keys(run_dir: Path) -> tuple[Path, Path]:
    """(private, public) key files of a run: <run>/keys/trainer.key and .pub."""
    private = run_dir / "keys" / "trainer.key"
    return private, private.with_name(private.name + ".pub")


def ensure_run_keys(run_dir: Path):
    """The run's signing key: made on the first start, reused when the run folder already has one."""
    from av_td3_ros.learning.signing import generate_key_pair, load_signing_key

    private, public = run_keys(run_dir)
    if private.exists() and public.exists():
        return load_signing_key(private)
    return generate_key_pair(private, public, overwrite=True)


def node_parameters(opts: DemoOptions, run_dir: Path) -> tuple[dict, dict, dict]:
    """(trainer, policy, sim) parameter overrides of one run, on top of the config/*.yaml files."""
    private_key, public_key = run_keys(run_dir)
    trainer = {
        "signing_key": str(private_key),
        **({} if opts.stabilized else UNSTABILIZED_TRAINER),
        "log_dir": str(run_dir / "tensorboard"),
        "checkpoint_dir": str(run_dir / "checkpoints"),
        "resume": False,
        "learning_starts": opts.learning_starts,
        "publish_every": opts.publish_every,
        "update_to_data_ratio": opts.update_to_data_ratio,
        "td3.batch_size": opts.batch_size,
        "seed": opts.seed,
        **opts.trainer,
    }
    policy = {
        "mode": "train",
        "weights_trust": "signed",
        "trusted_keys": [str(public_key)],
        "seed": opts.seed,
        "encoder_norm": encoder_norm(opts),
        "reward.max_episode_steps": opts.episode_steps,
        "reward.stuck_steps": opts.stuck_steps,
        **({} if opts.stabilized else {"initial_action_limit": 0.0}),  # no limiter in that variant
        **opts.policy,
    }
    sim = {"seed": opts.seed}
    if opts.hold_ratio > 0.0:
        sim.update(hold_update_ratio=opts.hold_ratio, hold_learning_starts=opts.learning_starts)
        # The trainer's cap must not stop it short of what the simulator waits for: a few steps
        # per episode give no transition (the frames before the new route), so it gets headroom.
        trainer["update_to_data_ratio"] = max(opts.update_to_data_ratio, 2.0 * opts.hold_ratio)
        # The simulated clock stops while it holds (as CARLA's in synchronous mode); the policy
        # node's wall-clock watchdog must not take a wait for the learner as a dead simulator.
        hold_timeout = float(opts.sim.get("hold_timeout", 10.0))
        wait = min(60.0, hold_timeout + 2.0)
        policy.setdefault("sensor_timeout", wait)
        policy.setdefault("route_timeout", wait)
        trainer.update(opts.trainer)  # an explicit trainer parameter still wins
        policy.update(opts.policy)
    return trainer, policy, {**sim, **opts.sim}


def _ros_args(params: dict) -> list[str]:
    out = []
    for key, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        out += ["-p", f"{key}:={value}"]
    return out


class NodeProcesses:
    """The nodes of one run as child processes, each logging to <run>/logs/<name>.log."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir = log_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, module: str, params_file: Path | None, params: dict) -> None:
        argv = [sys.executable, "-m", module, "--ros-args"]
        if params_file is not None:
            argv += ["--params-file", str(params_file)]
        argv += _ros_args(params)
        log = open(self.log_dir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def stop(self, name: str, timeout: float) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=30.0)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _print(text: str = "") -> None:
    print(text, flush=True)


def run_demo(opts: DemoOptions) -> int:
    from av_td3_ros.demo.environment import claim_domain_id, ros_environment

    run_dir = Path(opts.run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    domain_id, _lock = claim_domain_id()
    ros_log = Path(tempfile.mkdtemp(prefix="av_td3_ros-demo-roslog-"))
    env = ros_environment(domain_id, str(ros_log))
    env["PYTHONUNBUFFERED"] = "1"
    cfg = config_dir()
    # The shipped shared-memory + UDP profile (as the compose file uses): a 7.7 MB PolicyWeights
    # message took seconds to reach the policy node on default transports while the trainer kept
    # both cores busy. The venv's Fast DDS 3 reads this name (the legacy FASTRTPS_ one warns).
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(cfg / "fastdds_shm.xml"))
    os.environ.update(env)  # for this process's own rclpy, imported below
    key = ensure_run_keys(run_dir)
    trainer_params, policy_params, sim_params = node_parameters(opts, run_dir)
    (run_dir / "config.json").write_text(
        json.dumps(
            {
                "options": asdict(opts),
                "ros_domain_id": domain_id,
                "trainer": {"params_file": str(cfg / "trainer.yaml"), "overrides": trainer_params},
                "policy": {"params_file": str(cfg / "policy.yaml"), "overrides": policy_params},
                "sim": {"params_file": str(cfg / "sim.yaml"), "overrides": sim_params},
            },
            indent=1,
        )
    )
    for name in ("trainer.yaml", "policy.yaml", "sim.yaml"):
        shutil.copy(cfg / name, run_dir / name)

    _print(f"av-td3 demo: run folder {run_dir}")
    _print(f"  ROS_DOMAIN_ID={domain_id}, discovery on this host only; node logs in {run_dir / 'logs'}")
    _print(f"  weights signed with this run's key {key.key_id} ({run_keys(run_dir)[0].parent}); "
           "the policy node trusts only it")
    _print(
        f"  budget: {opts.minutes:g} min"
        + (f" or {opts.steps} environment steps" if opts.steps else "")
        + f", then {opts.eval_episodes} evaluation episodes (deterministic policy vs random)"
    )
    nodes = NodeProcesses(run_dir / "logs", env)
    nodes.start("trainer_node", "av_td3_ros.nodes.trainer_node", cfg / "trainer.yaml", trainer_params)
    car = [
        ("sim_node", "av_td3_ros.nodes.sim_node", cfg / "sim.yaml", sim_params),
        ("policy_node", "av_td3_ros.nodes.policy_node", cfg / "policy.yaml", policy_params),
    ]
    try:
        monitor, episodes, failed = _train(opts, nodes, run_dir, car)
    finally:  # the world first: a simulator without its driver would tick into timeouts
        nodes.stop("sim_node", 15.0)
        nodes.stop("policy_node", 15.0)
        _print("stopping: trainer checkpoints ...")
        nodes.stop("trainer_node", 120.0)
        nodes.stop_all()
    if failed:
        return 1
    return _evaluate_and_report(opts, run_dir, monitor, episodes)


def _train(opts: DemoOptions, nodes: NodeProcesses, run_dir: Path, car: list):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from av_td3_ros.demo.monitor import DemoMonitor
    from av_td3_ros.driving.runtime import PolicyRuntime

    # Not sys.argv (rclpy's default): rcl would read the demo's own `--sim-param key:=value`
    # options as legacy remap rules of the monitor node.
    rclpy.init(args=[])
    reference = PolicyRuntime(norm=encoder_norm(opts)).reference_state_dict
    monitor = DemoMonitor(run_dir / "weights" / "policy.safetensors", reference, 64 << 20)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    # The car starts once the trainer listens: transitions published before its subscription
    # matched would be lost (the trainer takes seconds to import torch and build the learner).
    deadline = time.monotonic() + 180.0
    while monitor.count_subscribers(TRANSITIONS_TOPIC) < 2 and not nodes.dead():
        if time.monotonic() > deadline:
            _print("error: the trainer did not subscribe to the transitions within 180 s")
            return _close(executor, monitor) + (True,)
        time.sleep(0.2)
    for name, module, params_file, params in car:
        nodes.start(name, module, params_file, params)
    start = time.monotonic()
    next_print = start + opts.progress_every
    failed = False
    _print(
        f"{'time':>5} {'steps':>7} {'episode':>7} {'return':>7} {'length':>6} {'speed':>5} "
        f"{'L2 actor/critic':>15} {'updates':>7} {'upd/s':>5} {'upd/step':>8} {'version':>7} limiter"
    )
    try:
        while True:
            time.sleep(0.5)
            steps, episodes, status, version = monitor.snapshot()
            elapsed = time.monotonic() - start
            dead = nodes.dead()
            if dead:
                _print(f"error: {', '.join(dead)} stopped unexpectedly; last lines of its log:")
                for name in dead:
                    _print(nodes.log_tail(name))
                failed = True
                break
            if time.monotonic() >= next_print:
                next_print += opts.progress_every
                _print(_progress_line(elapsed, steps, episodes, status, version, monitor, opts))
            if elapsed >= opts.minutes * 60.0 or (opts.steps and steps >= opts.steps):
                _print(_progress_line(elapsed, steps, episodes, status, version, monitor, opts))
                break
    except KeyboardInterrupt:
        _print("interrupted: stopping and evaluating what was learned so far")
    return _close(executor, monitor) + (failed,)


def _close(executor, monitor) -> tuple:
    import rclpy

    executor.shutdown(timeout_sec=2.0)
    monitor.destroy_node()
    rclpy.try_shutdown()
    _, episodes, _, _ = monitor.snapshot()
    return monitor, episodes


def effective_ratio(monitor, opts: DemoOptions) -> tuple[float, int, int]:
    """(effective update-to-data ratio, updates, env steps): the trainer's updates per env step
    taken after learning_starts, the steps before it being ones no ratio could update on."""
    from av_td3_ros.learning.training_service import effective_update_to_data_ratio

    steps, updates, _ = monitor.learning_progress()
    return effective_update_to_data_ratio(updates, steps, opts.learning_starts), updates, steps


def _progress_line(elapsed, steps, episodes, status, version, monitor, opts) -> str:
    last = episodes[-1] if episodes else None
    v = status.values if status is not None else {}
    limiter = (
        ("on" if v.get("action_limit_active") else "off") + f" {v.get('action_limit', 0.0):.2f}" if v else "-"
    )
    ep = (
        f"{len(episodes):>7} {last.ret:>7.2f} {last.length:>6} {last.mean_speed:>5.1f}"
        if last
        else f"{0:>7} {'-':>7} {'-':>6} {'-':>5}"
    )
    l2 = f"{v.get('actor_cnn_l2', 0):.1f}/{v.get('critic_cnn_l2', 0):.1f}" if v else "-"
    return (
        f"{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d} {steps:>7} {ep} {l2:>15} "
        f"{int(v.get('updates', 0)):>7} {v.get('updates_per_second', 0):>5.1f} "
        f"{effective_ratio(monitor, opts)[0]:>8.3f} {version:>7} {limiter}"
    )


def _evaluate_and_report(opts: DemoOptions, run_dir: Path, monitor, episodes) -> int:
    import numpy as np

    from av_td3_ros.demo.evaluation import evaluate, random_driver
    from av_td3_ros.demo.report import (
        L2_TAGS,
        format_table,
        plot_learning_curve,
        read_scalars,
        stability_checks,
    )
    from av_td3_ros.driving.runtime import PolicyRuntime, WeightsRejected, load_weights_file
    from av_td3_ros.perception.reward import RewardConfig

    with open(run_dir / "episodes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["env_steps", "wall_s", "return", "length", "mean_speed", "terminated", "policy_version"]
        )
        for e in episodes:
            writer.writerow(
                [
                    e.env_steps,
                    f"{e.wall_s:.1f}",
                    f"{e.ret:.4f}",
                    e.length,
                    f"{e.mean_speed:.3f}",
                    int(e.terminated),
                    e.policy_version,
                ]
            )
    reward = RewardConfig(max_episode_steps=opts.episode_steps, stuck_steps=opts.stuck_steps)
    seed = 10_000 + opts.seed  # evaluation starts differ from the training run's first ones
    _print(f"\nevaluating: {opts.eval_episodes} episodes each, same starts (seed {seed}) ...")
    world = evaluation_world(opts)
    random_eval = evaluate(
        random_driver(seed), "random", episodes=opts.eval_episodes, seed=seed, reward=reward,
        sim_config=world,
    )
    weights = run_dir / "weights" / "policy.safetensors"
    learned_eval, why_not = None, ""
    if weights.exists():
        from av_td3_ros.learning.signing import load_trusted_keys

        # As a deploy-mode node would: only what this run's key signed.
        runtime = PolicyRuntime(norm=encoder_norm(opts), trust="signed",
                                trusted_keys=load_trusted_keys([run_keys(run_dir)[1]]))
        try:
            decoded = load_weights_file(weights, runtime)
            runtime.install(runtime.prepare(decoded, str(weights)))
            learned_eval = evaluate(
                lambda f, k: runtime.act(f, k)[0],
                f"TD3 v{runtime.version}",
                episodes=opts.eval_episodes,
                seed=seed,
                reward=reward,
                sim_config=world,
            )
        except WeightsRejected as exc:
            why_not = f"the saved weights were rejected: {exc}"
    else:
        why_not = "no weights were published during the budget (raise --minutes or lower learning_starts)"
    rows = [
        [
            e.name,
            len(e.episodes),
            e.mean_length,
            e.mean_return,
            e.mean_speed,
            e.collisions,
            f"{e.saturated_share:.1%}",
        ]
        for e in (learned_eval, random_eval)
        if e is not None
    ]
    table = format_table(
        ["policy", "episodes", "mean length", "mean return", "mean speed", "collisions", "saturated"], rows
    )
    _print(table)
    if why_not:
        _print(f"no learned policy to evaluate: {why_not}")
    scalars = read_scalars(run_dir / "tensorboard")
    checks = stability_checks(scalars, learned_eval) if learned_eval is not None else []
    if checks:
        _print("\nstability report (the design's success criteria):")
        for check in checks:
            _print(f"  {check.verdict:4}  {check.name}: {check.measured}")
    plot_learning_curve(run_dir / "learning_curve.png", episodes, scalars, random_eval.mean_length)
    ratio, updates, steps = effective_ratio(monitor, opts)
    trainer_params, _, _ = node_parameters(opts, run_dir)
    cap = float(trainer_params["update_to_data_ratio"])
    after_start = max(steps - opts.learning_starts, 0)
    learning = (
        f"update-to-data ratio: {ratio:.3f} effective ({updates} updates / {after_start} env steps after "
        f"learning_starts {opts.learning_starts}); cap {cap:g}; "
        + (f"held at {opts.hold_ratio:g} (the simulator waited for the learner)" if opts.hold_ratio else
           "not held (the simulator ran as fast as the policy answered)")
    )
    lift = monitor.learning_progress()[2]
    if lift is not None:
        limiter = (f"action limit lifted at env step {lift.env_steps}, update {lift.updates}, "
                   f"minute {lift.wall_s / 60:.1f} of training")
    else:
        limiter = "action limit: " + ("still active at the end" if any(
            s.values.get("action_limit_active") for s in monitor.status[-1:]) else "never reported active")
    _print(f"\n{learning}\n{limiter}")
    lines = ["# av-td3 demo report", "", f"run folder: `{run_dir}`", "", "```", table, "```", ""]
    lines += [f"- {c.verdict} {c.name}: {c.measured}" for c in checks] or [f"- {why_not}"]
    lines += [f"- {learning}", f"- {limiter}"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    l2 = [scalars[t][:, 1] for t in L2_TAGS if t in scalars and len(scalars[t])]
    summary = {
        "stabilized": opts.stabilized,
        "env_steps": episodes[-1].env_steps if episodes else 0,
        "training_episodes": len(episodes),
        "updates": int(
            max((scalars[t][-1, 0] for t in L2_TAGS if t in scalars and len(scalars[t])), default=0)
        ),
        "trainer_updates": updates,
        "env_steps_after_learning_starts": after_start,  # at the end (env_steps: at the last episode's)
        "effective_update_to_data_ratio": ratio,
        "update_to_data_ratio_cap": cap,
        "hold_ratio": opts.hold_ratio,
        "limiter_lift": None if lift is None else asdict(lift),
        "cnn_l2_max": float(np.concatenate(l2).max()) if l2 else None,
        "cnn_l2_first": float(l2[0][0]) if l2 else None,
        "evaluation": learned_eval.summary() if learned_eval is not None else None,
        "random": random_eval.summary(),
        "checks": [{"name": c.name, "verdict": c.verdict, "measured": c.measured} for c in checks],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    _print(
        f"\nwritten: {run_dir / 'learning_curve.png'}, {run_dir / 'report.md'}, weights {weights}"
        f"{'' if weights.exists() else ' (none)'}\n"
        f"TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}"
    )
    return 0
