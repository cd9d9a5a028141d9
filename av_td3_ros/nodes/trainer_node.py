"""trainer_node: learns from the transitions of any number of policy nodes and publishes weights.

A thin rclpy shell around `av_td3_ros.learning.training_service.TrainingService`:
- subscribes `transitions_topic` (RELIABLE KEEP_LAST 1000); the callback only converts the message
  and offers it to the service's bounded, validating ingest queue — never an update in a callback;
- the service's learner thread fills the replay buffer, runs TD3 updates, and calls back here to
  publish PolicyWeights (RELIABLE TRANSIENT_LOCAL depth 1: a policy node that starts late gets
  the latest) every `publish_every` updates;
- after every update the learner thread publishes the session's update count (std_msgs/UInt64 on
  `update_count_topic`, RELIABLE TRANSIENT_LOCAL depth 1): sim_node's hold_update_ratio waits on it;
- timers publish av_td3_msgs/TrainingStatus (no header: rqt_plot plots it against wall time) and
  /diagnostics (WARN when the per-sample CNN L2 > td3.l2_warning = 50, ERROR > td3.l2_failure = 100,
  and on lost transitions, a full queue, learner errors or a failed learner);
- SIGINT/SIGTERM: spinning stops, the learner stops after its current update and a final
  checkpoint is written; with `resume: true` the next start continues from it and the weights
  version keeps counting up (also after a SIGKILL: from the last periodic checkpoint).

    trainer_node --ros-args --params-file config/trainer.yaml [-p key:=value ...]

Exit codes: 0 after a clean shutdown, 1 when the learner failed or a checkpoint cannot be resumed,
2 for an invalid parameter.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import rclpy
from av_td3_msgs.msg import PolicyWeights, TrainingStatus, Transition
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import UInt64

from av_td3_ros.learning.checkpoint import CheckpointError
from av_td3_ros.learning.td3 import ArchitectureMismatch
from av_td3_ros.learning.training_service import (
    STATUS_FIELDS,
    PolicyUpdate,
    TrainingService,
    TrainingServiceConfig,
    TrainingSnapshot,
)
from av_td3_ros.ros.conversions import policy_weights_to_message, transition_from_message
from av_td3_ros.ros.log import forward_python_logging
from av_td3_ros.ros.parameters import TRAINER_NODE_PARAMETERS, InvalidParameter, declare_parameters
from av_td3_ros.ros.qos import DIAGNOSTICS_QOS, STATUS_QOS, TRANSITIONS_QOS, UPDATE_COUNT_QOS, WEIGHTS_QOS

NODE_NAME = "trainer_node"
HARDWARE_ID = "av_td3_trainer"
EXIT_OK, EXIT_LEARNER_FAILED, EXIT_BAD_PARAMETER = 0, 1, 2


def status_message(snapshot: TrainingSnapshot) -> TrainingStatus:
    msg = TrainingStatus()
    for name in STATUS_FIELDS:
        setattr(msg, name, getattr(snapshot, name))
    return msg


def diagnostic_status(snapshot: TrainingSnapshot, l2_warning: float, l2_failure: float, lost_recently: int,
                      name: str) -> DiagnosticStatus:
    """OK / WARN / ERROR with the reasons in `message` and every number in `values`."""
    errors, warnings = [], []
    if snapshot.state == "failed":
        errors.append(f"learner failed: {snapshot.last_error}")
    if snapshot.cnn_l2 > l2_failure:
        errors.append(f"CNN feature L2 per sample {snapshot.cnn_l2:.1f} > {l2_failure:g}")
    elif snapshot.cnn_l2 > l2_warning:
        warnings.append(f"CNN feature L2 per sample {snapshot.cnn_l2:.1f} > {l2_warning:g}")
    if lost_recently:
        warnings.append(f"{lost_recently} transitions lost since the last report")
    ingest = snapshot.ingest
    if ingest.queue_depth >= 0.9 * ingest.queue_capacity:
        warnings.append(f"ingest queue {ingest.queue_depth}/{ingest.queue_capacity}: learner falls behind")
    if snapshot.learner_errors and snapshot.state != "failed":
        warnings.append(f"{snapshot.learner_errors} learner errors, last: {snapshot.last_error}")
    if errors:
        level, message = DiagnosticStatus.ERROR, "; ".join(errors + warnings)
    elif warnings:
        level, message = DiagnosticStatus.WARN, "; ".join(warnings)
    else:
        level, message = DiagnosticStatus.OK, f"{snapshot.state}: {snapshot.updates} updates, " \
                                              f"version {snapshot.policy_version}"
    values = {f: getattr(snapshot, f) for f in STATUS_FIELDS}
    values.update(
        state=snapshot.state, cnn_l2=snapshot.cnn_l2, checkpoints=snapshot.checkpoints,
        last_checkpoint_update=snapshot.last_checkpoint_update,
        last_checkpoint_seconds=round(snapshot.last_checkpoint_seconds, 3), rollbacks=snapshot.rollbacks,
        learner_errors=snapshot.learner_errors, policy_lag_max=snapshot.policy_lag_max,
        transitions_accepted=ingest.accepted, seq_gaps=ingest.gaps, out_of_order=ingest.out_of_order,
        actor_restarts=ingest.restarts, queue_depth=ingest.queue_depth, queue_capacity=ingest.queue_capacity,
        queue_high_water=ingest.queue_high_water, actors=ingest.actors,
        session_updates=snapshot.session_updates, session_transitions=snapshot.session_transitions,
        effective_update_to_data_ratio=snapshot.effective_update_to_data_ratio,
    )
    values.update({f"dropped.{reason}": count for reason, count in sorted(ingest.dropped_by_reason.items())})
    return DiagnosticStatus(
        level=level, name=name, message=message[:1000], hardware_id=HARDWARE_ID,
        values=[KeyValue(key=str(k), value=f"{v:.6g}" if isinstance(v, float) else str(v))
                for k, v in values.items()],
    )


class TrainerNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.params = p = declare_parameters(self, TRAINER_NODE_PARAMETERS)  # raises InvalidParameter
        self._log_handler = forward_python_logging(self.get_logger())  # the core's logging -> rosout
        if p.torch_threads > 0:
            import torch

            torch.set_num_threads(p.torch_threads)
        try:
            config = TrainingServiceConfig.from_namespace(p)
        except ValueError as exc:  # cross-field checks of TD3Config (e.g. l2_warning > l2_failure)
            raise InvalidParameter("td3", "(several)", str(exc)) from None
        self.l2_warning, self.l2_failure = config.td3.l2_warning, config.td3.l2_failure

        self.signing_key = None  # the key itself never reaches a log line: only its id
        if p.signing_key:
            from av_td3_ros.learning.signing import KeyFileError, load_signing_key

            try:
                self.signing_key = load_signing_key(p.signing_key)
            except KeyFileError as exc:
                raise InvalidParameter("signing_key", p.signing_key, str(exc)) from None
        self.weights_pub = self.create_publisher(PolicyWeights, p.weights_topic, WEIGHTS_QOS)
        self.status_pub = self.create_publisher(TrainingStatus, p.status_topic, STATUS_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, p.diagnostics_topic, DIAGNOSTICS_QOS)
        self.update_count_pub = self.create_publisher(UInt64, p.update_count_topic, UPDATE_COUNT_QOS)
        self.service = TrainingService(config, on_weights=self._publish_weights,
                                       on_update=self._publish_update_count)
        self.service.restore()  # resume (when on and a checkpoint exists); raises if unreadable
        self._diag_name = f"{self.get_name()}: training"
        self._lost_reported = self.service.ingest.stats().lost
        self._closed = False
        self.subscription = self.create_subscription(Transition, p.transitions_topic, self._on_transition,
                                                     TRANSITIONS_QOS)
        self.create_timer(p.status_period, self._publish_status)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self.service.start()
        checkpoints = f"in {self.service.checkpoint_dir}" if self.service.checkpoint_dir else "off"
        if self.service.resumed_from is not None:
            checkpoints += f" (resumed at update {self.service.resumed_from})"
        self.get_logger().info(
            f"learning from {p.transitions_topic}; weights on {p.weights_topic} every {p.publish_every} "
            f"updates (version now {self.service.version}); learning_starts {p.learning_starts}, "
            f"update_to_data_ratio {p.update_to_data_ratio}, batch {p.td3.batch_size}, CNN passes in "
            f"{str(self.service.learner.cnn_dtype).removeprefix('torch.')} on {self.service.learner.device}; "
            f"checkpoints {checkpoints}")
        if self.signing_key is None:
            self.get_logger().warning("signing_key is empty: weights are published unsigned (policy nodes "
                                      "with weights_trust signed, the deploy default, refuse them)")
        else:
            self.get_logger().info(f"weights are signed with key {self.signing_key.key_id}")

    # --- subscription (executor thread): convert + offer, nothing else ---------------------------
    def _on_transition(self, msg: Transition) -> None:
        try:
            record = transition_from_message(msg)
        except Exception as exc:  # noqa: BLE001 - a malformed message must never kill the callback
            self.get_logger().error(f"unreadable transition dropped: {exc}", throttle_duration_sec=5.0)
            return
        reason = self.service.offer(record)
        if reason is not None:
            self.get_logger().warning(f"transition from {msg.actor_id!r} seq {msg.seq} dropped: {reason}",
                                      throttle_duration_sec=5.0)

    # --- learner thread callback -----------------------------------------------------------------
    def _publish_weights(self, update: PolicyUpdate) -> None:
        started = time.perf_counter()
        msg = policy_weights_to_message(update.state_dict, update.version, action_limit=update.action_limit,
                                        updates=update.updates, stamp=self.get_clock().now().to_msg(),
                                        cnn_norm=update.cnn_norm, max_action=update.max_action,
                                        signing_key=self.signing_key)
        self.weights_pub.publish(msg)
        self.get_logger().info(
            f"published policy version {update.version} (update {update.updates}, "
            f"{len(msg.payload) / 1e6:.1f} MB, action_limit {update.action_limit:g}) "
            f"in {1000 * (time.perf_counter() - started):.0f} ms")

    def _publish_update_count(self, session_updates: int) -> None:
        self.update_count_pub.publish(UInt64(data=session_updates))

    # --- timers ----------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        snapshot = self.service.snapshot()
        self.status_pub.publish(status_message(snapshot))

    def _publish_diagnostics(self) -> None:
        snapshot = self.service.snapshot()
        lost_recently = snapshot.ingest.lost - self._lost_reported
        self._lost_reported = snapshot.ingest.lost
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [diagnostic_status(snapshot, self.l2_warning, self.l2_failure, lost_recently,
                                          self._diag_name)]
        self.diagnostics_pub.publish(array)

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the learner and write the final checkpoint (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.destroy_subscription(self.subscription)
        self.service.stop(checkpoint=True)
        snapshot = self.service.snapshot()
        self.get_logger().info(
            f"stopped at update {snapshot.updates}, policy version {snapshot.policy_version}; "
            f"received {snapshot.transitions_received}, dropped {snapshot.transitions_dropped}, "
            f"lost {snapshot.transitions_lost}; checkpoints written {snapshot.checkpoints}")
        logging.getLogger("av_td3_ros").removeHandler(self._log_handler)


def main(args: list[str] | None = None) -> None:
    # Our own SIGINT/SIGTERM handlers (not rclpy's, which invalidate the context at once): spinning
    # stops, then the final checkpoint is written and logged while the node is still whole.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = None
    code = EXIT_OK
    try:
        node = TrainerNode()
        if node.params.executor == "events":
            from rclpy.experimental import EventsExecutor

            executor = EventsExecutor()
        else:
            executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok() and not node.service.failed:
            executor.spin_once(timeout_sec=0.1)
        if node.service.failed:
            node._publish_status()  # the last word: state failed, for rqt / the supervisor
            node._publish_diagnostics()
            node.get_logger().fatal(f"learner failed: {node.service.snapshot().last_error}; exiting")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InvalidParameter as exc:
        print(f"trainer_node: {exc}", file=sys.stderr, flush=True)
        code = EXIT_BAD_PARAMETER
    except (CheckpointError, ArchitectureMismatch) as exc:
        print(f"trainer_node: cannot resume: {exc}", file=sys.stderr, flush=True)
        code = EXIT_LEARNER_FAILED
    finally:
        if node is not None:
            if node.service.failed:
                code = EXIT_LEARNER_FAILED
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
