"""trainer_node across OS processes over real DDS: zero-loss ingest from two actor processes, newer
weights, SIGKILL + resume with the version counting on, malformed and lost transitions counted and
kept out of replay, parameters == config/trainer.yaml, diagnostics levels."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import PROGRAMS

from av_td3_ros.learning.training_service import TrainingServiceConfig
from av_td3_ros.ros.parameters import TRAINER_NODE_PARAMETERS, defaults, yaml_parameters

REPO = Path(__file__).resolve().parents[1]
TRAINER_YAML = REPO / "config" / "trainer.yaml"
PUBLISHER = str(PROGRAMS / "transition_publisher.py")


# ---------------------------------------------------------------------------------------------
# parameters, messages (no processes)
# ---------------------------------------------------------------------------------------------


def test_trainer_yaml_documents_exactly_the_declared_parameters_with_their_defaults():
    in_yaml = yaml_parameters(TRAINER_YAML, "/**")
    specs = {s.name: s.default for s in TRAINER_NODE_PARAMETERS}
    assert sorted(in_yaml) == sorted(specs)
    for name, default in specs.items():
        assert in_yaml[name] == default and type(in_yaml[name]) is type(default), name
    lines = TRAINER_YAML.read_text().splitlines()
    for i, line in enumerate(lines):  # every `key: value` line has its comment right above it
        if not line.lstrip().startswith("#") and ":" in line and line.split(":", 1)[1].strip():
            assert lines[i - 1].lstrip().startswith("#"), f"undocumented: {line.strip()}"


def test_default_parameters_give_the_cores_defaults_with_every_stabilizer_on():
    from av_td3_ros.learning.config import TD3Config

    config = TrainingServiceConfig.from_namespace(defaults(TRAINER_NODE_PARAMETERS))
    assert config.td3 == TD3Config()
    assert config.td3.cnn_norm == "layer" and config.td3.grad_clip == 10.0 and config.td3.adaptive_lr
    assert config.td3.action_limiter and config.td3.cnn_weight_decay > 0


def test_status_snapshot_fields_are_exactly_the_training_status_message():
    from av_td3_msgs.msg import TrainingStatus

    from av_td3_ros.learning.training_service import STATUS_FIELDS

    assert sorted(STATUS_FIELDS) == sorted(TrainingStatus.get_fields_and_field_types())


def _snapshot(**overrides):
    from av_td3_ros.learning.ingest import IngestStats
    from av_td3_ros.learning.training_service import TrainingSnapshot

    values = {name: 0 for name in TrainingSnapshot.__dataclass_fields__}
    values.update(state="learning", last_error="", action_limit_active=True, updates=10, policy_version=2,
                  ingest=IngestStats(received=10, accepted=10, dropped=0, lost=0, gaps=0, out_of_order=0,
                                     restarts=0, queue_depth=0, queue_capacity=100, queue_high_water=3,
                                     actors=1, dropped_by_reason={"nan_kinematics": 0}))
    values.update(overrides)
    return TrainingSnapshot(**values)


@pytest.mark.parametrize(("l2", "level"), [(16.0, 0), (49.9, 0), (50.5, 1), (99.0, 1), (100.5, 2), (1e6, 2)])
def test_diagnostics_warn_above_50_and_error_above_100_per_sample_cnn_l2(l2, level):
    from av_td3_ros.nodes.trainer_node import diagnostic_status

    status = diagnostic_status(_snapshot(cnn_l2=l2), 50.0, 100.0, 0, "trainer_node: training")
    assert status.level == bytes([level])
    assert status.name == "trainer_node: training"
    values = {kv.key: kv.value for kv in status.values}
    assert float(values["cnn_l2"]) == pytest.approx(l2, rel=1e-5)
    if level:
        assert "CNN feature L2" in status.message


def test_diagnostics_warn_on_lost_transitions_and_error_when_the_learner_failed():
    from av_td3_ros.nodes.trainer_node import diagnostic_status

    lost = diagnostic_status(_snapshot(), 50.0, 100.0, 3, "t")
    assert lost.level == b"\x01" and "3 transitions lost" in lost.message
    snapshot = _snapshot(state="failed", last_error="RuntimeError: boom")
    failed = diagnostic_status(snapshot, 50.0, 100.0, 0, "t")
    assert failed.level == b"\x02" and "boom" in failed.message


# ---------------------------------------------------------------------------------------------
# live processes
# ---------------------------------------------------------------------------------------------


class Observer:
    """An in-process rclpy node that records the trainer's TrainingStatus, PolicyWeights and
    /diagnostics (spun in a background thread)."""

    def __init__(self, context) -> None:
        import rclpy
        from av_td3_msgs.msg import PolicyWeights, TrainingStatus
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from av_td3_ros.ros.qos import DIAGNOSTICS_QOS, STATUS_QOS, WEIGHTS_QOS

        self.node = rclpy.create_node("trainer_test_observer", context=context)
        self.lock = threading.RLock()  # predicates may call versions()/last_status()
        self.status: list = []
        self.weights: list = []  # (receive time, message)
        self.diagnostics: list = []
        self.node.create_subscription(TrainingStatus, "/av_td3/training_status", self._on_status, STATUS_QOS)
        self.node.create_subscription(PolicyWeights, "/av_td3/policy_weights", self._on_weights, WEIGHTS_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DIAGNOSTICS_QOS)
        from std_msgs.msg import UInt64

        from av_td3_ros.ros.qos import UPDATE_COUNT_QOS

        self.update_counts: list[int] = []
        self.node.create_subscription(UInt64, "/av_td3/update_count",
                                      lambda m: self._keep(self.update_counts, m.data), UPDATE_COUNT_QOS)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True
        self.thread.start()

    def _spin(self) -> None:
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def _keep(self, store: list, value) -> None:
        with self.lock:
            store.append(value)

    def _on_status(self, msg) -> None:
        with self.lock:
            self.status.append(msg)

    def _on_weights(self, msg) -> None:
        with self.lock:
            self.weights.append((time.monotonic(), msg))

    def _on_diag(self, msg) -> None:
        with self.lock:
            self.diagnostics.extend(s for s in msg.status if s.hardware_id == "av_td3_trainer")

    def last_status(self):
        with self.lock:
            return self.status[-1] if self.status else None

    def versions(self) -> list[int]:
        with self.lock:
            return [m.version for _, m in self.weights]

    def wait_for(self, predicate, timeout: float, what: str, procs=()):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                value = predicate()
            if value:
                return value
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n"
                                         + Path(proc.stderr_path).read_text()[-4000:])
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                             f"last status: {self.last_status()}")

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.node.destroy_node()


@pytest.fixture
def observer(rclpy_context):
    obs = Observer(rclpy_context)
    yield obs
    obs.close()


def trainer_args(tmp_path: Path, **params) -> list[str]:
    values = {
        "learning_starts": 64, "td3.batch_size": 8, "update_to_data_ratio": 0.1, "publish_every": 10,
        "checkpoint_every": 1000, "checkpoint_dir": str(tmp_path / "ckpt"), "log_dir": str(tmp_path / "runs"),
        "status_period": 0.2, "diagnostics_period": 0.5, "replay_capacity": 10_000, "seed": 1,
        "td3.device": "cpu", "torch_threads": 1,
    }
    values.update(params)
    args = ["-m", "av_td3_ros.nodes.trainer_node", "--ros-args"]
    for key, value in values.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return args


def publisher(spawn, actor: str, **options):
    args = [PUBLISHER, "--actor-id", actor]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return spawn(args)


def finish(proc, timeout: float = 90) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, Path(proc.stderr_path).read_text()[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def test_an_invalid_parameter_stops_the_trainer_with_a_message_naming_the_key(spawn, tmp_path):
    proc = spawn(trainer_args(tmp_path, **{"td3.batch_size": 0}))
    proc.wait(timeout=60)
    assert proc.returncode == 2
    assert "td3.batch_size" in Path(proc.stderr_path).read_text()


def test_two_actor_processes_2000_transitions_zero_loss_and_newer_weights_published(
        spawn, observer, tmp_path):
    from av_td3_ros.driving.runtime import PolicyRuntime
    from av_td3_ros.ros.conversions import policy_weights_from_message

    trainer = spawn(trainer_args(tmp_path))
    observer.wait_for(lambda: observer.status, 60, "the trainer's first TrainingStatus", [trainer])
    # 2 x 50 episodes x (START + 19 STEPs) = 2,000 messages, 1,900 transitions, each stream at 250/s
    pubs = [publisher(spawn, f"car{i}", episodes=50, episode_length=19, rate=250) for i in (1, 2)]
    sent = [finish(p) for p in pubs]
    assert [s["sent"] for s in sent] == [1000, 1000] and all(s["acked"] for s in sent)

    status = observer.wait_for(
        lambda: (s := observer.status[-1]).transitions_received >= 2000 and s.policy_version >= 2 and s,
        90, "2,000 transitions and two published versions", [trainer])
    assert status.transitions_received == 2000
    assert status.transitions_lost == 0 and status.transitions_dropped == 0
    assert status.replay_size == 2 * 50 * 19
    assert status.updates > 0 and status.action_limit_active and status.action_limit == pytest.approx(0.6)
    assert 0.0 < status.critic_cnn_l2 < 50.0

    observer.wait_for(lambda: len(observer.weights) >= 2, 30, "two PolicyWeights", [trainer])
    with observer.lock:  # one snapshot: a newer version may arrive while this test decodes
        received = list(observer.weights)
    versions = [m.version for _, m in received]
    assert versions == sorted(set(versions)) and versions[-1] > versions[0] >= 1  # newer, strictly
    threads = torch.get_num_threads()
    runtime = PolicyRuntime()  # sets torch's thread count for this process: restored below
    torch.set_num_threads(threads)
    _, msg = received[-1]
    decoded = policy_weights_from_message(msg, runtime.reference_state_dict, runtime.max_weights_bytes)
    assert decoded.version == versions[-1] and decoded.action_limit == pytest.approx(0.6)
    runtime.install(runtime.prepare(decoded, "topic"))  # the real policy-node path accepts it

    # Every update is counted on /av_td3/update_count (depth 1: a slow reader may skip some, never
    # see one out of order): the ratio 0.1 cap gives int((1900 - 64 + 1) x 0.1) = 183 for 1,900.
    observer.wait_for(lambda: observer.update_counts[-1:] == [183], 60, "the 183rd update counted", [trainer])
    with observer.lock:
        counts = list(observer.update_counts)
    assert counts == sorted(set(counts)) and counts[0] >= 1
    diag = observer.wait_for(lambda: observer.diagnostics, 10, "/diagnostics from the trainer", [trainer])
    assert diag[-1].level == b"\x00" and diag[-1].name == "trainer_node: training"
    observer.wait_for(lambda: {(v.key, v.value) for v in observer.diagnostics[-1].values} >= {
        ("session_updates", "183"), ("session_transitions", "1900"),
        ("effective_update_to_data_ratio", f"{183 / (1900 - 64):.6g}")}, 10, "the effective ratio", [trainer])
    assert list(Path(tmp_path / "runs").glob("events.out.tfevents.*"))  # TensorBoard

    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=60) == 0, Path(trainer.stderr_path).read_text()[-3000:]
    record = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert record["updates"] >= status.updates  # the shutdown checkpoint


def test_trainer_sigkilled_mid_run_resumes_from_its_checkpoint_and_the_version_keeps_counting(
        spawn, observer, tmp_path):
    args = trainer_args(tmp_path, learning_starts=32, update_to_data_ratio=0.5, publish_every=5,
                        checkpoint_every=10)
    trainer = spawn(args)
    observer.wait_for(lambda: observer.status, 60, "the trainer's first TrainingStatus", [trainer])
    feeder = publisher(spawn, "car1", episodes=200, episode_length=19, rate=100)  # 40 s of data
    observer.wait_for(lambda: observer.status[-1].updates >= 25 and len(observer.weights) >= 3, 90,
                      "25 updates and 3 versions", [trainer])
    trainer.send_signal(signal.SIGKILL)  # mid-run: no shutdown checkpoint
    assert trainer.wait(timeout=10) == -signal.SIGKILL
    feeder.kill()
    killed_versions = observer.versions()
    record = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    checkpointed = record["updates"]
    assert checkpointed >= 20 and checkpointed % 10 == 0  # a periodic one, not a shutdown one

    with observer.lock:
        observer.status.clear()
        seen = len(observer.weights)
    restarted = spawn(args)
    fresh = observer.wait_for(lambda: len(observer.weights) > seen and observer.weights[seen][1], 60,
                              "weights from the restarted trainer", [restarted])
    assert fresh.version > max(killed_versions)  # never reuses a version policy nodes may run
    assert fresh.updates == checkpointed  # the resumed policy, published at once
    status = observer.wait_for(lambda: observer.status and observer.status[-1], 30, "status", [restarted])
    assert status.updates == checkpointed and status.policy_version == fresh.version

    # ... and it keeps learning from new transitions with versions counting up
    feeder = publisher(spawn, "car1", episodes=6, episode_length=19, rate=200)
    finish(feeder)
    observer.wait_for(lambda: observer.status[-1].updates > checkpointed
                      and observer.status[-1].policy_version > fresh.version, 60, "new updates", [restarted])
    assert observer.versions()[seen:] == sorted(set(observer.versions()[seen:]))
    restarted.send_signal(signal.SIGINT)
    assert restarted.wait(timeout=60) == 0


def test_trainer_sigkilled_during_a_checkpoint_write_resumes_from_the_previous_checkpoint(
        spawn, observer, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = trainer_args(tmp_path, learning_starts=32, update_to_data_ratio=0.5, publish_every=5,
                        checkpoint_every=5)
    trainer = spawn(args)
    observer.wait_for(lambda: observer.status, 60, "the trainer's first TrainingStatus", [trainer])
    feeder = publisher(spawn, "car1", episodes=200, episode_length=19, rate=100)
    observer.wait_for(lambda: (ckpt / "checkpoint.json").exists(), 60, "a first checkpoint", [trainer])
    # the next write: its temporary tensor file (~65 MB) exists for a while before the commit
    committed = json.loads((ckpt / "checkpoint.json").read_text())["updates"]
    deadline = time.monotonic() + 60
    while not list(ckpt.glob(".learner-*.tmp-*")):
        assert time.monotonic() < deadline and trainer.poll() is None, "no checkpoint write observed"
        committed = json.loads((ckpt / "checkpoint.json").read_text())["updates"]
        time.sleep(0.001)
    trainer.send_signal(signal.SIGKILL)
    assert trainer.wait(timeout=10) == -signal.SIGKILL
    feeder.kill()
    assert list(ckpt.glob(".learner-*.tmp-*")), "the kill did not land inside the write"
    record = json.loads((ckpt / "checkpoint.json").read_text())
    assert record["updates"] == committed  # the interrupted write was never committed
    killed_versions = observer.versions()

    with observer.lock:
        seen = len(observer.weights)
    restarted = spawn(args)
    fresh = observer.wait_for(lambda: len(observer.weights) > seen and observer.weights[seen][1], 60,
                              "weights from the restarted trainer", [restarted])
    assert fresh.updates == committed and fresh.version > max(killed_versions)
    assert not list(ckpt.glob(".*.tmp-*"))  # the interrupted write's leftovers are cleaned up
    finish(publisher(spawn, "car1", episodes=4, episode_length=19, rate=200))
    observer.wait_for(lambda: observer.status[-1].updates > committed, 60, "training resumed", [restarted])
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(timeout=60) == 0


def test_malformed_and_lost_transitions_are_counted_and_never_reach_replay(spawn, observer, tmp_path):
    trainer = spawn(trainer_args(tmp_path, learning_starts=100_000, checkpoint_dir='""', log_dir='""'))
    observer.wait_for(lambda: observer.status, 60, "the trainer's first TrainingStatus", [trainer])
    clean = publisher(spawn, "clean", episodes=10, episode_length=10, rate=300)
    # faulty: step 5 of episodes 2 and 4 is lost; step 5 of episodes 1, 3, 5..9 is malformed (each
    # of the 7 malformations once); episode 0 is whole
    faulty = publisher(spawn, "faulty", episodes=10, episode_length=10, rate=300, gap_episodes="2,4",
                       malformed_episodes="1,3,5,6,7,8,9", fault_step=5)
    finish(clean)
    sent = finish(faulty)
    assert (sent["sent"], sent["skipped"], sent["malformed"]) == (108, 2, 7)

    status = observer.wait_for(lambda: (s := observer.status[-1]).transitions_received >= 218 and s, 30,
                               "218 transitions", [trainer])
    assert status.transitions_received == 110 + 108
    assert status.transitions_lost == 2  # two seq gaps of one message each
    # 7 malformed + the 5 later steps of each of the 9 broken episodes (no wrong stack is built)
    assert status.transitions_dropped == 7 + 9 * 5
    # clean: 100; faulty: episode 0 whole (10) + steps 1..4 of the 9 broken episodes
    assert status.replay_size == 100 + 10 + 9 * 4

    def counts():
        diag = observer.diagnostics[-1] if observer.diagnostics else None
        values = {kv.key: kv.value for kv in diag.values} if diag else {}
        return values if values.get("transitions_received") == "218" else None

    values = observer.wait_for(counts, 10, "diagnostics with the drop reasons", [trainer])
    for reason in ("non_finite_kinematics", "non_finite_reward", "action_out_of_range", "bad_frame_size",
                   "bad_frame_length", "bad_kind", "bad_kinematics_shape"):
        assert values[f"dropped.{reason}"] == "1", reason
    assert values["dropped.episode_broken"] == str(9 * 5)
    assert values["seq_gaps"] == "2"
    assert observer.diagnostics[-1].level in (b"\x00", b"\x01")  # WARN while losses are recent
    assert any(d.level == b"\x01" and "lost" in d.message for d in observer.diagnostics)
    trainer.send_signal(signal.SIGINT)
    assert trainer.wait(timeout=60) == 0


def test_a_late_subscriber_gets_the_latest_weights_from_the_transient_local_topic(
        spawn, observer, tmp_path, rclpy_context):
    """A policy node that starts after the last publish still receives the latest version
    (RELIABLE TRANSIENT_LOCAL depth 1)."""
    import rclpy
    from av_td3_msgs.msg import PolicyWeights
    from rclpy.executors import SingleThreadedExecutor

    from av_td3_ros.ros.qos import WEIGHTS_QOS

    trainer = spawn(trainer_args(tmp_path, learning_starts=16, publish_every=4, update_to_data_ratio=0.5))
    observer.wait_for(lambda: observer.status, 60, "the trainer's first TrainingStatus", [trainer])
    finish(publisher(spawn, "car1", episodes=4, episode_length=19, rate=300))
    observer.wait_for(lambda: observer.versions() and observer.last_status().updates >= 30, 60, "versions",
                      [trainer])
    time.sleep(1.0)  # nothing new is published now (no new data)
    latest = observer.versions()[-1]
    late = rclpy.create_node("late_policy_node", context=rclpy_context)
    got = []
    late.create_subscription(PolicyWeights, "/av_td3/policy_weights", got.append, WEIGHTS_QOS)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(late)
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    late.destroy_node()
    assert got and got[0].version == latest
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=60) == 0
