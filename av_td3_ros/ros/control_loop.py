"""ControlLoop: what a policy node does with one new camera frame, as plain numpy (no rclpy).

One call of `on_frame()` per NEW frame returns exactly one control command, plus (train mode) the
Transition records to publish. The episode logic of av_td3_msgs/Transition lives here:

    frame 0 of an episode  -> START(frame, kinematics)            ; act
    frame t > 0            -> STEP(a_{t-1}, r_t, term, trunc, frame_t) ; act, or brake if it ended
    episode ended          -> brake on every frame while the reset runs; the first frame after
                              `reset_done()` is the next episode's START (frame stack reset).

Actions: train mode = actor + Gaussian exploration noise (uniform random until the first
weights), then the ActionLimiter; deploy mode = the deterministic actor, no noise, no limiter,
and a brake (with the reason) while there are no valid weights.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from av_td3_ros.learning.ingest import KIND_START, KIND_STEP, TransitionRecord
from av_td3_ros.ros.conversions import BRAKE, ControlCommand, action_to_control

__all__ = ["ControlLoop", "EpisodeOutcome", "StampGate", "StepOutput"]


class StampGate:
    """Answers each frame stamp once: `admit(stamp_ns)` is True the first time a stamp is seen
    (among the last `memory` stamps), False for a repeat."""

    def __init__(self, memory: int = 256):
        self._order: deque[int] = deque()
        self._seen: set[int] = set()
        self._memory = memory

    def admit(self, stamp_ns: int) -> bool:
        if stamp_ns in self._seen:
            return False
        self._seen.add(stamp_ns)
        self._order.append(stamp_ns)
        if len(self._order) > self._memory:
            self._seen.discard(self._order.popleft())
        return True

    def clear(self) -> None:
        """Forget every stamp (a new stamp sequence begins, e.g. a restarted simulator)."""
        self._order.clear()
        self._seen.clear()


@dataclass(frozen=True)
class EpisodeOutcome:
    """What the episode judge says about the step that led to the current observation."""

    reward: float
    terminated: bool = False
    truncated: bool = False
    reason: str = ""


@dataclass
class StepOutput:
    command: ControlCommand
    action: np.ndarray | None = None  # the action sent (after noise and limiter); None = brake
    transitions: list[TransitionRecord] = field(default_factory=list)
    reward: float | None = None
    episode_return: float = 0.0
    episode_end: str = ""  # non-empty: the episode ended on this frame (the reason)
    request_reset: bool = False  # the node should now request a reset (async)
    brake_reason: str = ""  # why the command is a brake (logged throttled by the node)
    inference_ms: float | None = None
    policy_version: int = 0


class ControlLoop:
    """Per-frame decisions of one policy node.

    runtime: a PolicyRuntime (act(frames, kinematics) -> (action, version); `.policy`).
    stack: an object with reset(frame) -> (4, 84, 84) and push(frame) -> (4, 84, 84).
    limiter: an ActionLimiter (train mode) or None.
    """

    def __init__(
        self,
        *,
        mode: str,
        runtime,
        stack,
        actor_id: str,
        limiter=None,
        exploration_noise: float = 0.1,
        seed: int | None = None,
    ):
        if mode not in ("train", "deploy"):
            raise ValueError(f"mode must be 'train' or 'deploy', got {mode!r}")
        self.mode = mode
        self.runtime = runtime
        self.stack = stack
        self.limiter = limiter if mode == "train" else None
        self.actor_id = actor_id
        self.exploration_noise = float(exploration_noise)
        self.rng = np.random.default_rng(seed)
        self.seq = 0
        self.episode = 0
        self.step = 0
        self.episode_return = 0.0
        self.phase = "start"  # "start": next frame starts an episode; "run"; "reset": waiting
        self._last_action: np.ndarray | None = None
        self._last_version = 0
        self._limit_source = None
        self.no_weights_reason = "no policy weights received yet"

    # --- episode control from the node --------------------------------------------------------
    def reset_done(self) -> None:
        """The reset finished (or none is available): the next frame starts a new episode."""
        self.phase = "start"

    def restart_episode(self) -> None:
        """Drop the running episode (e.g. a new route arrived); the next frame is a START."""
        if self.phase == "run":
            self.phase = "start"

    @property
    def resetting(self) -> bool:
        return self.phase == "reset"

    # --- one frame ----------------------------------------------------------------------------
    def on_frame(self, frame: np.ndarray, kinematics: np.ndarray, judge=None) -> StepOutput:
        """frame: (84, 84) uint8; kinematics: (23,) float32 finite.
        judge: callable(action_taken) -> EpisodeOutcome for the step that led here (train mode:
        required from the second frame of an episode on; deploy: optional, for the reward plot)."""
        if self.phase == "reset":
            return StepOutput(
                BRAKE, brake_reason="waiting for the episode reset", episode_return=self.episode_return
            )
        if self.mode == "deploy":
            return self._deploy(frame, kinematics, judge)
        out_transitions: list[TransitionRecord] = []
        reward = None
        if self.phase == "start":
            frames = self.stack.reset(frame)
            self.episode += 1
            self.step = 0
            self.episode_return = 0.0
            if self.limiter is not None:
                self.limiter.start_episode()
            out_transitions.append(self._record(KIND_START, frame, kinematics, None, 0.0, False, False))
            self.phase = "run"
        else:
            frames = self.stack.push(frame)
            self.step += 1
            outcome = judge(self._last_action) if judge is not None else EpisodeOutcome(0.0)
            reward = float(outcome.reward)
            self.episode_return += reward
            ended = outcome.terminated or outcome.truncated
            out_transitions.append(
                self._record(
                    KIND_STEP,
                    frame,
                    kinematics,
                    self._last_action,
                    reward,
                    outcome.terminated,
                    outcome.truncated,
                )
            )
            if ended:
                self.phase = "reset"
                if self.limiter is not None:
                    self.limiter.record_episode(self.step)
                return StepOutput(
                    BRAKE,
                    transitions=out_transitions,
                    reward=reward,
                    episode_return=self.episode_return,
                    episode_end=outcome.reason or "ended",
                    request_reset=True,
                    brake_reason=f"episode ended: {outcome.reason}",
                )
        action, version, inference_ms = self._train_action(frames, kinematics)
        self._last_action = action
        self._last_version = version
        return StepOutput(
            action_to_control(action),
            action=action,
            transitions=out_transitions,
            reward=reward,
            episode_return=self.episode_return,
            inference_ms=inference_ms,
            policy_version=version,
        )

    def _deploy(self, frame, kinematics, judge) -> StepOutput:
        frames = self.stack.reset(frame) if self.phase == "start" else self.stack.push(frame)
        self.phase = "run"
        reward = None
        if judge is not None:
            reward = float(judge(self._last_action).reward)
            self.episode_return += reward
        policy = self.runtime.policy
        if policy is None:
            self._last_action = None
            return StepOutput(
                BRAKE,
                reward=reward,
                episode_return=self.episode_return,
                brake_reason=f"deploy mode without valid weights: {self.no_weights_reason}",
            )
        start = time.perf_counter()
        action, version = self.runtime.act(frames, kinematics, policy)
        inference_ms = (time.perf_counter() - start) * 1e3
        if not np.isfinite(action).all():
            self._last_action = None
            return StepOutput(
                BRAKE,
                reward=reward,
                episode_return=self.episode_return,
                brake_reason="the actor produced a non-finite action",
                policy_version=version,
            )
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        self._last_action = action
        return StepOutput(
            action_to_control(action),
            action=action,
            reward=reward,
            episode_return=self.episode_return,
            inference_ms=inference_ms,
            policy_version=version,
        )

    def _train_action(self, frames, kinematics) -> tuple[np.ndarray, int, float | None]:
        inference_ms = None
        policy = self.runtime.policy  # read once: limit and action come from the same weights
        if policy is not self._limit_source and self.limiter is not None and policy is not None:
            self.limiter.follow(policy.action_limit)  # the trainer's decision travels with the weights
        self._limit_source = policy
        if policy is None:
            action = self.rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
            version = 0
        else:
            start = time.perf_counter()
            action, version = self.runtime.act(frames, kinematics, policy)
            inference_ms = (time.perf_counter() - start) * 1e3
            if not np.isfinite(action).all():  # never explore from NaN: fall back to random
                action = self.rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
            elif self.exploration_noise > 0:
                action = action + self.rng.normal(0.0, self.exploration_noise, size=2)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        if self.limiter is not None:
            action = np.asarray(self.limiter.apply(action), dtype=np.float32)
        return action, version, inference_ms

    def _record(self, kind, frame, kinematics, action, reward, terminated, truncated) -> TransitionRecord:
        record = TransitionRecord(
            actor_id=self.actor_id,
            seq=self.seq,
            episode=self.episode,
            step=self.step,
            policy_version=self._last_version if kind == KIND_STEP else self.runtime.version,
            kind=kind,
            frame_height=int(frame.shape[0]),
            frame_width=int(frame.shape[1]),
            frame=np.ascontiguousarray(frame, dtype=np.uint8),
            kinematics=np.asarray(kinematics, dtype=np.float32).reshape(-1),
            action=np.zeros(2, np.float32) if action is None else np.asarray(action, np.float32),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
        )
        self.seq += 1
        return record
