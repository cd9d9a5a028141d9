"""DemoMonitor: watches a running system from the outside, over the same topics rqt would use.

- /av_td3/transitions -> the episodes every policy node drives (return, length, mean speed), so
  the learning curve is measured from what the trainer really received;
- /av_td3/training_status -> updates, updates/s, per-sample CNN L2, policy version, limiter;
- /av_td3/policy_weights -> the newest weights, validated like a policy node does, then written
  atomically to `weights_path` (the run's final weights when the demo stops);
- /av_td3/update_count -> the trainer's updates after every one, for the effective update-to-data
  ratio (updates / env steps after learning_starts) next to the env steps counted here;
- the moment the action limit lifted (TrainingStatus.action_limit_active turning off): wall time,
  env steps and updates.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from av_td3_msgs.msg import PolicyWeights, TrainingStatus, Transition
from rclpy.node import Node
from std_msgs.msg import UInt64

from av_td3_ros.atomic_file import write_atomic
from av_td3_ros.driving.runtime import WeightsRejected
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import policy_weights_from_message

__all__ = ["DemoMonitor", "EpisodeRecord", "LimiterLift", "StatusSample"]

STATUS_KEYS = (
    "updates",
    "policy_version",
    "replay_size",
    "transitions_received",
    "transitions_lost",
    "updates_per_second",
    "actor_cnn_l2",
    "critic_cnn_l2",
    "grad_norm_actor",
    "grad_norm_critic",
    "saturated_action_share",
    "action_limit_active",
    "action_limit",
)


@dataclass(frozen=True)
class EpisodeRecord:
    env_steps: int  # environment steps received in total when this episode ended
    wall_s: float
    ret: float
    length: int
    mean_speed: float
    terminated: bool
    policy_version: int


@dataclass(frozen=True)
class LimiterLift:
    """When the trainer's first status without an active action limit arrived."""

    wall_s: float
    env_steps: int
    updates: int


@dataclass(frozen=True)
class StatusSample:
    wall_s: float
    values: dict


class DemoMonitor(Node):
    def __init__(
        self,
        weights_path: Path,
        reference_state_dict,
        max_weights_bytes: int,
        transitions_topic: str = "/av_td3/transitions",
        status_topic: str = "/av_td3/training_status",
        weights_topic: str = "/av_td3/policy_weights",
        update_count_topic: str = "/av_td3/update_count",
    ):
        super().__init__("demo_monitor")
        self.weights_path = Path(weights_path)
        self._reference = reference_state_dict
        self._max_bytes = max_weights_bytes
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._open: dict[str, list] = {}  # actor -> [return, length, speed sum]
        self.env_steps = 0
        self.episodes: list[EpisodeRecord] = []
        self.status: list[StatusSample] = []
        self.weights_version = 0
        self.weights_rejected: list[str] = []
        self.updates = 0  # the trainer's, from update_count_topic
        self.limiter_lift: LimiterLift | None = None
        self._limit_was_active = False
        self.create_subscription(UInt64, update_count_topic, self._on_update_count, qos.UPDATE_COUNT_QOS)
        self.create_subscription(Transition, transitions_topic, self._on_transition, qos.TRANSITIONS_QOS)
        self.create_subscription(TrainingStatus, status_topic, self._on_status, qos.STATUS_QOS)
        self.create_subscription(PolicyWeights, weights_topic, self._on_weights, qos.WEIGHTS_QOS)

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _on_transition(self, msg: Transition) -> None:
        with self._lock:
            if msg.kind == Transition.KIND_START:
                self._open[msg.actor_id] = [0.0, 0, 0.0]
                return
            episode = self._open.get(msg.actor_id)
            self.env_steps += 1
            if episode is None:
                return  # joined mid-episode
            episode[0] += float(msg.reward)
            episode[1] += 1
            episode[2] += float(msg.kinematics[0]) if len(msg.kinematics) else 0.0  # speed
            if msg.terminated or msg.truncated:
                ret, length, speed_sum = self._open.pop(msg.actor_id)
                self.episodes.append(
                    EpisodeRecord(
                        self.env_steps,
                        self._now(),
                        ret,
                        length,
                        speed_sum / max(length, 1),
                        bool(msg.terminated),
                        int(msg.policy_version),
                    )
                )

    def _on_update_count(self, msg: UInt64) -> None:
        with self._lock:
            self.updates = int(msg.data)

    def _on_status(self, msg: TrainingStatus) -> None:
        values = {key: float(getattr(msg, key)) for key in STATUS_KEYS}
        with self._lock:
            self.status.append(StatusSample(self._now(), values))
            if msg.action_limit_active:
                self._limit_was_active = True
            elif self._limit_was_active and self.limiter_lift is None:
                self.limiter_lift = LimiterLift(self._now(), self.env_steps, int(msg.updates))

    def learning_progress(self) -> tuple[int, int, LimiterLift | None]:
        """(env steps, trainer updates, when the action limit lifted or None)."""
        with self._lock:
            # The count topic is fresh after every update; the 1 Hz status stands in until it arrives.
            status_updates = int(self.status[-1].values["updates"]) if self.status else 0
            return self.env_steps, self.updates or status_updates, self.limiter_lift

    def _on_weights(self, msg: PolicyWeights) -> None:
        try:  # the trainer is ours, but a file we hand the user must be one a policy node accepts
            policy_weights_from_message(msg, self._reference, self._max_bytes)
        except WeightsRejected as exc:
            with self._lock:
                self.weights_rejected.append(f"version {msg.version}: {exc}")
            return
        if msg.version <= self.weights_version:
            return
        write_atomic(self.weights_path, bytes(msg.payload))
        with self._lock:
            self.weights_version = int(msg.version)

    def snapshot(self) -> tuple[int, list[EpisodeRecord], StatusSample | None, int]:
        with self._lock:
            return (
                self.env_steps,
                list(self.episodes),
                (self.status[-1] if self.status else None),
                self.weights_version,
            )
