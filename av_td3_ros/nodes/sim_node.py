"""sim_node: the embedded simulator behind the CARLA ROS bridge's topics, in lock-step.

It behaves like the bridge in synchronous mode with synchronous_mode_wait_for_vehicle_control_command,
as strictly as the bridge (docs/carla.md, "Differences between sim_node and the real bridge"):
each tick publishes /carla/status, /clock, then the camera image, odometry and any collision /
lane-invasion events of one world frame, in the bridge's order, then waits up to
`control_timeout` (wall) seconds for a CarlaEgoVehicleControl - ANY control, whatever its stamp,
as the bridge never reads it - logs a timeout the way the bridge does and goes on with the last
control received. Unlike the bridge, the first tick waits for its driver: a matched control
publisher and camera subscriber, the camera's subscribers on the odometry too, every known
camera, odometry and route subscriber matched, and the first route acknowledged, so that a run's
start does not depend on discovery order. With `bridge_stamps` (default) the stamps are the
bridge's: float seconds truncated to nanoseconds, the image and events from the sensor time,
odometry, clock and route from the world snapshot, two clocks of one tick that can differ by 1 ns.

A std_srvs/Trigger reset service (`reset_service`) starts a new episode. As with CARLA's episode
manager and waypoint publisher, it answers once the simulator has reset and the new route
(nav_msgs/Path, transient local) follows `route_delay_ticks` ticks later: the first frames of the
new episode arrive with the old route (0 = the route before the answer).

Holding for the learner (`hold_update_ratio` > 0): the simulator runs as fast as the policy answers,
far faster than a CPU learner updates, so a run's update-to-data ratio is whatever the two speeds
make it (~0.06 in the demo). With the hold, before each step the tick thread waits until the
trainer's update count (std_msgs/UInt64 on `update_count_topic`, published after every update)
reaches floor(ratio x (steps - hold_learning_starts)), so the run keeps at least that ratio. A
trainer that falls silent does not freeze the world: after `hold_timeout` wall seconds without a new
count the step goes on, a warning is logged, `hold_timeouts` counts it, /diagnostics says WARN, and
steps run free until the next count arrives. Env steps are the simulator's steps (a reset is not one).

Threads: the simulator runs in its own tick thread (highway-env is not thread-safe, so nothing
else touches it); the executor delivers controls and reset requests to it through a condition.
Parameters: av_td3_ros.ros.parameters.SIM_NODE_PARAMETERS, documented in config/sim.yaml.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from carla_msgs.msg import CarlaCollisionEvent, CarlaEgoVehicleControl, CarlaLaneInvasionEvent, CarlaStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry, Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import UInt64
from std_srvs.srv import Trigger

from av_td3_ros.ros import bridge_messages as bm
from av_td3_ros.ros import qos
from av_td3_ros.ros.parameters import SIM_NODE_PARAMETERS, InvalidParameter, declare_parameters
from av_td3_ros.ros.spinning import spin_until_stopped, stop_event, stop_spinning

__all__ = ["SIM_NODE_PARAMETERS", "SimNode", "main"]

CLOCK_QOS = qos.CONTROL_QOS  # RELIABLE depth 10, as the bridge's /clock
ROUTE_ACK_TIMEOUT = 5.0  # [s] the first tick waits this long at most for the route's delivery


class SimNode(Node):
    def __init__(self, node_name: str = "sim_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.p = declare_parameters(self, SIM_NODE_PARAMETERS)  # raises InvalidParameter
        from av_td3_ros.sim import EmbeddedSimulator, SimConfig

        p = self.p
        self.sim = EmbeddedSimulator(SimConfig.from_namespace(p))
        topic = lambda name: getattr(p, name).replace("{role_name}", p.role_name)  # noqa: E731
        self.pub_image = self.create_publisher(Image, topic("camera_topic"), qos.CAMERA_QOS)
        self.pub_odom = self.create_publisher(Odometry, topic("odometry_topic"), qos.CONTROL_QOS)
        self.pub_route = self.create_publisher(Path, topic("route_topic"), qos.ROUTE_QOS)
        self.pub_collision = self.create_publisher(
            CarlaCollisionEvent, topic("collision_topic"), qos.EVENT_QOS)
        self.pub_invasion = self.create_publisher(
            CarlaLaneInvasionEvent, topic("lane_invasion_topic"), qos.EVENT_QOS)
        self.pub_status = self.create_publisher(CarlaStatus, p.status_topic, qos.STATUS_QOS)
        self.pub_clock = self.create_publisher(Clock, "/clock", CLOCK_QOS) if p.publish_clock else None
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS_QOS)
        # Controls and resets in separate groups: a reset request waits for the tick thread, which
        # may itself be waiting for a control that must still be delivered meanwhile.
        self.sub_control = self.create_subscription(
            CarlaEgoVehicleControl, topic("control_topic"), self._on_control, qos.CONTROL_QOS,
            callback_group=MutuallyExclusiveCallbackGroup())
        if p.reset_service:
            self.create_service(Trigger, topic("reset_service"), self._on_reset,
                                callback_group=MutuallyExclusiveCallbackGroup())
        if p.hold_update_ratio > 0.0:
            self.create_subscription(UInt64, p.update_count_topic, self._on_update_count,
                                     qos.UPDATE_COUNT_QOS)
        self.create_timer(p.diagnostics_period, self._on_diagnostics)

        self._cv = threading.Condition()
        self._control = (0.0, 0.0, 1.0)  # throttle, steer, brake: braked until told otherwise
        self._awaiting = False  # a tick is waiting for a control
        self._answered = False
        self._pending_route = None  # (route points, frame at which it goes out) after a reset
        self._snapshot = (0, 0.0)  # (frame, world-snapshot seconds accumulated tick by tick)
        self._reset_requested = False
        self._reset_done = threading.Event()
        self._reset_result = (0, 0)  # (episode, frame) of the last reset the service answers for
        self._stop = threading.Event()
        self.counters = dict.fromkeys(("ticks", "steps", "resets", "control_timeouts", "controls",
                                       "controls_between_ticks", "collisions", "lane_invasions",
                                       "hold_waits", "hold_timeouts"), 0)
        self._trainer_updates = 0  # the latest count on update_count_topic
        self._hold_released = False  # after a hold timeout, until the trainer counts again
        self._hold_seconds = 0.0  # wall time spent holding
        self._thread = threading.Thread(target=self._run, name="sim-ticks", daemon=True)

    # --- ROS side -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(timeout=5.0)
        self.sim.close()

    def _on_control(self, msg: CarlaEgoVehicleControl) -> None:
        with self._cv:
            # The bridge applies whatever arrives last; NaN or out-of-range values are clipped by
            # the simulator, as a real car's actuators saturate.
            self._control = (float(msg.throttle), float(msg.steer), float(msg.brake))
            self.counters["controls"] += 1
            # Any control releases the waiting tick, as in the bridge, which never reads stamps.
            if self._awaiting:
                self._answered = True
                self._cv.notify_all()
            else:
                self.counters["controls_between_ticks"] += 1

    def _on_update_count(self, msg: UInt64) -> None:
        with self._cv:
            if msg.data != self._trainer_updates:
                # A smaller count is a restarted trainer (it counts from 0 again): believe it.
                self._trainer_updates = int(msg.data)
                self._hold_released = False
                self._cv.notify_all()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._reset_done.clear()
        with self._cv:
            self._reset_requested = True
            self._cv.notify_all()
        # The tick thread resets after the current tick's control (<= control_timeout).
        if self._reset_done.wait(timeout=2.0 * self.p.control_timeout + 2.0):
            episode, frame = self._reset_result
            response.success = True
            response.message = f"episode {episode} started at frame {frame}"
        else:
            response.success = False
            response.message = "the simulator did not reset in time"
        return response

    def _on_diagnostics(self) -> None:
        state = self.sim.state
        status = DiagnosticStatus(name=f"{self.get_name()}: embedded simulator", hardware_id=self.p.role_name)
        status.level = DiagnosticStatus.OK
        status.message = "running" if self._thread.is_alive() else "stopped"
        if not self._thread.is_alive() and not self._stop.is_set():
            status.level, status.message = DiagnosticStatus.ERROR, "tick thread died"
        values = dict(self.counters)
        if self.p.hold_update_ratio > 0.0:
            with self._cv:
                released, updates = self._hold_released, self._trainer_updates
            steps = self.counters["steps"] - self.p.hold_learning_starts
            values.update(hold_update_ratio=self.p.hold_update_ratio, trainer_updates=updates,
                          hold_seconds=round(self._hold_seconds, 3),
                          update_to_data_ratio=round(updates / steps, 4) if steps > 0 else 0.0)
            if released:
                status.level = DiagnosticStatus.WARN
                status.message = (f"not holding: no new trainer update count within hold_timeout "
                                  f"{self.p.hold_timeout} s (last {updates})")
        if state is not None:
            values.update(frame=state.frame, episode=state.episode, episode_step=state.episode_step,
                          speed=round(state.speed, 3), on_road=state.on_road)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    # --- the tick thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            # The first tick waits for a driver: ticking into a policy node that is still loading
            # torch, or whose subscriptions are not matched yet, would spend the start of the
            # first episode on timeouts (braked, slowing down) or on frames without odometry or
            # route (braked). Later ticks never wait for this.
            if not self._driver_ready():
                self.get_logger().info(
                    f"waiting for a driver: camera, odometry and route subscribers and a publisher on "
                    f"{self.sub_control.topic_name}")
                while not self._stop.wait(0.1) and not self._driver_ready():
                    pass
            state = self._reset(first=True)
            # The route is a topic of its own: without this wait the first frames can overtake it
            # and be braked for "no route" (found by test_vehicle_outputs.py: one run's first
            # frame braked, another's not, and the episodes went different ways).
            if not self.pub_route.wait_for_all_acked(Duration(seconds=ROUTE_ACK_TIMEOUT)):
                self.get_logger().warning(f"first route not acknowledged within {ROUTE_ACK_TIMEOUT} s")
            while not self._stop.is_set():
                started = time.monotonic()
                self._publish(state)
                throttle, steer, brake = self._wait_for_control(state)
                if self._stop.is_set():
                    break
                if self._take_reset_request():
                    state = self._reset()
                    self._reset_result = (state.episode, state.frame)
                    self._reset_done.set()
                else:
                    self._hold_for_learner()
                    state = self.sim.step(throttle, steer, brake)
                    self.counters["steps"] += 1
                if self.p.realtime:
                    self._stop.wait(max(0.0, self.p.fixed_delta_seconds - (time.monotonic() - started)))
        except Exception as exc:  # noqa: BLE001 — reported on /diagnostics and in the log
            self.get_logger().fatal(f"simulator tick thread failed: {exc!r}")
            raise

    def updates_due(self) -> int:
        """Updates the trainer must have made before the next step: the floor, as the trainer's
        own cap int((transitions - learning_starts + 1) x ratio) rounds, so that a trainer with
        update_to_data_ratio >= hold_update_ratio is never waited for beyond what it owes."""
        steps = self.counters["steps"] - self.p.hold_learning_starts
        return int(self.p.hold_update_ratio * steps) if steps > 0 else 0

    def _hold_for_learner(self) -> None:
        due = self.updates_due()
        if due <= 0:
            return
        with self._cv:
            if self._trainer_updates >= due or self._hold_released:
                return
            self.counters["hold_waits"] += 1
            started = time.monotonic()
            deadline, seen = started + self.p.hold_timeout, self._trainer_updates
            while (self._trainer_updates < due and not self._stop.is_set() and not self._reset_requested):
                if self._trainer_updates != seen:  # the trainer is alive, only slow: wait on
                    deadline, seen = time.monotonic() + self.p.hold_timeout, self._trainer_updates
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    self.counters["hold_timeouts"] += 1
                    self._hold_released = True
                    self.get_logger().warning(
                        f"no new trainer update count on {self.p.update_count_topic} for "
                        f"{self.p.hold_timeout} s "
                        f"(have {self._trainer_updates}, step {self.counters['steps'] + 1} needs {due} at "
                        f"hold_update_ratio {self.p.hold_update_ratio:g}): stepping without holding until "
                        "the trainer counts again")
                    break
                self._cv.wait(remaining)
            self._hold_seconds += time.monotonic() - started


    def _driver_ready(self) -> bool:
        """A control publisher and a camera subscriber are matched, every node subscribed to the
        camera subscribes the odometry too, and every camera, odometry and route subscriber the
        graph knows is matched: the first frame and its odometry then reach the driver.
        (Matching is per endpoint: a driver's camera reader can match before its odometry reader,
        whose first samples would then be lost.)"""
        if self.sub_control.get_publisher_count() == 0 or self.pub_image.get_subscription_count() == 0:
            return False
        if not self._readers(self.pub_image) <= self._readers(self.pub_odom):
            return False
        return all(pub.get_subscription_count() >= self.count_subscribers(pub.topic_name)
                   for pub in (self.pub_image, self.pub_odom, self.pub_route))

    def _readers(self, publisher) -> set:
        infos = self.get_subscriptions_info_by_topic(publisher.topic_name)
        return {(info.node_namespace, info.node_name) for info in infos}

    def _reset(self, first: bool = False):
        state = self.sim.reset()
        self.counters["resets"] += 1
        route = self.sim.route(self.p.route_length_m, self.p.route_spacing_m)
        if first or self.p.route_delay_ticks == 0:
            self._pending_route = None
            self.pub_route.publish(bm.route_message(route, self._stamps(state)[1]))
        else:  # replaces a route still pending from an earlier reset
            self._pending_route = (route, state.frame + self.p.route_delay_ticks)
        return state

    def _take_reset_request(self) -> bool:
        with self._cv:
            requested, self._reset_requested = self._reset_requested, False
        return requested

    def _stamps(self, state):
        """(sensor stamp, snapshot stamp) of a frame. The bridge's: the sensor time is CARLA's
        frame timestamp, the snapshot time an elapsed time summed tick by tick, both float seconds
        truncated to ns; otherwise one exact integer-ns stamp."""
        dt = self.p.fixed_delta_seconds
        if not self.p.bridge_stamps:
            stamp = bm.stamp_of(state.frame, dt)
            return stamp, stamp
        frame, seconds = self._snapshot
        for _ in range(state.frame - frame):
            seconds += dt
        self._snapshot = (max(frame, state.frame), seconds)
        return bm.float_seconds_stamp(state.frame * dt), bm.float_seconds_stamp(seconds)

    def _publish(self, state) -> None:
        """One world frame, in the bridge's order: status and clock, the camera, odometry, then
        collision and lane invasion (the bridge updates its actors in creation order)."""
        p = self.p
        sensor_stamp, snapshot_stamp = self._stamps(state)
        with self._cv:
            self._awaiting, self._answered = True, False
        self.pub_status.publish(bm.status_message(state.frame, p.fixed_delta_seconds))
        if self.pub_clock is not None:
            self.pub_clock.publish(bm.clock_message(snapshot_stamp))
        if self._pending_route is not None and state.frame >= self._pending_route[1]:
            self.pub_route.publish(bm.route_message(self._pending_route[0], snapshot_stamp))
            self._pending_route = None
        self.pub_image.publish(bm.image_message(state, sensor_stamp, p.role_name))
        self.pub_odom.publish(bm.odometry_message(state, snapshot_stamp, p.role_name))
        if state.collision:
            self.counters["collisions"] += 1
            self.pub_collision.publish(bm.collision_message(state, sensor_stamp, p.role_name))
        if state.lane_invasion:
            self.counters["lane_invasions"] += 1
            self.pub_invasion.publish(bm.lane_invasion_message(state, sensor_stamp, p.role_name))
        self.counters["ticks"] += 1

    def _wait_for_control(self, state) -> tuple[float, float, float]:
        deadline = time.monotonic() + self.p.control_timeout
        with self._cv:
            while not self._answered and not self._stop.is_set() and not self._reset_requested:
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    self.counters["control_timeouts"] += 1
                    # The bridge's own words, so logs read the same with either simulator.
                    self.get_logger().warning(
                        f"Timeout ({self.p.control_timeout}s) while waiting for vehicle control "
                        f"commands. Missing command from actor ids [1] (frame {state.frame})"
                    )
                    break
                self._cv.wait(remaining)
            self._awaiting = False
            return self._control


def main(args: list[str] | None = None) -> None:
    """Run the simulator node until SIGINT/SIGTERM. Exit code 2 for an invalid parameter."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_event()
    try:
        node = SimNode()
    except (InvalidParameter, ValueError) as exc:
        print(f"sim_node: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        sys.exit(2)
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    node.start()
    spinner = spin_until_stopped(executor, stop)
    node.stop()
    if not stop_spinning(executor, spinner):
        node.get_logger().warning("callbacks still running at shutdown; destroying the node anyway")
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
