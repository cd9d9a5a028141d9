"""policy_node: drives one car from its camera with the TD3 actor (a lifecycle node).

Thin shell: messages -> numpy (av_td3_ros.ros.conversions), one frame -> one command and the
episode (av_td3_ros.driving.DrivingCore, the object the evaluation drives too), weights
(PolicyRuntime), the command out through the output adapter chosen by `output`
(av_td3_ros.ros.outputs). Parameters: av_td3_ros.ros.parameters.POLICY_NODE_PARAMETERS,
documented in config/policy.yaml.

Threads: one MultiThreadedExecutor with two callback groups. Everything that touches the
control state (inputs, watchdog, diagnostics, reset responses, lifecycle transitions) runs in
the node's default mutually exclusive group; weights updates are decoded, validated and built in
their own group, off the inference thread, in short steps that wait for the gaps between camera
frames (FrameWindows), and swapped in by one reference assignment.

Outputs: one command per NEW camera frame (stamped with the frame's stamp);
while camera or odometry are stale the wall-clock watchdog publishes full brakes at
control_rate (header stamp = now). rqt: Float32 under ~/ (steer, throttle, brake, reward,
episode_return, inference_latency_ms, policy_version) and /diagnostics.
"""

from __future__ import annotations

import functools
import math
import sys
import time
import traceback

import cv2
import rclpy
from av_td3_msgs.msg import PolicyWeights, Transition
from carla_msgs.msg import CarlaCollisionEvent, CarlaLaneInvasionEvent
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry, Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Float32
from std_srvs.srv import Trigger

from av_td3_ros.driving.command import BRAKE, ControlCommand
from av_td3_ros.driving.core import STAMP_TOLERANCE_NS
from av_td3_ros.driving.frame_windows import FrameWindows
from av_td3_ros.driving.monitoring import LatencyStats, RateMeter, Watchdog
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import (
    ConversionError,
    image_to_array,
    odometry_to_state,
    path_to_route,
    policy_weights_payload,
    stamp_to_ns,
    transition_to_message,
)
from av_td3_ros.ros.log import Throttle, forward_python_logging
from av_td3_ros.ros.outputs import OUTPUTS
from av_td3_ros.ros.parameters import (
    POLICY_NODE_PARAMETERS,
    InvalidParameter,
    declare_parameters,
    with_choices,
)
from av_td3_ros.ros.spinning import spin_until_stopped, stop_event, stop_spinning

# The GIL handoff interval: a weights update decoding in the other executor thread holds the GIL
# for at most this long before the inference thread gets it (CPython's default is 5 ms).
GIL_SWITCH_INTERVAL = 0.001

NO_ODOMETRY_YET = "no odometry received yet"
NO_ROUTE_YET = "no route received yet"
SCALARS = ("steer", "throttle", "brake", "reward", "episode_return", "inference_latency_ms", "policy_version")


def guarded(name: str, brake: bool = True):
    """Wrap a callback: no exception ever escapes it. A failure is logged (throttled) and, if
    `brake`, answered with a full brake: for a camera frame not answered yet, with that frame's
    stamp (still one control per frame); otherwise stamped now."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args):
            try:
                return method(self, *args)
            except Exception as exc:  # noqa: BLE001 — this is the last line of defence
                tail = "".join(traceback.format_exception(exc)[-3:])
                action = "; braking" if brake else ""
                self._error(f"callback:{name}", f"{name} callback failed: {exc!r}{action}\n{tail}")
                if not brake:
                    return
                try:
                    stamp, self._unanswered = self._unanswered, None
                    if name != "camera" or stamp is not None:
                        self._publish_control(BRAKE, stamp)
                except Exception:  # noqa: BLE001
                    pass

        return wrapper

    return decorate


class PolicyNode(LifecycleNode):
    def __init__(self, node_name: str = "policy_node", *, outputs=None, **kwargs):
        """outputs: output adapters by name (default ros.outputs.OUTPUTS); `output` picks one."""
        super().__init__(node_name, **kwargs)
        self.outputs = dict(OUTPUTS if outputs is None else outputs)
        specs = with_choices(POLICY_NODE_PARAMETERS, "output", tuple(self.outputs))
        self.p = declare_parameters(self, specs)  # raises InvalidParameter
        self.actor_id = self.p.actor_id or self.get_fully_qualified_name()
        self._log_handler = forward_python_logging(self.get_logger())
        self._throttle = Throttle(2.0)
        self._wall = Clock(clock_type=ClockType.STEADY_TIME)  # watchdog runs on wall time
        self._weights_group = MutuallyExclusiveCallbackGroup()
        self.windows = FrameWindows()  # weights updates decode between frames, not during one
        self._active = False
        self._unanswered = None  # stamp of the camera frame being answered, until its control is out
        self._entities: list = []
        self.output = None
        self.runtime = None
        self.core = None

    # --- topic names ------------------------------------------------------------------------
    def _topic(self, name: str) -> str:
        return getattr(self.p, name).replace("{role_name}", self.p.role_name)

    # --- lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the model, load weights (file now, topic as it comes), create the ROS entities."""
        try:
            self._build()
        except Exception as exc:  # noqa: BLE001 — report and stay unconfigured
            self.get_logger().error(f"configure failed: {exc!r}")
            self._destroy_entities()
            return TransitionCallbackReturn.FAILURE
        p = self.p
        self.get_logger().info(
            f"configured: mode {p.mode}, actor {self.actor_id}, camera {self._topic('camera_topic')}, "
            f"output {p.output}, policy version {self.runtime.version}"
        )
        return TransitionCallbackReturn.SUCCESS

    def _build(self) -> None:
        from av_td3_ros.driving.core import DrivingCore
        from av_td3_ros.driving.runtime import PolicyRuntime
        from av_td3_ros.driving.stamp_gate import StampGate
        from av_td3_ros.learning.action_limiter import ActionLimiter
        from av_td3_ros.learning.exploration import NoiseSchedule
        from av_td3_ros.perception.reward import RewardConfig

        p = self.p
        cv2.setNumThreads(p.torch_threads)  # like torch: extra threads only add jitter next to other jobs
        # --- weights trust (issue 15): the logic is in runtime.py and learning/signing.py
        from av_td3_ros.driving.runtime import resolve_weights_trust
        from av_td3_ros.learning.signing import KeyFileError, load_trusted_keys

        trust, trusted, self.trusted_keys_error = resolve_weights_trust(p.weights_trust, p.mode), {}, ""
        if trust == "signed":
            try:
                trusted = load_trusted_keys(p.trusted_keys)
            except KeyFileError as exc:  # no key, no install: the node brakes (deploy) and says why
                self.trusted_keys_error = str(exc)
                self.get_logger().error(f"trusted_keys: {exc}; no weights will be installed")
        self.runtime = PolicyRuntime(p.encoder_norm, p.torch_threads, p.max_weights_bytes, trust, trusted)
        # --- end weights trust
        self.limiter = None
        if p.mode == "train":  # until the first weights bring the trainer's limit
            self.limiter = ActionLimiter()
            self.limiter.follow(p.initial_action_limit)
        self.core = DrivingCore(
            mode=p.mode, policy=self._inference(), reward=RewardConfig.from_namespace(p.reward),
            actor_id=self.actor_id, limiter=self.limiter,
            exploration=NoiseSchedule(p.exploration_schedule, p.exploration_noise, p.exploration_noise_final,
                                      p.exploration_decay_steps),
            seed=None if p.seed < 0 else p.seed, search_ahead=p.kinematics.search_ahead,
            finish_distance=p.kinematics.finish_distance)
        self.gate = StampGate()
        self.watchdog = Watchdog(p.sensor_timeout, ("camera", "odometry"))
        self.rates = {name: RateMeter() for name in ("camera", "odometry", "control")}
        self.compute_ms, self.inference_ms = LatencyStats(), LatencyStats()
        self.state, self.state_error = None, NO_ODOMETRY_YET  # latest valid VehicleState
        self.state_stamp_ns = -1  # header stamp of self.state
        self._held = None  # (Image, wall deadline): a frame waiting for the odometry of its stamp
        self._previous_frame_at = None  # wall arrival of the admitted frame before the newest one
        self._newest_frame_at = None
        self.route_error = NO_ROUTE_YET
        self.stale: dict = {}
        self.counters = dict.fromkeys(("frames", "repeated_stamps", "bad_frames", "braked_frames",
                                       "weights_accepted", "weights_rejected", "transitions",
                                       "frames_held", "route_waits_expired"), 0)
        self.last_rejection = ""
        self.reset_deadline = None
        self.reset_future = None  # the pending reset request; handled by _poll_reset()
        self.route_deadline = None  # while the core waits for the route after a reset
        self.settle_deadline = None  # while the core holds a step for its tick's late events
        self.warned_no_reset = False
        if p.weights_file:
            self._load_weights_file(p.weights_file)
        elif p.mode == "deploy" and not p.weights_topic:
            self.core.no_weights_reason = "neither weights_file nor weights_topic is set"
        self._create_entities()

    def _inference(self):
        """What the core's actor runs on: the PolicyRuntime (torch, hot-swapped weights), or in
        deploy mode an exported ONNX file on onnxruntime (no hot swap: the file is the policy)."""
        p = self.p
        if p.inference_backend == "torch":
            return self.runtime
        if p.mode != "deploy" or not p.onnx_file:
            raise ValueError("inference_backend onnx needs mode deploy and an onnx_file")
        from av_td3_ros.deploy.onnx_policy import OnnxPolicyRuntime

        onnx = OnnxPolicyRuntime(threads=p.torch_threads)
        onnx.load(p.onnx_file)  # raises WeightsRejected with the reason
        self.get_logger().info(f"running {p.onnx_file} on onnxruntime (version {onnx.version})")
        return onnx

    def _load_weights_file(self, path: str) -> None:
        from av_td3_ros.driving.runtime import WeightsRejected, load_weights_file

        try:
            policy = self.runtime.prepare(load_weights_file(path, self.runtime), f"file {path}")
            self.runtime.install(policy)
        except WeightsRejected as exc:
            self._reject(f"file {path}", str(exc))
            return
        self.counters["weights_accepted"] += 1
        self.get_logger().info(f"loaded weights version {policy.version} from {path}")

    def _create_entities(self) -> None:
        p, add = self.p, self._entities.append

        def subscribe(msg_type, topic_param, callback, profile, **kwargs):
            add(self.create_subscription(msg_type, self._topic(topic_param), callback, profile, **kwargs))

        self.output = self.outputs[p.output](self, self._topic)
        self._entities.extend(self.output.entities)
        self.scalar_pubs = {n: self.create_publisher(Float32, f"~/{n}", qos.SCALAR_QOS) for n in SCALARS}
        self._entities.extend(self.scalar_pubs.values())
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS_QOS)
        add(self.diag_pub)
        self.transition_pub = self.reset_client = None
        if p.mode == "train":
            self.transition_pub = self.create_publisher(
                Transition, self._topic("transitions_topic"), qos.TRANSITIONS_QOS)
            add(self.transition_pub)
            if p.reset_service:
                self.reset_client = self.create_client(Trigger, self._topic("reset_service"))
                add(self.reset_client)
        subscribe(Image, "camera_topic", self._on_camera, qos.CAMERA_QOS)
        subscribe(Odometry, "odometry_topic", self._on_odometry, qos.SENSOR_QOS)
        subscribe(Path, "route_topic", self._on_route, qos.ROUTE_QOS)
        subscribe(CarlaCollisionEvent, "collision_topic", functools.partial(self._on_event, "collision"),
                  qos.EVENT_QOS)
        subscribe(CarlaLaneInvasionEvent, "lane_invasion_topic",
                  functools.partial(self._on_event, "lane_invasion"), qos.EVENT_QOS)
        if p.weights_topic and p.inference_backend == "torch":  # decoded off the inference thread
            subscribe(PolicyWeights, "weights_topic", self._on_weights, qos.WEIGHTS_QOS,
                      callback_group=self._weights_group)
        add(self.create_timer(1.0 / p.control_rate, self._on_watchdog, clock=self._wall))
        add(self.create_timer(p.diagnostics_period, self._on_diagnostics, clock=self._wall))

    def _destroy_entities(self) -> None:
        destroyers = {"LifecyclePublisher": self.destroy_lifecycle_publisher,
                      "Publisher": self.destroy_publisher, "Subscription": self.destroy_subscription,
                      "Client": self.destroy_client, "Timer": self.destroy_timer}
        for entity in self._entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
            destroy = destroyers.get(type(entity).__name__)
            if destroy is not None:
                destroy(entity)
        self._entities.clear()
        self.output = None

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._active = True
        self.get_logger().info("active: publishing controls")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._publish_control(BRAKE, None)  # one brake while the publisher is still active
        self._active = False
        self.get_logger().info("inactive: published one brake, control output stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_entities()
        self.runtime = self.core = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self._publish_control(BRAKE, None)
            self._active = False
        self._destroy_entities()
        return super().on_shutdown(state)

    # --- inputs ---------------------------------------------------------------------------------
    @guarded("camera")
    def _on_camera(self, msg: Image) -> None:
        """One NEW frame -> exactly one control (stamped with the frame's stamp)."""
        start, now = time.perf_counter(), time.monotonic()
        self.watchdog.feed("camera", now)
        self.rates["camera"].tick(now)
        if not self._active:
            return
        self._poll_reset()
        if not self.gate.admit(stamp_to_ns(msg.header.stamp)):
            self.counters["repeated_stamps"] += 1
            return  # this frame was answered already: never twice for one stamp
        self.counters["frames"] += 1
        if self._held is not None:  # a newer frame: the held one is answered now, never skipped
            self._answer(self._held[0])
        self._previous_frame_at, self._newest_frame_at = self._newest_frame_at, now
        self._unanswered = msg.header.stamp
        # The bridge publishes a tick's camera frame before its odometry: answering at once would
        # pair this frame with the previous tick's pose. Hold it until its odometry arrives
        # (_on_odometry) or odometry_sync_timeout passes (_on_watchdog). "Its" odometry: a stamp
        # within STAMP_TOLERANCE_NS, since the bridge derives both stamps from float seconds.
        if (self.p.odometry_sync_timeout > 0
                and self.state_stamp_ns + STAMP_TOLERANCE_NS < stamp_to_ns(msg.header.stamp)):
            self._held = (msg, now + self.p.odometry_sync_timeout)
            self.counters["frames_held"] += 1
            return
        self._answer(msg, start)

    def _answer(self, msg: Image, start: float | None = None) -> None:
        """The one control of an admitted frame (unless a failure already braked for it)."""
        self._held = None
        if self._unanswered is not msg.header.stamp:
            return
        with self.windows.frame():  # a weights update in the other thread pauses meanwhile
            self._answer_now(msg, time.perf_counter() if start is None else start)

    def _answer_now(self, msg: Image, start: float) -> None:
        stamp = msg.header.stamp
        reason = self._missing_input(time.monotonic())
        if reason is None:
            try:
                image = image_to_array(msg)
            except ConversionError as exc:
                reason = f"bad camera frame: {exc}"
        if reason is not None:
            self._brake_frame(stamp, reason)
            return
        decision = self.core.on_frame(stamp_to_ns(stamp), image, msg.encoding, self.state)
        if decision.brake_reason.startswith("bad camera frame"):
            self.counters["bad_frames"] += 1
        self._publish_control(decision.command, stamp)
        self._report(decision, stamp)
        self.settle_deadline = time.monotonic() + self.p.event_grace if self.core.holding else None
        self.compute_ms.add((time.perf_counter() - start) * 1e3)

    def _missing_input(self, now: float) -> str | None:
        """Why this frame cannot be driven on (no fresh odometry, no route), or None.

        Odometry that came after the previous frame is as fresh as the world: under CARLA's
        synchronous mode a slow machine stretches a tick's wall time while the world waits, and
        the pose one tick old is what the bridge's own ordering can give when this tick's is late
        (found by CI: a 0.84 s tick on 2 loaded cores braked a frame as "stale odometry"). So a
        pose that arrived after the previous frame, within a frame interval of at most twice
        sensor_timeout, is not stale; longer gaps are outages. Arrival order, not stamps: it holds
        whatever clock each source stamps with. A dead odometry source still brakes within
        sensor_timeout plus one frame."""
        age = self.watchdog.age("odometry", now)
        previous = self._previous_frame_at
        kept_pace = (age is not None and previous is not None and now - age >= previous
                     and now - previous <= 2.0 * self.p.sensor_timeout)
        if self.state is None or age is None or (age > self.p.sensor_timeout and not kept_pace):
            return f"no valid odometry: {self.state_error if self.state is None else f'{age:.2f} s old'}"
        if self.core.route is None:
            return f"no valid route: {self.route_error}"
        return None

    def _brake_frame(self, stamp, reason: str) -> None:
        self.counters["braked_frames"] += 1
        if reason.startswith("bad camera frame"):
            self.counters["bad_frames"] += 1
        self._publish_control(BRAKE, stamp)
        # Before the first odometry or route the brake is start-up, not a fault: WARN. An
        # invalid input (or one gone stale) stays an ERROR.
        starting = NO_ODOMETRY_YET in reason or NO_ROUTE_YET in reason
        (self._warn if starting else self._error)(f"frame:{reason[:12]}", f"{reason}: braking")

    def _report(self, decision, stamp) -> None:
        """Transitions, episode/reset bookkeeping and the rqt scalars of one answered frame
        (stamp None: of a held step released between frames)."""
        if decision.brake_reason and stamp is not None:
            self.counters["braked_frames"] += 1
            self._warn(f"brake:{decision.brake_reason[:20]}", f"braking: {decision.brake_reason}")
        self._publish_transitions(decision.transitions, stamp)
        if decision.episode_end:
            self.get_logger().info(f"episode {self.core.episode} ended after {decision.ended_steps} steps "
                                   f"({decision.episode_end}), return {decision.episode_return:.2f}")
        if decision.request_reset:
            self._request_reset()
        if stamp is None:  # a settle between frames: no frame, no scalars
            return
        self._scalar("reward", decision.reward)
        self._scalar("episode_return", decision.episode_return)
        self._scalar("policy_version", float(self.core.policy.version))
        if decision.inference_ms is not None:
            self.inference_ms.add(decision.inference_ms)
            self._scalar("inference_latency_ms", decision.inference_ms)

    def _publish_transitions(self, records, stamp=None) -> None:
        if self.transition_pub is None:
            return
        for record in records:
            self.transition_pub.publish(transition_to_message(
                record, stamp if stamp is not None else self.get_clock().now().to_msg()))
            self.counters["transitions"] += 1

    @guarded("odometry")
    def _on_odometry(self, msg: Odometry) -> None:
        now = time.monotonic()
        self.rates["odometry"].tick(now)
        try:
            self.state = odometry_to_state(msg)
        except ConversionError as exc:
            self.state, self.state_error = None, str(exc)
            self._error("odometry", f"invalid odometry (braking until a valid one): {exc}")
            return
        self.watchdog.feed("odometry", now)
        self.state_stamp_ns = stamp_to_ns(msg.header.stamp)
        held = self._held
        if held is not None and self.state_stamp_ns + STAMP_TOLERANCE_NS >= stamp_to_ns(held[0].header.stamp):
            self._answer(held[0])

    @guarded("route")
    def _on_route(self, msg: Path) -> None:
        try:
            route = path_to_route(msg)
            self._publish_transitions(self.core.set_route(route))
        except ValueError as exc:  # ConversionError, InvalidInput
            self._publish_transitions(self.core.set_route(None))
            self.route_error = str(exc)
            self._error("route", f"invalid route (braking until a valid one): {exc}")
            return
        self.route_deadline = None
        self.get_logger().info(f"route with {len(route)} points received")

    @guarded("event")
    def _on_event(self, kind: str, msg) -> None:
        self.core.add_event(kind, stamp_to_ns(msg.header.stamp))

    @guarded("weights", brake=False)
    def _on_weights(self, msg: PolicyWeights) -> None:
        from av_td3_ros.driving.monitoring import SwapTiming
        from av_td3_ros.driving.runtime import WeightsRejected

        timing = SwapTiming.received(msg.stamp.sec, msg.stamp.nanosec)
        source = f"topic {self._topic('weights_topic')} version {msg.version}"
        runtime = self.runtime
        if runtime is None:
            return
        pause = timing.timed_pause(self.windows.pause)
        try:  # trust, architecture and content are checked by PolicyRuntime.decode
            decoded = runtime.decode(policy_weights_payload(msg), pause)
            timing.mark("decode")
            policy = runtime.prepare(decoded, source, pause)
            runtime.install(policy)  # one reference swap: the next inference uses it
            timing.mark("prepare")
        except WeightsRejected as exc:
            self._reject(source, str(exc))
            return
        self.last_swap = timing.report(policy.version)  # /diagnostics: where the swap's time went
        self.counters["weights_accepted"] += 1
        self.get_logger().info(
            f"policy version {policy.version} installed ({decoded.payload_bytes} bytes, "
            f"action limit {policy.action_limit:g}, cnn_norm {policy.cnn_norm}, "
            f"{'signed by key ' + policy.key_id if policy.key_id else 'unverified'})"
        )

    # --- timers ---------------------------------------------------------------------------------
    @guarded("watchdog")
    def _on_watchdog(self) -> None:
        now = time.monotonic()
        self._poll_reset()
        if self._held is not None and now >= self._held[1]:
            self._answer(self._held[0])  # its odometry did not come: the latest one will do
        if self.reset_deadline is not None and now > self.reset_deadline:
            self.reset_deadline = self.reset_future = None  # a late answer is ignored
            self._warn(
                "reset",
                f"no answer from {self._topic('reset_service')} within "
                f"{self.p.reset_timeout} s: starting a new episode anyway",
            )
            self._reset_finished(now)
        if self.settle_deadline is not None and now >= self.settle_deadline:
            self.settle_deadline = None
            self._settle()
        if self.route_deadline is not None and now > self.route_deadline:
            self.route_deadline = None
            if self.core.phase == "route":
                self.counters["route_waits_expired"] += 1
                self._warn("route", f"no new route within route_timeout {self.p.route_timeout} s after "
                                    "the reset: starting the episode on the current route")
                self.core.route_wait_over()
        stale = self.watchdog.stale(now)
        if not self._active:
            self.stale = stale
            return
        if stale:
            if "camera" in stale and "camera" not in self.stale:
                # A camera gap ends the stamp sequence: a restarted simulator counts sim time from
                # zero again, and its frames must be answered even where their stamps repeat the
                # previous run's (found by test_hardening.py: otherwise up to StampGate.memory
                # frames of the new run got no control at all).
                self.gate.clear()
            # Before the first frame nothing has been commanded yet (the vehicle interface's own
            # command timeout holds the car), and in CARLA's synchronous mode ANY control releases
            # a tick (the bridge never reads its stamp): a start-up brake would be taken as the
            # first frame's answer and put every later control one tick late. For the same reason
            # no brake while a frame waits for its answer: it gets one (braked if its odometry
            # stays missing) within odometry_sync_timeout (found by test_vehicle_outputs.py: the
            # first frame, held for its odometry, had a watchdog brake taken as its answer).
            if self.watchdog.age("camera", now) is not None and self._unanswered is None:
                self._publish_control(BRAKE, None)
            ages = ", ".join(
                f"{k} {'never received' if a is None else f'{a:.2f} s old'}" for k, a in stale.items()
            )
            self._warn("stale", f"watchdog: {ages} (sensor_timeout {self.p.sensor_timeout} s): full brake")
            # A gap in the inputs breaks the frame stack and the episode.
            self._publish_transitions(self.core.restart_episode())
        elif self.stale:
            self.get_logger().info("watchdog: camera and odometry fresh again: resuming")
        self.stale = stale

    @guarded("diagnostics", brake=False)
    def _on_diagnostics(self) -> None:
        now = time.monotonic()
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=self.actor_id)
        problems = []
        if self.stale:
            problems.append("stale: " + ", ".join(self.stale))
        if self.p.mode == "deploy" and self.core.policy.policy is None:
            problems.append(f"no valid weights ({self.core.no_weights_reason})")
        from av_td3_ros.driving.runtime import trust_problems

        problems += trust_problems(self.runtime.trust, self.runtime.trusted_keys, self.trusted_keys_error)
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = "; ".join(problems) or ("active" if self._active else "inactive")
        core = self.core
        values = {
            "mode": self.p.mode,
            "output": self.p.output,
            "active": self._active,
            "policy_version": self.core.policy.version,
            "inference_backend": self.p.inference_backend,
            "limiter_active": bool(self.limiter is not None and self.limiter.active),
            "action_limit": self.limiter.current_limit if self.limiter is not None else 0.0,
            "camera_rate_hz": self.rates["camera"].rate(now),
            "odometry_rate_hz": self.rates["odometry"].rate(now),
            "control_rate_hz": self.rates["control"].rate(now),
            "camera_age_s": self.watchdog.age("camera", now),
            "odometry_age_s": self.watchdog.age("odometry", now),
            "route_points": len(core.route) if core.route is not None else 0,
            "episode": core.episode,
            "episode_phase": core.phase,
            "step": core.step,
            "episode_return": core.episode_return,
            "late_events": core.late_events,
            "compute_ms_p50": self.compute_ms.percentile(50),
            "compute_ms_p99": self.compute_ms.percentile(99),
            "inference_ms_p99": self.inference_ms.percentile(99),
            "last_weights_rejection": self.last_rejection,
            "weights_trust": self.runtime.trust,
            "trusted_key_ids": ",".join(sorted(self.runtime.trusted_keys)),
            "policy_key_id": self.runtime.policy.key_id if self.runtime.policy is not None else "",
            "policy_cnn_norm": self.runtime.policy.cnn_norm if self.runtime.policy is not None else "",
            **getattr(self, "last_swap", {}),
            **(self.output.diagnostics() if self.output is not None else {}),
            **self.counters,
        }
        status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    # --- helpers --------------------------------------------------------------------------------
    def _publish_control(self, command: ControlCommand, stamp) -> None:
        if stamp is not None and stamp is self._unanswered:
            self._unanswered = None  # this frame has its one control
        if not self._active or self.output is None:
            return
        self.output.publish(command, stamp if stamp is not None else self.get_clock().now().to_msg(),
                            getattr(self, "state", None))
        self.rates["control"].tick(time.monotonic())
        self._scalar("steer", command.steer)
        self._scalar("throttle", command.throttle)
        self._scalar("brake", command.brake)

    def _scalar(self, name: str, value) -> None:
        if value is not None and math.isfinite(value):
            self.scalar_pubs[name].publish(Float32(data=float(value)))

    def _reject(self, source: str, reason: str) -> None:
        self.counters["weights_rejected"] += 1
        self.last_rejection = f"{source}: {reason}"
        version = self.runtime.version if self.runtime is not None else 0
        self.get_logger().error(f"rejected weights from {source}: {reason}; keeping policy version {version}")
        if self.core is not None and self.runtime is not None and self.runtime.policy is None:
            self.core.no_weights_reason = f"weights from {source} rejected: {reason}"

    def _request_reset(self) -> None:
        client = self.reset_client
        if client is None or not client.service_is_ready():
            if not self.warned_no_reset:
                self.warned_no_reset = True
                name = self._topic("reset_service") if self.p.reset_service else "(disabled)"
                self.get_logger().warning(
                    f"no reset service {name}: continuing with a new episode without a reset (warned once)"
                )
            self.core.reset_done(expect_route=False)  # nobody moves the car: no new route comes
            return
        self.reset_deadline = time.monotonic() + self.p.reset_timeout
        self.reset_future = client.call_async(Trigger.Request())

    def _poll_reset(self) -> None:
        """Handle a finished reset request; called from the camera and watchdog callbacks.

        Why not future.add_done_callback: rclpy runs a future's done callbacks as executor
        tasks outside every callback group, so with the MultiThreadedExecutor the reset could
        flip the episode phase in the middle of a camera callback (found by fuzzing,
        test_hardening.py: a START without the episode tracker's reset, then 'episode already
        ended' raised on the next step)."""
        future = self.reset_future
        if future is not None and future.done():
            self.reset_future = None
            self._on_reset_done(future)

    def _on_reset_done(self, future) -> None:
        try:
            response = future.result()
            if response is not None and not response.success:
                self._warn("reset", f"reset service answered failure: {response.message!r}")
        except Exception as exc:  # noqa: BLE001
            self._warn("reset", f"reset request failed: {exc!r}")
        self.reset_deadline = None
        self._reset_finished(time.monotonic())

    def _settle(self) -> None:
        """Publish the held step: its tick's events had event_grace to arrive. A late collision
        ends the episode there; the next frame then brakes and asks for the reset."""
        self._report(self.core.settle(), None)

    def _reset_finished(self, now: float) -> None:
        """The next episode starts on the route planned after the reset (the real waypoint
        publisher sends it a tick or more after the episode manager's answer)."""
        if self.core is None:
            return
        self.core.reset_done()
        if self.core.phase == "route":
            self.route_deadline = now + self.p.route_timeout

    def _error(self, key: str, text: str) -> None:
        if self._throttle.ready(key, time.monotonic()):
            self.get_logger().error(text)

    def _warn(self, key: str, text: str) -> None:
        if self._throttle.ready(key, time.monotonic()):
            self.get_logger().warning(text)


def _fmt(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def main(args: list[str] | None = None) -> None:
    """Run the node; SIGINT/SIGTERM leave the car with one last brake command. Exit code 2 for an
    invalid parameter."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_event()
    try:
        node = PolicyNode()
    except InvalidParameter as exc:
        print(f"policy_node: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        sys.exit(2)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    if node.p.autostart and (
        node.trigger_configure() != TransitionCallbackReturn.SUCCESS
        or node.trigger_activate() != TransitionCallbackReturn.SUCCESS
    ):
        node.get_logger().error("autostart failed")
    spinner = spin_until_stopped(executor, stop)
    try:
        if rclpy.ok() and node._active:
            node._publish_control(BRAKE, None)  # leave the car braked
    except Exception:  # noqa: BLE001
        pass
    if not stop_spinning(executor, spinner):
        node.get_logger().warning("callbacks still running at shutdown; destroying the node anyway")
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
