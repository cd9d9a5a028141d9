"""Frame replay buffer: every frame stored once, frame stacks rebuilt by index.

Pure numpy (no torch, no rclpy). Why not store stacks: a transition's obs and next_obs stacks
of 4 uint8 84x84 frames share 3 frames with each other and with the neighbouring transitions;
storing them costs 56.5 KB per transition, storing each frame once ~7.2 KB (FACTS.md).

Layout (DQN-Atari style, generalised to interleaved streams). Storage is a ring of `capacity`
frame SLOTS, written strictly in order (slot = write number % capacity). A slot holds one
observation (frame + kinematics) of one stream's episode and, when that observation was reached
by a step, that step's action, reward, terminated and truncated flags. So a transition is
named by the slot of its next observation: `add_step` writes one slot and returns its index.

Several streams (actor ids) interleave in the ring, so the previous frame of a stream is not
the previous slot. Each slot therefore records its `window`: the slots of the last `stack + 1`
frames of its episode, oldest first, with the episode's first frame repeated where the
episode is younger than that (no stack ever spans an episode boundary). obs stack =
window[:-1], next_obs stack = window[1:].

Overwrite safety: when the ring wraps, a slot's frame is replaced. A transition whose window
points at a replaced slot would silently mix in another episode's (or stream's) frame, so it
is invalid from that moment on. Slots are replaced in write order and the window's frames are
in write order too, so the transition is valid exactly while its OLDEST window frame has not
been replaced: `oldest_write >= writes_total - capacity`. Invalid transitions are never sampled
and not counted by `len()`; the count is kept exactly in O(1) per write (see `_dependents`).

Episode starts cost one slot each (the first frame has no step), so an episode of L steps
takes L + 1 slots; `capacity` counts slots. Not thread-safe: one thread adds and samples.

n-step returns: each slot also links to the slot of its episode's NEXT step (-1 while there is
none: the episode ended there, its next step is not written yet, or the stream was dropped). A
window of up to n steps follows these links from the sampled transition and stops early at an
episode end, so it never crosses into another episode. The links need no overwrite check of
their own: a linked slot is written after the transition's whole window, so it is intact
whenever the transition is.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

__all__ = ["FrameReplayBuffer", "ReplayBatch"]

ACTION_DIM = 2
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Rejection sampling draws slots uniformly and throws away invalid ones (episode starts and
# overwritten histories: a small share). After this many rounds it falls back to an exact draw
# among the valid slots (an O(capacity) scan), so a pathological buffer cannot loop forever.
_MAX_REJECTION_ROUNDS = 8


@dataclass
class ReplayBatch:
    """A batch of transitions as numpy arrays (the learner converts them to tensors).

    frames / next_frames: (B, stack, H, W) uint8, oldest frame first. From `FrameReplayBuffer`
    they are overlapping views of one (B, stack + 1, H, W) array (not C-contiguous; torch takes
    them as they are): treat them as read-only, writing into one changes the other.
    kinematics / next_kinematics: (B, kinematics_dim) float32. actions: (B, 2) float32.
    rewards: (B,) float32. terminated: (B,) float32, 1.0 only for a TERMINATED step; a
    truncated step (time limit, route finished, stuck, ...) is 0 here and bootstraps.
    discounts: None for one-step batches (the learner bootstraps with its gamma). For n-step
    batches (B,) float32 gamma^k, k = the rewards summed in `rewards` (n, or fewer where the
    episode ended inside the window); next_* and terminated are then those of the k-th step.
    """

    frames: np.ndarray
    kinematics: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_frames: np.ndarray
    next_kinematics: np.ndarray
    terminated: np.ndarray
    discounts: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


@dataclass
class _OpenEpisode:
    """An episode that is still being written by its stream.

    Kept here, not read back from the ring: the ring may already have replaced the stream's
    latest slot, and its window must still describe this episode's frames.
    """

    window: np.ndarray  # (stack + 1,) int64 slots, oldest first
    window_writes: np.ndarray  # (stack + 1,) int64 write numbers of those slots
    steps: int = 0


class FrameReplayBuffer:
    """Replay buffer of (stack, H, W) uint8 frame stacks that stores each frame once.

    Usage per stream (any hashable id, e.g. the actor id string):
        buffer.start_episode(stream, first_frame, first_kinematics)
        buffer.add_step(stream, action, reward, frame, kinematics, terminated, truncated)  # ...
    A terminated or truncated step closes the stream's episode; the next episode needs a new
    `start_episode`. `start_episode` on a stream with an open episode abandons that episode.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int] = (84, 84),
        kinematics_dim: int = 23,
        stack: int = 4,
        seed: int | None = None,
    ) -> None:
        if int(stack) < 1:
            raise ValueError(f"stack must be >= 1, got {stack!r}")
        if int(capacity) < int(stack) + 1:
            raise ValueError(f"capacity must be >= stack + 1 = {int(stack) + 1} slots, got {capacity!r}")
        frame_shape = tuple(int(n) for n in frame_shape)
        if len(frame_shape) != 2 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (height, width) >= 1, got {frame_shape!r}")
        if int(kinematics_dim) < 1:
            raise ValueError(f"kinematics_dim must be >= 1, got {kinematics_dim!r}")
        self.capacity = int(capacity)
        self.frame_shape: tuple[int, int] = frame_shape  # type: ignore[assignment]
        self.kinematics_dim = int(kinematics_dim)
        self.stack = int(stack)
        self._rng = np.random.default_rng(seed)

        n = self.capacity
        # np.zeros is calloc: pages are only touched when written, so a 1M-slot buffer does not
        # commit its ~7 GB up front.
        self._frames = np.zeros((n, *frame_shape), dtype=np.uint8)
        self._kinematics = np.zeros((n, self.kinematics_dim), dtype=np.float32)
        # The step that reached the slot's observation (meaningless for an episode's first frame).
        self._actions = np.zeros((n, ACTION_DIM), dtype=np.float32)
        self._rewards = np.zeros(n, dtype=np.float32)
        self._terminated = np.zeros(n, dtype=np.bool_)
        self._truncated = np.zeros(n, dtype=np.bool_)
        self._is_step = np.zeros(n, dtype=np.bool_)  # False: an episode's first frame
        self._window = np.zeros((n, self.stack + 1), dtype=np.int32)
        self._oldest_write = np.zeros(n, dtype=np.int64)  # write number of window[0]
        # How many still-valid transitions have this slot as their oldest window frame: when the
        # slot is replaced exactly those become invalid, which keeps len() exact in O(1).
        self._dependents = np.zeros(n, dtype=np.int16)
        # The slot of the same episode's next step, -1 while there is none (see the module doc).
        self._next_step = np.full(n, -1, dtype=np.int32)

        self._writes_total = 0  # frames ever written; the next one goes to slot writes % capacity
        self._valid_count = 0
        self._open: dict[Hashable, _OpenEpisode] = {}
        self.episodes_started = 0
        self.steps_added = 0
        self.streams_dropped = 0

    # ------------------------------------------------------------------------------- sizes
    def __len__(self) -> int:
        """Number of transitions that can be sampled (not overwritten, history intact)."""
        return self._valid_count

    @property
    def nbytes(self) -> int:
        """Bytes held by the storage arrays (the whole capacity, allocated up front)."""
        return sum(a.nbytes for a in self._arrays())

    def bytes_per_transition(self) -> float:
        """nbytes / capacity: the cost of one stored transition. Each episode's first frame
        takes one more slot, so an episode of L steps costs (L + 1) / L times this."""
        return self.nbytes / self.capacity

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self._frames, self._kinematics, self._actions, self._rewards, self._terminated,
                self._truncated, self._is_step, self._window, self._oldest_write, self._dependents,
                self._next_step)

    # ----------------------------------------------------------------------- bookkeeping
    @property
    def writes_total(self) -> int:
        """Frames written since construction (episode starts included)."""
        return self._writes_total

    @property
    def open_streams(self) -> tuple[Hashable, ...]:
        """Streams with an episode in progress (an `add_step` is accepted for exactly these)."""
        return tuple(self._open)

    def is_open(self, stream: Hashable) -> bool:
        return stream in self._open

    def episode_steps(self, stream: Hashable) -> int:
        """Steps added so far to the stream's open episode."""
        return self._episode(stream, "episode_steps").steps

    def drop_stream(self, stream: Hashable) -> bool:
        """Forget the stream's open episode (e.g. the trainer detected a lost message: the
        next frame would not follow the stored ones). Returns whether one was open.

        The transitions already stored stay sampleable: each is a complete, correct
        (obs, action, reward, next_obs); with no end flag it bootstraps like a truncated step.
        Only continuing the episode is prevented: the next `add_step` raises until
        `start_episode`.
        """
        if self._open.pop(stream, None) is None:
            return False
        self.streams_dropped += 1
        return True

    def stats(self) -> dict[str, int]:
        return {
            "transitions": len(self),
            "capacity": self.capacity,
            "writes_total": self._writes_total,
            "episodes_started": self.episodes_started,
            "steps_added": self.steps_added,
            "open_streams": len(self._open),
            "streams_dropped": self.streams_dropped,
        }

    # ------------------------------------------------------------------------------ adding
    def start_episode(self, stream: Hashable, frame: np.ndarray, kinematics: np.ndarray) -> int:
        """Store the first observation of a new episode of `stream`; returns its slot.

        An episode still open on this stream is abandoned (its stored transitions stay)."""
        self._check_stream(stream)
        frame = self._checked_frame(frame)
        kinematics = self._checked_kinematics(kinematics)
        slot, write = self._write_slot(frame, kinematics)
        self._is_step[slot] = False
        self._window[slot] = slot
        self._oldest_write[slot] = write
        self._open[stream] = _OpenEpisode(
            window=np.full(self.stack + 1, slot, dtype=np.int64),
            window_writes=np.full(self.stack + 1, write, dtype=np.int64),
        )
        self.episodes_started += 1
        return slot

    def add_step(
        self,
        stream: Hashable,
        action: np.ndarray,
        reward: float,
        frame: np.ndarray,
        kinematics: np.ndarray,
        terminated: bool,
        truncated: bool,
    ) -> int:
        """Store one step of the stream's open episode: `action` taken in the previous
        observation gave `reward` and the new observation (`frame`, `kinematics`).

        Returns the transition's slot (usable with `sample_indices`). A terminated or
        truncated step closes the episode; when both are set, terminated wins for the target
        (both flags are stored as given). Raises ValueError for an unknown stream or a stream
        whose episode already ended, and for invalid values; nothing is stored then.
        """
        episode = self._episode(stream, "add_step")
        action = self._checked_vector(action, ACTION_DIM, "action")
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise ValueError(f"reward must be a number, got {reward!r}") from None
        if not (math.isfinite(reward) and abs(reward) <= _FLOAT32_MAX):  # stored as float32
            raise ValueError(f"reward must be finite (as float32), got {reward!r}")
        frame = self._checked_frame(frame)
        kinematics = self._checked_kinematics(kinematics)
        terminated = self._checked_flag(terminated, "terminated")
        truncated = self._checked_flag(truncated, "truncated")

        slot, write = self._write_slot(frame, kinematics)
        window = np.empty_like(episode.window)
        window[:-1] = episode.window[1:]
        window[-1] = slot
        window_writes = np.empty_like(episode.window_writes)
        window_writes[:-1] = episode.window_writes[1:]
        window_writes[-1] = write
        oldest_write = int(window_writes[0])

        self._actions[slot] = action
        self._rewards[slot] = reward
        self._terminated[slot] = terminated
        self._truncated[slot] = truncated
        self._is_step[slot] = True
        self._window[slot] = window
        self._oldest_write[slot] = oldest_write
        if self._history_intact(oldest_write):
            self._dependents[window[0]] += 1
            self._valid_count += 1
        previous_slot, previous_write = int(episode.window[-1]), int(episode.window_writes[-1])
        if self._history_intact(previous_write):  # not replaced meanwhile (by this very write, say)
            self._next_step[previous_slot] = slot
        # else: the stream's older frames were replaced while its episode was running (a ring
        # too small for this episode): stored but never sampled; later steps become valid
        # again once their window no longer reaches back to replaced slots.

        episode.window = window
        episode.window_writes = window_writes
        episode.steps += 1
        self.steps_added += 1
        if terminated or truncated:
            del self._open[stream]
        return slot

    def _write_slot(self, frame: np.ndarray, kinematics: np.ndarray) -> tuple[int, int]:
        """Write the next ring slot; returns (slot, write number)."""
        write = self._writes_total
        slot = write % self.capacity
        if write >= self.capacity:
            # Replacing this slot invalidates every transition whose oldest frame it held (the
            # slot's own transition, if any, already became invalid when its older frames went).
            self._valid_count -= int(self._dependents[slot])
            self._dependents[slot] = 0
        self._frames[slot] = frame
        self._kinematics[slot] = kinematics
        self._next_step[slot] = -1
        self._writes_total = write + 1
        return slot, write

    def _history_intact(self, oldest_write: int | np.ndarray) -> bool | np.ndarray:
        return oldest_write >= self._writes_total - self.capacity

    # ---------------------------------------------------------------------------- sampling
    def sample(self, batch_size: int, n_step: int = 1, gamma: float | None = None) -> ReplayBatch:
        """`batch_size` transitions drawn uniformly (with replacement) among the valid ones;
        n_step > 1 (with the discount `gamma`) makes n-step batches (see `sample_indices`)."""
        return self.sample_indices(self.sample_slots(batch_size), n_step=n_step, gamma=gamma)

    def sample_slots(self, batch_size: int) -> np.ndarray:
        """The slots `sample` would use: uniform with replacement over valid transitions."""
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self._valid_count == 0:
            raise ValueError("cannot sample: the buffer holds no complete transition yet")
        filled = min(self._writes_total, self.capacity)
        chosen = np.empty(0, dtype=np.int64)
        for _ in range(_MAX_REJECTION_ROUNDS):
            missing = batch_size - chosen.size
            # Draw a little more than the expected need so one round is almost always enough;
            # capped, so a buffer with very few valid slots falls back instead of drawing millions.
            expected_need = int(missing * filled / self._valid_count) + 8
            draw = self._rng.integers(0, filled, size=min(expected_need, 8 * missing + 64))
            chosen = np.concatenate([chosen, draw[self.valid_mask(draw)][:missing]])
            if chosen.size == batch_size:
                return chosen
        valid = np.flatnonzero(self.valid_mask(np.arange(filled)))
        rest = self._rng.choice(valid, size=batch_size - chosen.size, replace=True)
        return np.concatenate([chosen, rest])

    def valid_mask(self, slots: np.ndarray) -> np.ndarray:
        """Whether each slot holds a sampleable transition (a step with an intact history)."""
        slots = np.asarray(slots, dtype=np.int64)
        return self._is_step[slots] & self._history_intact(self._oldest_write[slots])

    def valid_slots(self) -> np.ndarray:
        """All slots holding sampleable transitions, ascending (an O(capacity) scan)."""
        filled = min(self._writes_total, self.capacity)
        return np.flatnonzero(self.valid_mask(np.arange(filled)))

    def sample_indices(self, slots: np.ndarray, n_step: int = 1, gamma: float | None = None) -> ReplayBatch:
        """The batch for the given transition slots (as returned by `add_step`/`sample_slots`).

        n_step = 1: one-step transitions (discounts None). n_step > 1 needs `gamma`: rewards =
        sum_{i<k} gamma^i r_{t+i}, next_* = the observation after step t+k-1, terminated = that
        step's flag, discounts = gamma^k; the window stops early (k < n_step) at a terminated or
        truncated step and at the newest step stored so far of an open (or dropped) episode.
        Raises ValueError when a slot does not hold a valid transition."""
        n_step = self._checked_n_step(n_step, gamma)
        slots = np.asarray(slots)
        if slots.ndim != 1 or not np.issubdtype(slots.dtype, np.integer):
            raise ValueError(f"slots must be a 1-D integer array, got {slots.dtype} {slots.shape}")
        if slots.size and (slots.min() < 0 or slots.max() >= min(self._writes_total, self.capacity)):
            raise ValueError("slot index out of range of the written part of the buffer")
        if not self.valid_mask(slots).all():
            bad = slots[~self.valid_mask(slots)]
            raise ValueError(f"slots {bad[:8].tolist()} hold no valid transition "
                             "(episode start, or history overwritten)")
        if n_step > 1:
            return self._n_step_batch(slots.astype(np.int64), n_step, float(gamma))
        window = self._window[slots]  # (B, stack + 1)
        # One gather of the stack + 1 frames per transition; obs and next_obs are overlapping
        # views of it. Measured at batch 256 (100k slots): ~1 ms, against 2.3-4 ms for two
        # contiguous (B, stack, H, W) gathers (60% more bytes, and fresh pages on every call).
        frames = np.take(self._frames, window, axis=0)
        return ReplayBatch(
            frames=frames[:, :-1],
            kinematics=self._kinematics[window[:, -2]],
            actions=self._actions[slots],
            rewards=self._rewards[slots],
            next_frames=frames[:, 1:],
            next_kinematics=self._kinematics[slots],
            terminated=self._terminated[slots].astype(np.float32),
        )

    def _n_step_batch(self, slots: np.ndarray, n_step: int, gamma: float) -> ReplayBatch:
        last = slots.copy()  # the slot of the window's newest step so far
        returns = self._rewards[slots].astype(np.float64)
        steps = np.ones(slots.size, dtype=np.int64)
        going = ~self._episode_ends(slots)  # an episode end closes the window
        for i in range(1, n_step):
            following = self._next_step[last]
            rows = np.flatnonzero(going & (following >= 0))
            if rows.size == 0:
                break
            step_slots = following[rows]
            returns[rows] += np.float64(gamma) ** i * self._rewards[step_slots]
            last[rows] = step_slots
            steps[rows] += 1
            going[:] = False
            going[rows] = ~self._episode_ends(step_slots)
        first_window, last_window = self._window[slots], self._window[last]
        # One gather for both stacks: obs from the first step's window, next_obs from the last's.
        both = np.concatenate([first_window[:, :-1], last_window[:, 1:]], axis=1)  # (B, 2 * stack)
        frames = np.take(self._frames, both, axis=0)
        return ReplayBatch(
            frames=frames[:, : self.stack],
            kinematics=self._kinematics[first_window[:, -2]],
            actions=self._actions[slots],
            rewards=returns.astype(np.float32),
            next_frames=frames[:, self.stack:],
            next_kinematics=self._kinematics[last],
            terminated=self._terminated[last].astype(np.float32),
            discounts=(gamma**steps).astype(np.float32),
        )

    def _episode_ends(self, slots: np.ndarray) -> np.ndarray:
        return self._terminated[slots] | self._truncated[slots]

    def truncated_flags(self, slots: np.ndarray) -> np.ndarray:
        """The stored truncation flags of transition slots (for statistics; the TD target uses
        only `terminated`)."""
        return self._truncated[np.asarray(slots, dtype=np.int64)].copy()

    # -------------------------------------------------------------------------- validation
    def _episode(self, stream: Hashable, caller: str) -> _OpenEpisode:
        try:
            return self._open[stream]
        except KeyError:
            raise ValueError(
                f"{caller}: stream {stream!r} has no open episode: call start_episode() first "
                "(unknown stream, its episode ended with terminated/truncated, or it was dropped)"
            ) from None
        except TypeError:
            raise ValueError(f"{caller}: stream id must be hashable, got {type(stream).__name__}") from None

    @staticmethod
    def _checked_n_step(n_step: int, gamma: float | None) -> int:
        if not (isinstance(n_step, int | np.integer) and n_step >= 1):
            raise ValueError(f"n_step must be an integer >= 1, got {n_step!r}")
        if n_step > 1 and not (isinstance(gamma, int | float | np.floating) and 0.0 <= gamma <= 1.0):
            raise ValueError(f"n-step sampling needs a discount gamma in [0, 1], got {gamma!r}")
        return int(n_step)

    @staticmethod
    def _check_stream(stream: Hashable) -> None:
        try:
            hash(stream)
        except TypeError:
            raise ValueError(f"stream id must be hashable, got {type(stream).__name__}") from None

    def _checked_frame(self, frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 (0..255), got {frame.dtype}")
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame must have shape {self.frame_shape}, got {frame.shape}")
        return frame

    def _checked_kinematics(self, kinematics: np.ndarray) -> np.ndarray:
        return self._checked_vector(kinematics, self.kinematics_dim, "kinematics")

    @staticmethod
    def _checked_vector(values: np.ndarray, size: int, name: str) -> np.ndarray:
        array = np.asarray(values)
        if array.shape != (size,):
            raise ValueError(f"{name} must have shape ({size},), got {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # an overflow to inf is reported just below
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} must be finite (as float32), got {np.asarray(values).tolist()}")
        return array

    @staticmethod
    def _checked_flag(value: bool, name: str) -> bool:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"{name} must be a bool, got {value!r}")
