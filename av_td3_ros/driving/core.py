"""DrivingCore: one car's decision for one camera frame, as plain numpy (no ROS).

Every runner calls this one object: the policy node (frames from CARLA's bridge or sim_node) and
the evaluation (frames from the embedded simulator, in process). Nothing else turns a frame into
a command, so the evaluation measures exactly what the node drives.

    on_frame(stamp_ns, image, encoding, state) -> FrameDecision: one ControlCommand, and in train
    mode the Transition records to publish, the reward and the episode end.

Modes: `train` explores (Gaussian noise, uniform random before any weights) under the action
limit; `evaluate` runs train's episodes with the deterministic actor; `deploy` drives
deterministically, never ends an episode, and brakes while it has no valid weights.

Episodes (train, evaluate):
    first frame   START(frame, kinematics); act
    frame t       STEP(a_{t-1}, r_t, terminated, truncated, frame_t); act, or brake if it ended
    ended         brake on every frame; `request_reset` once. After `reset_done()` the next episode
                  starts only on a route that arrived after the episode ended: in CARLA the
                  waypoint publisher plans the new route a tick or more after the reset answer,
                  and judging the new start on the old route would end it at once (off_route).

Events (collision, lane invasion) are attributed by stamp: an event belongs to the step whose
frame is the first with a stamp >= the event's. The real bridge publishes a tick's camera frame
first and its collision after, so an event may arrive after its frame was answered: each STEP is
held until the next frame (or the runner's `settle()`, a short grace later), and a late event
amends it (a collision then ends the episode on that step; the car brakes from the next frame).
Unstamped events (stamp 0) belong to the next frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from av_td3_ros.driving.command import BRAKE, ControlCommand, action_to_control
from av_td3_ros.driving.state import VehicleState
from av_td3_ros.learning.exploration import Exploration
from av_td3_ros.learning.ingest import KIND_START, KIND_STEP, TransitionRecord
from av_td3_ros.perception.image import FrameStack, to_gray84
from av_td3_ros.perception.kinematics import KinematicsEncoder, Route
from av_td3_ros.perception.reward import EpisodeTracker, RewardConfig, StepResult

__all__ = ["MODES", "DrivingCore", "FrameDecision", "STAMP_TOLERANCE_NS"]

MODES = ("train", "evaluate", "deploy")
# The largest |kinematics| value acted on: the trainer's bound (IngestConfig.max_abs_kinematics).
MAX_ABS_KINEMATICS = 1.0e4
# Two stamps this close are the same simulator tick: the bridge derives image and odometry stamps
# from float seconds, so one tick's stamps can differ by a nanosecond or so.
STAMP_TOLERANCE_NS = 1_000_000
EVENT_KINDS = ("collision", "lane_invasion")


@dataclass
class FrameDecision:
    command: ControlCommand
    action: np.ndarray | None = None  # the action sent (after noise and limit); None = brake
    transitions: list[TransitionRecord] = field(default_factory=list)  # ready to publish, in order
    reward: float | None = None  # of the step that led to this frame
    episode_return: float = 0.0
    episode_end: str = ""  # non-empty: an episode ended (the reason)
    ended_steps: int = 0  # with episode_end: the episode's length in steps
    request_reset: bool = False  # the runner should now reset the car (async)
    brake_reason: str = ""  # why the command is a brake
    inference_ms: float | None = None
    policy_version: int = 0


@dataclass
class _HeldStep:
    """A STEP whose tick's events may still arrive."""

    record: TransitionRecord
    stamp_ns: int
    previous_stamp_ns: int


class DrivingCore:
    """Per-frame decisions of one car.

    policy: an object with `.policy` (None until weights), `.version` and
    `.act(frames, kinematics, policy) -> (action, version)` (PolicyRuntime, or a driver wrapper).
    limiter: an ActionLimiter (train mode only) whose limit follows the weights' action_limit.
    exploration: a NoiseSchedule (train mode; default: constant 0.1, TD3Config's). Noise, the
    uniform random action before weights and the limit are learning.exploration.Exploration's,
    the one implementation the trainer's TD3Learner.act uses too.
    """

    def __init__(
        self,
        *,
        mode: str,
        policy,
        reward: RewardConfig | None = None,
        actor_id: str = "car",
        limiter=None,
        exploration=None,
        seed: int | None = None,
        search_ahead: float = 30.0,
        finish_distance: float = 2.0,
        stack_size: int = 4,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.episodic = mode != "deploy"
        self.policy = policy
        self.actor_id = actor_id
        self.limiter = limiter if mode == "train" else None
        self.rng = np.random.default_rng(seed)
        self.explorer = None
        if mode == "train":
            self.explorer = Exploration(exploration, rng=self.rng, limiter=self.limiter)
        self.env_steps = 0  # actions taken in train mode: the exploration schedule's clock
        self.stack = FrameStack(stack_size)
        self.encoder = KinematicsEncoder(num_waypoints=10, search_ahead=search_ahead,
                                         finish_distance=finish_distance)
        self.tracker = EpisodeTracker(reward)
        self.route: Route | None = None
        self.no_weights_reason = "no policy weights received yet"
        self.seq = 0
        self.episode = 0
        # "start": the next frame starts an episode; "run"; "ended": braking until reset_done();
        # "route": reset done, braking until a route newer than the episode's end arrives.
        self.phase = "start"
        self.late_events = 0  # events that arrived after their step was published (dropped)
        self._events: list[tuple[str, int]] = []  # (kind, stamp_ns) not yet charged to a step
        self._held: _HeldStep | None = None
        self._frame_stamp = -1  # stamp of the last frame of this episode
        self._route_since_end = False
        self._last_action: np.ndarray | None = None
        self._last_version = 0
        self._limit_source = None

    # --- inputs besides frames ------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.tracker.steps

    @property
    def episode_return(self) -> float:
        return self.tracker.episode_return

    def set_route(self, points: np.ndarray | None) -> list[TransitionRecord]:
        """A new route ((N, 2) map points) or None (invalid: brake until a valid one). A route
        during an episode starts a new one. Raises ValueError for a route that cannot be
        followed (the old route is dropped then too). Returns held records to publish."""
        self.route = None
        flushed = self._restart()
        self.route = None if points is None else Route.deduplicated(points)
        if self.route is not None:
            self._route_since_end = True
            if self.phase == "route":
                self.phase = "start"
        return flushed

    def add_event(self, kind: str, stamp_ns: int) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {kind!r}")
        self._events.append((kind, int(stamp_ns)))

    def reset_done(self, expect_route: bool = True) -> None:
        """The reset finished (or failed, or timed out). With `expect_route`, the next episode
        waits for a route that arrived after the end (`route_wait_over()` gives up waiting)."""
        if self.phase in ("ended", "route"):
            self.phase = "start" if (self._route_since_end or not expect_route) else "route"

    def route_wait_over(self) -> None:
        """Stop waiting for a newer route: the next episode starts on the current one."""
        if self.phase == "route":
            self.phase = "start"

    def restart_episode(self) -> list[TransitionRecord]:
        """Drop the running episode (e.g. an input gap broke the frame stack); the next frame is
        a START. Returns the held records to publish."""
        return self._restart()

    @property
    def holding(self) -> bool:
        """A STEP waits for late events of its tick (publish it with `settle()` at the latest)."""
        return self._held is not None

    def settle(self) -> FrameDecision:
        """Release the held STEP now (its tick's events are in, or no longer awaited). The
        decision carries its record, and the episode end if a late collision ended it there."""
        decision = FrameDecision(BRAKE, episode_return=self.episode_return)
        self._settle(decision)
        return decision

    # --- one frame --------------------------------------------------------------------------------
    def on_frame(self, stamp_ns: int, image: np.ndarray, encoding: str, state: VehicleState) -> FrameDecision:
        """image: (H, W[, C]) uint8 in `encoding` (bgra8, bgr8, rgb8, rgba8, mono8)."""
        decision = FrameDecision(BRAKE, episode_return=self.episode_return)
        self._settle(decision)
        if self.phase in ("ended", "route"):
            decision.brake_reason = ("waiting for the episode reset" if self.phase == "ended"
                                     else "waiting for the route after the reset")
            return decision
        try:
            frame = to_gray84(image, encoding)
        except ValueError as exc:  # UnsupportedEncoding, InvalidImage
            decision.brake_reason = f"bad camera frame: {exc}"
            return decision
        if self.route is None:
            decision.brake_reason = "no valid route"
            return decision
        starting = self.phase == "start"
        if starting:
            self.encoder.reset()
        try:
            kinematics = self.encoder.encode(self.route, state.x, state.y, state.yaw, state.forward_speed)
        except ValueError as exc:
            decision.brake_reason = f"cannot compute kinematics: {exc}"
            return decision
        # Finite odometry and route can still give non-finite or absurd kinematics (a pose beyond
        # float32's range, a route 100 km away; found by fuzzing): the trainer would drop such a
        # transition, and the actor must not act that far outside its training distribution.
        if not (np.isfinite(kinematics).all() and np.abs(kinematics).max() <= MAX_ABS_KINEMATICS):
            decision.brake_reason = (f"kinematics out of range (|value| > {MAX_ABS_KINEMATICS:g} or not "
                                     f"finite): speed {kinematics[0]:.6g} m/s, next waypoint "
                                     f"{kinematics[1]:.6g} m away")
            return decision
        if not self.episodic:
            return self._deploy(decision, stamp_ns, frame, kinematics, state)
        if starting:
            frames = self._start(decision, stamp_ns, frame, kinematics)
        else:
            frames = self.stack.push(frame)
            result = self.tracker.step(**self._judge_inputs(state, self._take_events(stamp_ns)),
                                       route_finished=self.encoder.route_finished)
            record = self._record(KIND_STEP, frame, kinematics, self._last_action, result)
            decision.reward, decision.episode_return = result.reward, result.episode_return
            held = _HeldStep(record, stamp_ns, self._frame_stamp)
            self._frame_stamp = stamp_ns
            if result.done:
                decision.transitions.append(record)
                self._end(decision, result)
                return decision
            self._held = held
        return self._act(decision, frames, kinematics)

    # --- the parts of a frame ---------------------------------------------------------------------
    def _start(self, decision: FrameDecision, stamp_ns: int, frame, kinematics) -> np.ndarray:
        self.episode += 1
        self.tracker.reset()
        self._last_action = None
        # Events up to the start frame belong to the episode before (or to the reset).
        self._events = [(k, s) for k, s in self._events if s == 0 or s > stamp_ns + STAMP_TOLERANCE_NS]
        self._frame_stamp = stamp_ns
        self._route_since_end = False
        if self.limiter is not None:
            self.limiter.start_episode()
        decision.transitions.append(self._record(KIND_START, frame, kinematics, None, None))
        self.phase = "run"
        return self.stack.reset(frame)

    def _act(self, decision: FrameDecision, frames, kinematics) -> FrameDecision:
        policy = self.policy.policy  # read once: the limit and the action come from one set of weights
        if self.limiter is not None and policy is not None and policy is not self._limit_source:
            self.limiter.follow(policy.action_limit)  # the trainer's decision travels with the weights
        self._limit_source = policy
        action, version = None, 0
        if policy is not None:
            start = time.perf_counter()
            action, version = self.policy.act(frames, kinematics, policy)
            decision.inference_ms = (time.perf_counter() - start) * 1e3
            decision.policy_version = version
            if not np.isfinite(action).all():
                action = None
        if self.explorer is None:
            if action is None:
                self._last_action = None
                decision.brake_reason = (
                    "the actor produced a non-finite action" if policy is not None
                    else f"{self.mode} mode without valid weights: {self.no_weights_reason}")
                return decision
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
        else:  # explores uniformly before weights and instead of a non-finite output
            action = self.explorer.action(action, self.env_steps)
            self.env_steps += 1
        self._last_action, self._last_version = action, version
        decision.action, decision.command = action, action_to_control(action)
        return decision

    def _deploy(self, decision: FrameDecision, stamp_ns: int, frame, kinematics, state) -> FrameDecision:
        frames = self.stack.reset(frame) if self.phase == "start" else self.stack.push(frame)
        if self.phase == "start":
            self.tracker.reset()
            self.phase = "run"
        else:  # the reward for the plot only: deploy episodes never end
            decision.reward = self.tracker.reward_function(
                **self._judge_inputs(state, self._take_events(stamp_ns))).total
            self.tracker.episode_return += decision.reward
            self.tracker.steps += 1
        decision.episode_return = self.tracker.episode_return
        return self._act(decision, frames, kinematics)

    def _end(self, decision: FrameDecision, result: StepResult) -> None:
        self.phase = "ended"
        self._route_since_end = False
        decision.episode_end = result.reason.value if result.reason is not None else "ended"
        decision.ended_steps = result.steps
        decision.request_reset = True
        decision.brake_reason = f"episode ended: {decision.episode_end}"
        decision.command, decision.action = BRAKE, None
        if self.limiter is not None:
            self.limiter.record_episode(result.steps)

    def _settle(self, decision: FrameDecision) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        late = self._take_events(held.stamp_ns, after=held.previous_stamp_ns)
        result = self.tracker.amend(collision=late["collision"] > 0, lane_invasions=late["lane_invasion"])
        record = held.record
        if result is not None:
            record.reward, record.terminated = result.reward, result.terminated
            record.truncated = result.truncated
        decision.transitions.append(record)
        if result is not None and result.done:
            decision.reward, decision.episode_return = result.reward, result.episode_return
            self._end(decision, result)

    def _restart(self) -> list[TransitionRecord]:
        settled = self.settle()
        if self.phase == "run" or settled.episode_end:  # a new episode follows, no reset needed
            self.phase = "start"
        return settled.transitions

    def _take_events(self, stamp_ns: int, after: int | None = None) -> dict[str, int]:
        """Count and remove the events of the step ending at `stamp_ns` (unstamped ones too,
        unless `after` is given: then only stamped events in (after, stamp_ns] count, the late
        ones of a held step). Events older than `after` can no longer be charged: dropped."""
        counts = dict.fromkeys(EVENT_KINDS, 0)
        keep = []
        limit = stamp_ns + STAMP_TOLERANCE_NS
        floor = None if after is None else after + STAMP_TOLERANCE_NS
        for kind, stamp in self._events:
            unstamped_now = stamp == 0 and after is None
            if unstamped_now or 0 < stamp <= limit and (floor is None or stamp > floor):
                counts[kind] += 1
            elif floor is not None and 0 < stamp <= floor:
                self.late_events += 1
            else:
                keep.append((kind, stamp))
        self._events = keep
        return counts

    def _judge_inputs(self, state: VehicleState, events: dict[str, int]) -> dict:
        position = self.encoder.position
        return dict(speed=state.forward_speed, lateral_offset=position.lateral_offset,
                    heading_error=position.heading_error, collision=events["collision"] > 0,
                    lane_invasions=events["lane_invasion"])

    def _record(self, kind, frame, kinematics, action, result: StepResult | None) -> TransitionRecord:
        record = TransitionRecord(
            actor_id=self.actor_id,
            seq=self.seq,
            episode=self.episode,
            step=self.tracker.steps,
            policy_version=self._last_version if kind == KIND_STEP else self.policy.version,
            kind=kind,
            frame_height=int(frame.shape[0]),
            frame_width=int(frame.shape[1]),
            frame=np.ascontiguousarray(frame, dtype=np.uint8),
            kinematics=np.asarray(kinematics, dtype=np.float32).reshape(-1),
            action=np.zeros(2, np.float32) if action is None else np.asarray(action, np.float32),
            reward=0.0 if result is None else float(result.reward),
            terminated=bool(result is not None and result.terminated),
            truncated=bool(result is not None and result.truncated),
        )
        self.seq += 1
        return record
