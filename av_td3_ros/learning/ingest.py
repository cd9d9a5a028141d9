"""Transition ingest: validation, per-actor stream continuity and a bounded hand-off queue.

Pure Python + numpy (no rclpy). The trainer node converts each `av_td3_msgs/Transition` into a
`TransitionRecord` (no validation, no copies) and calls `TransitionIngest.offer()` from its
subscription callback; the learner thread takes validated records with `drain()` / `wait()` and
feeds the replay buffer.

What `offer()` guarantees, so the replay buffer never builds a wrong frame stack:
- Content: kind, actor id, frame size (exactly the configured height x width, `frame` of
  height * width bytes), 23 finite kinematics within +-`max_abs_kinematics`, for a STEP 2 finite
  actions in [-1, 1] and a finite reward within +-`max_abs_reward`. Anything else is dropped and
  counted under its reason; it never reaches the queue.
- Continuity per actor: `seq` must count up by one per message. A gap counts the missing messages
  as lost; a STEP that goes backwards counts as out of order (one loss). Either way the actor's
  episode is broken: its STEPs are dropped until its next START. A START whose seq went backwards
  is an actor that restarted: accepted, counted under `restarts`, not a loss (after a restart
  whose START was lost, the STEPs more than REORDER_WINDOW behind resync the counter).
- Episode structure: a STEP is accepted only inside an open episode (after a START whose own
  message was accepted), with the START's episode number and `step` one more than the previous
  message of that episode; a terminated or truncated STEP closes the episode. A content-invalid
  or queue-overflowing message also breaks its actor's episode (the stream has a hole).
- Memory: the queue holds at most `queue_capacity` records (each frame ~7 KB); when it is full
  the record is dropped and counted (`queue_full`), never buffered elsewhere. At most
  `max_actors` actor streams are tracked; one idle for `actor_idle_timeout` seconds is
  forgotten when a new actor needs its slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace

import numpy as np

from av_td3_ros.config_schema import Settings, setting

# Mirrors av_td3_msgs/Transition KIND_START / KIND_STEP (a test checks they agree).
KIND_START = 0
KIND_STEP = 1

KINEMATICS_DIM = 23
ACTION_DIM = 2
MAX_ACTOR_ID_LENGTH = 256
# A STEP at most this far behind the expected seq is a late (reordered) message and the expected
# seq stays; further behind, the actor restarted its counter and we lost its START: resync.
REORDER_WINDOW = 1000

# Drop reasons (keys of IngestStats.dropped_by_reason).
BAD_ACTOR_ID = "bad_actor_id"
BAD_KIND = "bad_kind"
BAD_FRAME_SIZE = "bad_frame_size"
BAD_FRAME_LENGTH = "bad_frame_length"
BAD_KINEMATICS_SHAPE = "bad_kinematics_shape"
NON_FINITE_KINEMATICS = "non_finite_kinematics"
KINEMATICS_OUT_OF_RANGE = "kinematics_out_of_range"
BAD_ACTION_SHAPE = "bad_action_shape"
NON_FINITE_ACTION = "non_finite_action"
ACTION_OUT_OF_RANGE = "action_out_of_range"
NON_FINITE_REWARD = "non_finite_reward"
REWARD_OUT_OF_RANGE = "reward_out_of_range"
TOO_MANY_ACTORS = "too_many_actors"
EPISODE_BROKEN = "episode_broken"  # STEP with no open episode (gap, restart, after the end, ...)
EPISODE_MISMATCH = "episode_mismatch"  # STEP whose episode/step does not continue the open one
OUT_OF_ORDER = "out_of_order"
QUEUE_FULL = "queue_full"

CONTENT_REASONS = (
    BAD_ACTOR_ID, BAD_KIND, BAD_FRAME_SIZE, BAD_FRAME_LENGTH, BAD_KINEMATICS_SHAPE,
    NON_FINITE_KINEMATICS, KINEMATICS_OUT_OF_RANGE, BAD_ACTION_SHAPE, NON_FINITE_ACTION,
    ACTION_OUT_OF_RANGE, NON_FINITE_REWARD, REWARD_OUT_OF_RANGE,
)


@dataclass(slots=True)
class TransitionRecord:
    """One Transition as plain Python/numpy values (see Transition.msg for the meaning).

    Built by the node without validation: `frame` is the raw 1-D uint8 buffer and
    `frame_height`/`frame_width` the claimed size; `kinematics` and `action` are 1-D float32 of
    whatever length arrived. Records that leave `TransitionIngest` have `frame` reshaped to
    (frame_height, frame_width) and every field checked.
    """

    actor_id: str
    seq: int
    episode: int
    step: int
    policy_version: int
    kind: int
    frame_height: int
    frame_width: int
    frame: np.ndarray
    kinematics: np.ndarray
    action: np.ndarray
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class IngestConfig(Settings):
    """What a transition must satisfy, and the memory bounds; the trainer node's `ingest.*`
    parameters derive from these settings."""

    frame_height: int = setting(84, "frame height a transition must have [px]", min=1)
    frame_width: int = setting(84, "frame width a transition must have [px]", min=1)
    queue_capacity: int = setting(
        4096, "transitions buffered between the subscription and the learner; beyond it they are "
        "dropped and counted (~7.3 KB each)", min=1, max=10_000_000,
    )
    max_actors: int = setting(64, "actor streams tracked at once", min=1, max=100_000)
    actor_idle_timeout: float = setting(
        300.0, "seconds after which a silent actor's slot can be reused", min=1.0, max=1e7
    )
    max_abs_kinematics: float = setting(
        1.0e4, "a transition with any |kinematics| above this is dropped", min=1.0
    )
    max_abs_reward: float = setting(1.0e4, "a transition with |reward| above this is dropped", min=1e-3)
    episode_length_history: int = setting(1000, "recent episode lengths kept for the status", min=1)


@dataclass(frozen=True)
class IngestStats:
    """A consistent snapshot of the ingest counters.

    received = accepted + dropped (+ the records still being offered). `lost` counts messages
    that never arrived (seq gaps) plus out-of-order STEPs; those are not in `received`.
    """

    received: int
    accepted: int
    dropped: int
    lost: int
    gaps: int
    out_of_order: int
    restarts: int
    queue_depth: int
    queue_capacity: int
    queue_high_water: int
    actors: int
    dropped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    expected_seq: int
    last_seen: float
    open_episode: int | None = None  # episode number of the open episode, None = closed/broken
    last_step: int = 0


class TransitionIngest:
    """Validates transitions and hands them to one consumer through a bounded queue.

    `offer()` may be called from any number of threads (ROS callbacks); `drain()`/`wait()` from
    the consumer (the learner thread). All methods are thread-safe.
    """

    def __init__(self, config: IngestConfig | None = None, clock=time.monotonic) -> None:
        self.config = config or IngestConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[TransitionRecord] = deque()
        self._streams: dict[str, _Stream] = {}
        self._episode_lengths: deque[int] = deque(maxlen=self.config.episode_length_history)
        self._reasons: Counter[str] = Counter()
        self._received = 0
        self._accepted = 0
        self._lost = 0
        self._gaps = 0
        self._out_of_order = 0
        self._restarts = 0
        self._high_water = 0
        self._frame_bytes = self.config.frame_height * self.config.frame_width

    # ---------------------------------------------------------------- producer side
    def offer(self, record: TransitionRecord) -> str | None:
        """Validate one record and queue it. Returns None when queued, else the drop reason."""
        reason = self._check_content(record)  # stateless, outside the lock
        with self._lock:
            self._received += 1
            stream = self._streams.get(record.actor_id) if reason != BAD_ACTOR_ID else None
            if reason is not None:
                if stream is not None:  # a hole in a known stream: resync seq, break its episode
                    stream.expected_seq = record.seq + 1
                    stream.last_seen = self._clock()
                    stream.open_episode = None
                return self._drop(reason)
            if stream is None:
                stream = self._new_stream(record)
                if stream is None:
                    return self._drop(TOO_MANY_ACTORS)
            stream.last_seen = self._clock()
            reason = self._check_continuity(stream, record)
            ends_episode = record.kind == KIND_STEP and (record.terminated or record.truncated)
            if ends_episode and reason != OUT_OF_ORDER:
                # The driving happened even when the trainer cannot use the episode (joined late,
                # lost a message): the ActionLimiter's episode-length criterion still sees it.
                self._episode_lengths.append(int(record.step))
            if reason is not None:
                return self._drop(reason)
            if len(self._queue) >= self.config.queue_capacity:
                stream.open_episode = None  # the replay must not continue across the hole
                return self._drop(QUEUE_FULL)
            if ends_episode:
                stream.open_episode = None
            frame = record.frame.reshape(record.frame_height, record.frame_width)
            self._queue.append(replace(record, frame=frame))
            self._accepted += 1
            if len(self._queue) > self._high_water:
                self._high_water = len(self._queue)
            self._ready.notify()
            return None

    def _drop(self, reason: str) -> str:
        self._reasons[reason] += 1
        return reason

    def _new_stream(self, record: TransitionRecord) -> _Stream | None:
        if len(self._streams) >= self.config.max_actors:
            now = self._clock()
            idle = [a for a, s in self._streams.items() if now - s.last_seen > self.config.actor_idle_timeout]
            for actor in idle:
                del self._streams[actor]
            if len(self._streams) >= self.config.max_actors:
                return None
        # Seeded so that this first message is "in sequence"; an unknown actor's first STEP has
        # no open episode and is dropped as EPISODE_BROKEN (the trainer joined mid-episode).
        stream = _Stream(expected_seq=record.seq, last_seen=self._clock())
        self._streams[record.actor_id] = stream
        return stream

    def _check_continuity(self, stream: _Stream, record: TransitionRecord) -> str | None:
        seq = int(record.seq)
        if seq > stream.expected_seq:
            self._lost += seq - stream.expected_seq
            self._gaps += 1
            stream.open_episode = None
        elif seq < stream.expected_seq:
            if record.kind == KIND_START:
                self._restarts += 1  # the actor restarted its counter; its START opens cleanly
            else:
                self._lost += 1
                self._out_of_order += 1
                stream.open_episode = None
                if stream.expected_seq - seq > REORDER_WINDOW:
                    stream.expected_seq = seq + 1  # far behind: the actor restarted, its START lost
                return OUT_OF_ORDER
        stream.expected_seq = seq + 1
        if record.kind == KIND_START:
            stream.open_episode = int(record.episode)
            stream.last_step = int(record.step)
            return None
        if stream.open_episode is None:
            return EPISODE_BROKEN
        if int(record.episode) != stream.open_episode or int(record.step) != stream.last_step + 1:
            stream.open_episode = None
            return EPISODE_MISMATCH
        stream.last_step = int(record.step)
        return None

    def _check_content(self, r: TransitionRecord) -> str | None:
        if not isinstance(r.actor_id, str) or not r.actor_id or len(r.actor_id) > MAX_ACTOR_ID_LENGTH:
            return BAD_ACTOR_ID
        if r.kind not in (KIND_START, KIND_STEP):
            return BAD_KIND
        if r.frame_height != self.config.frame_height or r.frame_width != self.config.frame_width:
            return BAD_FRAME_SIZE
        if r.frame.dtype != np.uint8 or r.frame.ndim != 1 or r.frame.size != self._frame_bytes:
            return BAD_FRAME_LENGTH
        kin = r.kinematics
        if kin.ndim != 1 or kin.size != KINEMATICS_DIM:
            return BAD_KINEMATICS_SHAPE
        if not np.isfinite(kin).all():
            return NON_FINITE_KINEMATICS
        if float(np.abs(kin).max()) > self.config.max_abs_kinematics:
            return KINEMATICS_OUT_OF_RANGE
        if r.kind == KIND_STEP:
            act = r.action
            if act.ndim != 1 or act.size != ACTION_DIM:
                return BAD_ACTION_SHAPE
            if not np.isfinite(act).all():
                return NON_FINITE_ACTION
            if float(np.abs(act).max()) > 1.0:
                return ACTION_OUT_OF_RANGE
            if not math.isfinite(r.reward):
                return NON_FINITE_REWARD
            if abs(r.reward) > self.config.max_abs_reward:
                return REWARD_OUT_OF_RANGE
        return None

    # ---------------------------------------------------------------- consumer side
    def drain(self, max_items: int | None = None) -> list[TransitionRecord]:
        """Take up to `max_items` (all when None) queued records, oldest first, without waiting."""
        with self._lock:
            n = len(self._queue) if max_items is None else min(max_items, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def wait(self, timeout: float) -> bool:
        """Block until at least one record is queued or `timeout` seconds passed."""
        with self._ready:
            if self._queue:
                return True
            self._ready.wait(timeout)
            return bool(self._queue)

    def wake(self) -> None:
        """Wake a consumer blocked in `wait()` (used on shutdown)."""
        with self._ready:
            self._ready.notify_all()

    def take_episode_lengths(self) -> list[int]:
        """Lengths (the final STEP's `step`) of episodes that ended since the last call."""
        with self._lock:
            lengths = list(self._episode_lengths)
            self._episode_lengths.clear()
            return lengths

    def stats(self) -> IngestStats:
        with self._lock:
            dropped = sum(self._reasons.values())
            return IngestStats(
                received=self._received, accepted=self._accepted, dropped=dropped, lost=self._lost,
                gaps=self._gaps, out_of_order=self._out_of_order, restarts=self._restarts,
                queue_depth=len(self._queue), queue_capacity=self.config.queue_capacity,
                queue_high_water=self._high_water, actors=len(self._streams),
                dropped_by_reason=dict(self._reasons),
            )
