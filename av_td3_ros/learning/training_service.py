"""TrainingService: the trainer node's core, without ROS.

    ROS callback --offer()--> TransitionIngest (validation, seq continuity, bounded queue)
                                   | drain() in the learner thread
                                   v
    learner thread: FrameReplayBuffer <- records; TD3Learner.update() at the update-to-data ratio
                    -> on_weights(PolicyUpdate) every `publish_every` updates
                    -> save_checkpoint() every `checkpoint_every` updates and on stop()
                    -> MetricsWriter (TensorBoard) and a status snapshot for the node

The learner thread owns the learner and the replay buffer (neither is thread-safe); other threads
only call offer(), snapshot(), start() and stop().

Policy versions: 0 means "no weights yet" (policy nodes act randomly). Every published version
is strictly greater than any version published before, across crashes: before a version is
handed to `on_weights`, it is written (atomically) to `<checkpoint_dir>/published_version.json`,
and a resumed service continues from max(checkpoint's version, that file). A resumed service
publishes its weights at once (as a new version), so policy nodes run the resumed policy.

Faults: an exception in an update is logged with its traceback and the update is skipped; after
`max_consecutive_errors` in a row the learner stops and `failed` is set (the node exits non-zero
so a supervisor restarts it from its last checkpoint). Weights with a NaN/inf are never
published nor checkpointed: the learner is rolled back to its last checkpoint instead.

The replay buffer is not checkpointed (1M transitions are ~7 GB): a resumed trainer refills it
and waits for `learning_starts` new transitions before it updates again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from av_td3_ros.atomic_file import write_atomic
from av_td3_ros.config_schema import Settings, setting
from av_td3_ros.learning.config import TD3Config
from av_td3_ros.learning.ingest import (
    KIND_START,
    IngestConfig,
    IngestStats,
    TransitionIngest,
    TransitionRecord,
)
from av_td3_ros.learning.td3 import TD3Learner

log = logging.getLogger("av_td3_ros.learning.training_service")

VERSION_FILE = "published_version.json"


@dataclass(frozen=True)
class TrainingServiceConfig(Settings):
    """Everything but the TD3 hyperparameters (in `td3`) and the ingest limits (in `ingest`). The
    trainer node's top-level parameters of the same names derive from these settings."""

    td3: TD3Config = field(default_factory=TD3Config)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    replay_capacity: int = setting(
        100_000, "transitions kept in replay (~7.2 KB each: 100k ~ 0.7 GB)", min=100
    )
    replay_seed: int | None = None
    learning_starts: int = setting(
        1000, "transitions received (this run) before the first update; also after a resume", min=1
    )
    update_to_data_ratio: float = setting(
        1.0, "TD3 updates per transition received (an upper bound: on CPU the learner is slower)",
        min=0.001, max=1000.0,
    )
    publish_every: int = setting(100, "publish PolicyWeights every this many updates", min=1)
    checkpoint_every: int = setting(
        1000, "write a checkpoint every this many updates (and on shutdown)", min=1
    )
    checkpoint_dir: str = setting(
        "", "checkpoint directory ('~' expanded; empty = no checkpoints, no resume)"
    )
    resume: bool = setting(True, "restart from the latest checkpoint in checkpoint_dir when there is one")
    log_dir: str = setting("", "TensorBoard log directory (empty = no TensorBoard)")
    metrics_every: int = setting(10, "write TensorBoard scalars every this many updates", min=1)
    max_consecutive_errors: int = setting(
        5, "learner exceptions in a row before the learner gives up (the trainer node exits with code 1)",
        min=1,
    )
    lag_window: int = setting(1000, "recent transitions over which the policy lag is averaged", min=1)

    @classmethod
    def from_namespace(cls, values: Any, **fixed: Any) -> TrainingServiceConfig:
        """The trainer node's parameter values -> config: this class's settings at the top level,
        `td3.*` TD3Config's, `ingest.*` IngestConfig's, and `seed` (-1 = fresh entropy) for both
        the learner and the replay sampling. Raises ValueError (SettingError) naming a bad key,
        also for cross-field problems (e.g. td3.l2_warning > td3.l2_failure)."""
        seed = None if values.seed < 0 else int(values.seed)
        nested = {
            "td3": TD3Config.from_namespace(values.td3, seed=seed),
            "ingest": IngestConfig.from_namespace(values.ingest),
            "replay_seed": seed,
        }
        return super().from_namespace(values, **{**nested, **fixed})


@dataclass(frozen=True)
class PolicyUpdate:
    """New actor weights to publish: `encoder.*` + `actor.*` CPU tensors (copies)."""

    version: int
    updates: int
    state_dict: dict[str, torch.Tensor]
    action_limit: float
    # What a policy node builds the network from; travels in the weights' metadata (signed with them).
    cnn_norm: str = "layer"
    max_action: float = 1.0


@dataclass(frozen=True)
class TrainingSnapshot:
    """The service's state for status/diagnostics. The fields up to `action_limit` carry exactly
    the names of av_td3_msgs/TrainingStatus (a test keeps them equal)."""

    updates: int
    policy_version: int
    replay_size: int
    transitions_received: int
    transitions_dropped: int
    transitions_lost: int
    updates_per_second: float
    policy_lag: float
    actor_cnn_l2: float
    critic_cnn_l2: float
    cnn_features_mean: float
    cnn_features_std: float
    critic_loss: float
    actor_loss: float
    q_mean: float
    td_error: float
    grad_norm_actor: float
    grad_norm_actor_cnn: float
    grad_norm_critic: float
    grad_norm_critic_cnn: float
    lr_actor: float
    lr_actor_cnn: float
    lr_critic: float
    lr_critic_cnn: float
    saturated_action_share: float
    action_limit_active: bool
    action_limit: float
    # --- not in TrainingStatus
    state: str  # "collecting" (before learning_starts), "learning", "failed", "stopped"
    cnn_l2: float  # the larger of the two per-sample CNN L2s of the last update
    ingest: IngestStats
    checkpoints: int
    last_checkpoint_update: int
    last_checkpoint_seconds: float
    rollbacks: int
    learner_errors: int
    last_error: str
    policy_lag_max: int
    replay_rejected: int
    session_updates: int = 0  # updates made by this process (a resumed run counts from 0)
    session_transitions: int = 0  # transitions (steps) added to replay by this process
    learning_starts: int = 0

    @property
    def effective_update_to_data_ratio(self) -> float:
        """Updates made per env step learned from after learning_starts: the ratio that
        `update_to_data_ratio` only caps (0 before the first update)."""
        return effective_update_to_data_ratio(self.session_updates, self.session_transitions,
                                              self.learning_starts)


def effective_update_to_data_ratio(updates: int, env_steps: int, learning_starts: int) -> float:
    """`updates` / (`env_steps` - `learning_starts`): TD3 updates made per environment step
    taken since the learner could start (0 while none was). The steps before learning_starts
    are excluded because no update could be made for them under any ratio."""
    steps = env_steps - learning_starts
    return updates / steps if steps > 0 else 0.0


STATUS_FIELDS = tuple(f.name for f in fields(TrainingSnapshot))[: [f.name for f in fields(TrainingSnapshot)]
                                                                 .index("action_limit") + 1]


def _all_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first tensor with a NaN/inf, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


class TrainingService:
    """Ingest -> replay -> TD3 updates -> weights/checkpoints. See the module docstring."""

    def __init__(
        self,
        config: TrainingServiceConfig,
        *,
        on_weights: Callable[[PolicyUpdate], None] | None = None,
        on_update: Callable[[int], None] | None = None,
        learner: TD3Learner | None = None,
        replay=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from av_td3_ros.learning.replay import FrameReplayBuffer

        self.config = config
        self._on_weights = on_weights
        self._on_update = on_update  # called with the session's update count after each update
        self._clock = clock
        self.learner = learner if learner is not None else TD3Learner(config.td3)
        self.replay = replay if replay is not None else FrameReplayBuffer(
            config.replay_capacity,
            frame_shape=(config.ingest.frame_height, config.ingest.frame_width),
            seed=config.replay_seed,
        )
        self.ingest = TransitionIngest(config.ingest)
        self._metrics = None
        if config.log_dir:
            from av_td3_ros.learning.metrics import MetricsWriter

            self._metrics = MetricsWriter(Path(config.log_dir).expanduser(), every=config.metrics_every)

        self.version = 0
        self.resumed_from: int | None = None  # learner updates of the loaded checkpoint
        self._publish_pending = False
        self._session_added = 0  # transitions (STEPs) added to replay by this process
        self._session_updates = 0
        self._lags: deque[int] = deque(maxlen=config.lag_window)
        self._lag_max = 0
        self._update_times: deque[float] = deque(maxlen=50)
        self._last_info: dict[str, float] = {}
        self._checkpoints = 0
        self._last_checkpoint_update = -1
        self._last_checkpoint_seconds = 0.0
        self._rollbacks = 0
        self._replay_rejected = 0
        self._errors = 0
        self._consecutive_errors = 0
        self._last_error = ""
        self.failed = False
        self._stopped = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()  # guards _last_info/_lags swaps read by snapshot()

    # ------------------------------------------------------------------ lifecycle
    @property
    def checkpoint_dir(self) -> Path | None:
        return Path(self.config.checkpoint_dir).expanduser() if self.config.checkpoint_dir else None

    def restore(self) -> bool:
        """Continue the version counter, and load the latest checkpoint when `resume` is on and one
        exists. Returns True if a checkpoint was loaded. Call once, before start().

        Raises when a checkpoint exists but cannot be used (another architecture, corrupted): a
        trainer must not silently start over beside a run it cannot read. With resume off the
        learner starts fresh, but versions still count on from the last one published here
        (policy nodes ignore any version that is not newer than theirs)."""
        directory = self.checkpoint_dir
        if directory is None:
            return False
        self.version = max(self.version, self._read_published_version())
        if directory.is_dir():
            # Temporary files of a write that a crash interrupted (the checkpoint it was writing was
            # never committed; the previous one is intact). Nothing else writes here.
            for stale in directory.glob(".*.tmp-*"):
                log.warning("removing %s, left by an interrupted checkpoint write", stale.name)
                stale.unlink(missing_ok=True)
        from av_td3_ros.learning.checkpoint import checkpoint_exists, load_checkpoint

        if not self.config.resume or not checkpoint_exists(directory):
            return False
        extra = load_checkpoint(directory, self.learner) or {}
        self.version = max(int(extra.get("policy_version", 0)), self.version)
        self.resumed_from = self.learner.updates
        self._last_checkpoint_update = self.learner.updates
        self._publish_pending = True  # republish the resumed policy as a new version at start
        log.info("resumed from checkpoint in %s: %d updates, policy version %d (next published: %d)",
                 directory, self.learner.updates, self.version, self.version + 1)
        return True

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("TrainingService already started")
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self._thread.start()

    def stop(self, checkpoint: bool = True, timeout: float | None = 60.0) -> None:
        """Stop the learner thread (after its current update) and write a final checkpoint."""
        if self._stopped:
            return
        self._stop.set()
        self.ingest.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("learner thread did not stop within %s s; no final checkpoint", timeout)
                return
        self._stopped = True
        if checkpoint and not self.failed and self.checkpoint_dir is not None and self.learner.updates > 0:
            try:
                self.checkpoint()
            except OSError as exc:  # e.g. disk full: say so; the previous checkpoint is intact
                log.error("final checkpoint failed: %s", exc)
        if self._metrics is not None:
            self._metrics.close()

    def offer(self, record: TransitionRecord) -> str | None:
        """From any thread (the ROS callback): validate and queue. None = queued, else the reason."""
        return self.ingest.offer(record)

    # ------------------------------------------------------------------ the learner loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception as exc:  # noqa: BLE001 - a learner fault must not pass silently
                worked = False
                if self._record_error(exc):
                    return
            if not worked:
                self.ingest.wait(0.05)

    def _record_error(self, exc: BaseException) -> bool:
        """Log a learner exception; True when the learner must stop (too many in a row)."""
        self._errors += 1
        self._consecutive_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        log.error("learner error %d in a row: %s\n%s", self._consecutive_errors, self._last_error,
                  "".join(traceback.format_exception(exc)))
        if self._consecutive_errors >= self.config.max_consecutive_errors:
            self.failed = True
            log.error("learner stopped after %d consecutive errors", self._consecutive_errors)
            return True
        time.sleep(min(1.0, 0.1 * self._consecutive_errors))
        return False

    def step(self) -> bool:
        """One iteration of the learner loop (public so tests can drive it without a thread):
        move every queued transition into replay, publish a pending version, then run at most
        one update if one is owed. Returns True when it did any work."""
        worked = self.ingest_pending() > 0
        for length in self.ingest.take_episode_lengths():
            self.learner.record_episode_length(length)
        if self._publish_pending:
            self._publish_pending = False
            self.publish()
            worked = True
        if self.updates_owed() > 0:
            self.update_once()
            worked = True
        return worked

    def ingest_pending(self, max_items: int | None = None) -> int:
        """Queued records -> replay. Returns how many records were applied."""
        records = self.ingest.drain(max_items)
        if not records:
            return 0
        lags = []
        for rec in records:
            if rec.kind == KIND_START:
                self.replay.start_episode(rec.actor_id, rec.frame, rec.kinematics)
                continue
            try:
                self.replay.add_step(rec.actor_id, rec.action, rec.reward, rec.frame, rec.kinematics,
                                     rec.terminated, rec.truncated)
            except ValueError as exc:  # the ingest guarantees this cannot happen; never crash on it
                self._replay_rejected += 1
                log.error("replay refused a transition of %r seq %d: %s", rec.actor_id, rec.seq, exc)
                continue
            self._session_added += 1
            lags.append(self.version - rec.policy_version)
        if lags:
            self.learner.record_env_steps(len(lags))
            with self._state_lock:
                self._lags.extend(lags)
                self._lag_max = max(self._lag_max, max(lags))
        return len(records)

    def updates_owed(self) -> int:
        """Updates due under the update-to-data ratio for the transitions added this session."""
        c = self.config
        if self.failed or self._session_added < c.learning_starts or len(self.replay) < c.td3.batch_size:
            return 0
        target = int((self._session_added - c.learning_starts + 1) * c.update_to_data_ratio)
        return max(0, target - self._session_updates)

    def update_once(self) -> dict[str, float]:
        """Sample a batch, run one TD3 update, then publish/checkpoint/log when due."""
        batch_size, td3 = self.config.td3.batch_size, self.learner.config
        # n-step batches only for a learner that asks for them: one-step sampling stays sample(n).
        batch = (self.replay.sample(batch_size) if td3.n_step == 1
                 else self.replay.sample(batch_size, n_step=td3.n_step, gamma=td3.gamma))
        info = self.learner.update(batch)
        self._consecutive_errors = 0
        self._session_updates += 1
        if self._on_update is not None:
            self._on_update(self._session_updates)
        updates = self.learner.updates
        now = self._clock()
        with self._state_lock:
            self._update_times.append(now)
            self._last_info = info
        if not math.isfinite(info.get("critic_loss", 0.0)):
            log.error("update %d: non-finite critic loss %r", updates, info.get("critic_loss"))
        if updates % self.config.publish_every == 0:
            self.publish()
        if self.checkpoint_dir is not None and updates % self.config.checkpoint_every == 0:
            self.checkpoint()
        if self._metrics is not None:
            self._write_metrics(updates, info)
        return info

    # ------------------------------------------------------------------ weights, checkpoints
    def publish(self) -> PolicyUpdate | None:
        """Hand the current actor to `on_weights` as the next version (learner thread only)."""
        state = self.learner.actor_state_dict()
        bad = _all_finite(state)
        if bad is not None:
            self._rollback(f"actor tensor {bad} is not finite")
            return None
        version = self.version + 1
        self._write_published_version(version)  # first: a crash after publishing never reuses it
        self.version = version
        update = PolicyUpdate(version=version, updates=self.learner.updates, state_dict=state,
                              action_limit=float(self.learner.action_limit),
                              cnn_norm=self.learner.config.cnn_norm,
                              max_action=float(self.learner.config.max_action))
        if self._on_weights is not None:
            self._on_weights(update)
        return update

    def checkpoint(self) -> bool:
        """Write a checkpoint now (learner thread, or after stop()). False if refused/failed."""
        directory = self.checkpoint_dir
        if directory is None:
            return False
        from av_td3_ros.learning.checkpoint import save_checkpoint

        if self._learner_diverged():
            return False
        started = time.perf_counter()
        extra = {"policy_version": self.version, "session_transitions": self._session_added,
                 "saved_unix_time": time.time()}
        save_checkpoint(self.learner, directory, extra)
        self._last_checkpoint_seconds = time.perf_counter() - started
        self._checkpoints += 1
        self._last_checkpoint_update = self.learner.updates
        log.info("checkpoint at update %d (policy version %d) in %.2f s",
                 self.learner.updates, self.version, self._last_checkpoint_seconds)
        return True

    def _learner_diverged(self) -> bool:
        for name, module in (("actor", self.learner.policy), ("critic", self.learner.critic),
                             ("critic_encoder", self.learner.critic_encoder)):
            bad = _all_finite(dict(module.state_dict()))
            if bad is not None:
                self._rollback(f"{name} tensor {bad} is not finite")
                return True
        return False

    def _rollback(self, reason: str) -> None:
        """The learner diverged: reload the last checkpoint, or stop when there is none."""
        from av_td3_ros.learning.checkpoint import checkpoint_exists, load_checkpoint

        directory = self.checkpoint_dir
        if directory is None or not checkpoint_exists(directory):
            self.failed = True
            self._last_error = f"learner diverged ({reason}) and there is no checkpoint to roll back to"
            log.error(self._last_error)
            return
        load_checkpoint(directory, self.learner)
        self._rollbacks += 1
        self._last_error = f"learner diverged ({reason}); rolled back to update {self.learner.updates}"
        log.error(self._last_error)

    def _read_published_version(self) -> int:
        directory = self.checkpoint_dir
        if directory is None:
            return 0
        path = directory / VERSION_FILE
        try:
            return int(json.loads(path.read_text())["version"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return 0

    def _write_published_version(self, version: int) -> None:
        directory = self.checkpoint_dir
        if directory is not None:
            write_atomic(directory / VERSION_FILE, json.dumps({"version": version}).encode())

    def _write_metrics(self, updates: int, info: dict[str, float]) -> None:
        self._metrics.write_update(info, updates)  # the core's tags; weight norms whenever present
        if updates % self.config.metrics_every:
            return
        stats = self.ingest.stats()
        self._metrics.write_scalars({
            "trainer/replay_size": float(len(self.replay)),
            "trainer/policy_version": float(self.version),
            "trainer/policy_lag": self._mean_lag(),
            "trainer/updates_per_second": self._updates_per_second(),
            "trainer/transitions_received": float(stats.received),
            "trainer/transitions_dropped": float(stats.dropped),
            "trainer/transitions_lost": float(stats.lost),
            "trainer/queue_depth": float(stats.queue_depth),
        }, updates)

    # ------------------------------------------------------------------ status
    def _mean_lag(self) -> float:
        with self._state_lock:
            return float(np.mean(self._lags)) if self._lags else 0.0

    def _updates_per_second(self) -> float:
        with self._state_lock:
            times = list(self._update_times)
        if len(times) < 2 or self._clock() - times[-1] > 5.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    @property
    def learning(self) -> bool:
        return self._session_updates > 0

    def snapshot(self) -> TrainingSnapshot:
        """A consistent-enough view for status/diagnostics, from any thread."""
        with self._state_lock:
            info = dict(self._last_info)
            lag_max = self._lag_max
        stats = self.ingest.stats()
        limiter = self.learner.limiter
        if self.failed:
            state = "failed"
        elif self._stopped:
            state = "stopped"
        else:
            state = "learning" if self.learning else "collecting"

        def f(key: str) -> float:
            return float(info.get(key, 0.0))

        return TrainingSnapshot(
            updates=int(self.learner.updates), policy_version=int(self.version), replay_size=len(self.replay),
            transitions_received=stats.received, transitions_dropped=stats.dropped,
            transitions_lost=stats.lost,
            updates_per_second=self._updates_per_second(), policy_lag=self._mean_lag(),
            actor_cnn_l2=f("actor_cnn_l2"), critic_cnn_l2=f("critic_cnn_l2"),
            cnn_features_mean=f("cnn_features_mean"), cnn_features_std=f("cnn_features_std"),
            critic_loss=f("critic_loss"), actor_loss=f("actor_loss"), q_mean=f("q_mean"),
            td_error=f("td_error"), grad_norm_actor=f("grad_norm_actor"),
            grad_norm_actor_cnn=f("grad_norm_actor_cnn"), grad_norm_critic=f("grad_norm_critic"),
            grad_norm_critic_cnn=f("grad_norm_critic_cnn"), lr_actor=f("lr_actor"),
            lr_actor_cnn=f("lr_actor_cnn"), lr_critic=f("lr_critic"), lr_critic_cnn=f("lr_critic_cnn"),
            saturated_action_share=f("saturated_share"), action_limit_active=bool(limiter.active),
            action_limit=float(limiter.current_limit),
            state=state, cnn_l2=f("cnn_l2"), ingest=stats, checkpoints=self._checkpoints,
            last_checkpoint_update=self._last_checkpoint_update,
            last_checkpoint_seconds=self._last_checkpoint_seconds, rollbacks=self._rollbacks,
            learner_errors=self._errors, last_error=self._last_error, policy_lag_max=lag_max,
            replay_rejected=self._replay_rejected, session_updates=self._session_updates,
            session_transitions=self._session_added, learning_starts=self.config.learning_starts,
        )
