"""Output adapters: how a policy node's ControlCommand reaches the vehicle.

The driving core decides in CARLA's pedal terms (steer, throttle, brake). An adapter turns that
into one vehicle interface's message(s) on its own topic(s) with its own QoS. The policy node
publishes every command (driven, braked by a failure, the watchdog's, the last one at shutdown)
through the adapter chosen by its `output` parameter, so a new vehicle interface is one new
class here (or passed to PolicyNode(outputs=...)) and one test, not edits across the node.

An adapter:
    name         the `output` parameter's value that selects it
    __init__(node, topic)  create its publishers on `node` (lifecycle publishers where the
                 command must stop with the node's activation); `topic(param)` resolves a topic
                 parameter ({role_name} replaced)
    publish(command, stamp, state)  send one command; `stamp` is a builtin_interfaces/Time (the
                 answered frame's, or now); `state` the latest VehicleState or None
    entities     what the node destroys on cleanup
"""

from __future__ import annotations

from collections.abc import Callable

from av_td3_ros.driving.command import ControlCommand
from av_td3_ros.driving.state import VehicleState
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import control_to_message
from av_td3_ros.ros.log import Throttle

__all__ = [
    "OUTPUTS", "AckermannOutput", "AutowareOutput", "CarlaOutput", "OutputAdapter", "VehicleStackOutput",
]


class OutputAdapter:
    name = ""

    def __init__(self, node, topic: Callable[[str], str]):
        self.node = node
        self.entities: list = []

    def publish(self, command: ControlCommand, stamp, state: VehicleState | None) -> None:
        raise NotImplementedError

    def diagnostics(self) -> dict:
        """Extra /diagnostics values (e.g. the gate's counters)."""
        return {}


class CarlaOutput(OutputAdapter):
    """carla_msgs/CarlaEgoVehicleControl on `control_topic`, what the CARLA ROS bridge and
    sim_node take. The bridge never reads the header; it carries the frame's stamp for rqt."""

    name = "carla"

    def __init__(self, node, topic: Callable[[str], str]):
        super().__init__(node, topic)
        from carla_msgs.msg import CarlaEgoVehicleControl

        self.role_name = node.p.role_name
        self.publisher = node.create_lifecycle_publisher(
            CarlaEgoVehicleControl, topic("control_topic"), qos.CONTROL_QOS)
        self.entities.append(self.publisher)

    def publish(self, command: ControlCommand, stamp, state: VehicleState | None) -> None:
        self.publisher.publish(control_to_message(command, stamp, self.role_name))


class VehicleStackOutput(OutputAdapter):
    """Base of the vehicle-stack outputs: the pedal command becomes physical targets (steering
    angle + left, signed acceleration, speed target = measured speed + a * dt; the `vehicle.*`
    parameters, av_td3_ros.vehicle), and in deploy mode every command passes the CommandGate
    (`gate.*`: steering angle and rate, acceleration, jerk and speed limits; a latched e-stop on
    `estop_topic`, an optional heartbeat on `heartbeat_topic`, a stop ramp to standstill, then
    hold). A latched stop ends only with a restart or a release token signed by one of the
    `release_keys` (std_msgs/String on `~/release_stop`, `av-td3 release`; checked by
    av_td3_ros.vehicle.release: this node, this stop, fresh, unused), whose outcome is published
    on `~/release_stop_result` and /diagnostics. dt is the time between the stamps of two commands
    (the frames' sim time), within [0.01, 0.5] s."""

    def __init__(self, node, topic: Callable[[str], str]):
        super().__init__(node, topic)
        from std_msgs.msg import Bool, Empty, String

        from av_td3_ros.vehicle import CommandGate, GateLimits, VehicleParameters

        p = node.p
        self.vehicle = VehicleParameters.from_namespace(p.vehicle)
        self.gate = None
        if p.mode == "deploy":
            self.gate = CommandGate(GateLimits.for_vehicle(self.vehicle, **vars(p.gate)))
            self.release_verifier, self.release_keys_error = self._release_verifier(node)
            self.last_release, self._refusals_log = "none yet", Throttle(1.0)
            self.release_result = node.create_publisher(String, "~/release_stop_result", qos.RELEASE_QOS)
            self.entities += [
                node.create_subscription(Bool, topic("estop_topic"), self._on_estop, qos.ESTOP_QOS),
                node.create_subscription(String, "~/release_stop", self._on_release, qos.RELEASE_QOS),
                self.release_result,
            ]
            if self.gate.limits.heartbeat_timeout > 0:
                self.entities.append(node.create_subscription(
                    Empty, topic("heartbeat_topic"), self._on_heartbeat, qos.SCALAR_QOS))
        self._previous = None  # the last VehicleCommand sent
        self._previous_stamp_ns = None

    def _on_estop(self, msg) -> None:
        self.gate.estop(msg.data, self._now())

    def _on_heartbeat(self, msg) -> None:
        self.gate.heartbeat(self._now())

    @staticmethod
    def _release_verifier(node):
        """(the node's ReleaseVerifier, "" or why its keys could not be read). An unreadable
        release key leaves it with none (no release but a restart), said in the log and on
        /diagnostics."""
        from av_td3_ros.learning.signing import KeyFileError, load_trusted_keys
        from av_td3_ros.vehicle.release import ReleaseVerifier

        keys, error = {}, ""
        try:
            keys = load_trusted_keys(node.p.release_keys)
        except KeyFileError as exc:
            error = f"release_keys: {exc}"
            node.get_logger().error(f"{error}; a latched stop ends only with a restart")
        return ReleaseVerifier(node.get_fully_qualified_name(), keys, node.p.release_max_age), error

    def _on_release(self, msg) -> None:
        """A release token: verified first (av_td3_ros.vehicle.release), then the gate's own rules."""
        import json
        import time

        from std_msgs.msg import String

        from av_td3_ros.vehicle.release import ReleaseRefused, claimed_nonce

        gate = self.gate
        try:
            self.release_verifier.check(msg.data, gate.stop_id, bool(gate.latched), time.time())
            released, message = gate.release(self._now())
        except ReleaseRefused as exc:
            released, message = False, f"release refused: {exc}"
        self.last_release = f"stop {gate.stop_id}: {message}"
        if released:
            self.node.get_logger().warning(f"latched stop released: {self.last_release}")
        elif self._refusals_log.ready("release", time.monotonic()):  # a flood of forgeries stays readable
            self.node.get_logger().error(f"release of the latched stop: {self.last_release}")
        answer = {"nonce": claimed_nonce(msg.data), "stop_id": gate.stop_id, "released": released,
                  "message": message}
        self.release_result.publish(String(data=json.dumps(answer)))

    def _now(self, stamp_ns: int | None = None) -> float:
        """The gate's time [s]: the steady clock on a vehicle. Under simulated time (use_sim_time)
        the simulator's: the ROS clock, and for a command that answers a frame at least that
        frame's stamp, since /clock is a topic of its own that can trail the camera by a tick
        (the gate would see no time pass and repeat its previous output). A simulator ticking
        faster than real time then gets the gate's rates, ramps and timeouts per simulated
        second, as its car lives them."""
        clock = self.node.get_clock()
        if not clock.ros_time_is_active:
            import time

            return time.monotonic()
        now_ns = clock.now().nanoseconds
        return max(now_ns, stamp_ns or 0) * 1e-9

    def targets(self, command: ControlCommand, stamp, state: VehicleState | None):
        """(VehicleCommand, gear "drive"/"park") for one pedal command."""
        from av_td3_ros.vehicle import (
            VehicleCommand,
            acceleration,
            gear_for,
            steering_angle,
            to_vehicle_command,
        )

        stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        dt = 0.05 if self._previous_stamp_ns is None else (stamp_ns - self._previous_stamp_ns) * 1e-9
        dt = min(max(dt, 0.01), 0.5)
        self._previous_stamp_ns = stamp_ns
        speed = state.forward_speed if state is not None else float("nan")
        gear = "drive"
        if self.gate is None:
            result = to_vehicle_command(command, 0.0 if state is None else max(speed, 0.0), dt, self.vehicle,
                                        self._previous)
        else:
            gated = self.gate.update(self._now(stamp_ns), steering_angle(command.steer, self.vehicle),
                                     acceleration(command.throttle, command.brake, self.vehicle), speed)
            result, gear = gated.command, gear_for(gated.state, speed)
        values = (result.steering_angle, result.steering_rate, result.acceleration, result.speed, result.jerk)
        self._previous = VehicleCommand(*(float(v) for v in values))
        return self._previous, gear

    def diagnostics(self) -> dict:
        if self.gate is None:
            return {}
        now = self._now()
        keys = (self.release_keys_error or ",".join(sorted(self.release_verifier.keys))
                or "none (a stop ends only with a restart)")
        return {"gate_state": self.gate.state, "gate_latched": ",".join(self.gate.latched) or "none",
                "gate_stop_id": self.gate.stop_id, "gate_release_node": self.release_verifier.node,
                "gate_release_session": self.release_verifier.session,
                "gate_release_keys": keys, "gate_last_release": self.last_release,
                "gate_heartbeat_age_s": self.gate.heartbeat_age(now),
                **{f"gate_{k}": v for k, v in self.gate.counters.items()}}


class AckermannOutput(VehicleStackOutput):
    """ackermann_msgs/AckermannDriveStamped on `ackermann_topic` (what carla_ackermann_control,
    F1TENTH-style and many research stacks take). `acceleration` is SIGNED (< 0 brakes), as
    carla_ackermann_control reads it; jerk 0 means "as fast as possible" in ackermann_msgs, so
    the gated jerk is sent as its magnitude (never 0 while the gate limits it)."""

    name = "ackermann"

    def __init__(self, node, topic: Callable[[str], str]):
        super().__init__(node, topic)
        from ackermann_msgs.msg import AckermannDriveStamped

        self.message = AckermannDriveStamped
        self.frame_id = f"{node.p.role_name}"
        self.publisher = node.create_lifecycle_publisher(AckermannDriveStamped, topic("ackermann_topic"),
                                                         qos.CONTROL_QOS)
        self.entities.append(self.publisher)

    def publish(self, command: ControlCommand, stamp, state: VehicleState | None) -> None:
        target, _ = self.targets(command, stamp, state)
        msg = self.message()
        msg.header.stamp, msg.header.frame_id = stamp, self.frame_id
        msg.drive.steering_angle = target.steering_angle
        msg.drive.steering_angle_velocity = abs(target.steering_rate)
        msg.drive.speed = target.speed
        msg.drive.acceleration = target.acceleration
        msg.drive.jerk = abs(target.jerk)
        self.publisher.publish(msg)


class AutowareOutput(VehicleStackOutput):
    """autoware_control_msgs/Control on `autoware_control_topic` (steering_tire_angle + left,
    velocity target, signed acceleration and jerk, all defined) and
    autoware_vehicle_msgs/GearCommand on `autoware_gear_topic` (DRIVE, PARK while the gate holds
    the car at standstill)."""

    name = "autoware"

    def __init__(self, node, topic: Callable[[str], str]):
        super().__init__(node, topic)
        from autoware_control_msgs.msg import Control
        from autoware_vehicle_msgs.msg import GearCommand

        self.control, self.gear = Control, GearCommand
        self.publisher = node.create_lifecycle_publisher(Control, topic("autoware_control_topic"),
                                                         qos.CONTROL_QOS)
        self.gear_publisher = node.create_lifecycle_publisher(GearCommand, topic("autoware_gear_topic"),
                                                              qos.CONTROL_QOS)
        self.entities += [self.publisher, self.gear_publisher]

    def publish(self, command: ControlCommand, stamp, state: VehicleState | None) -> None:
        target, gear = self.targets(command, stamp, state)
        msg = self.control()
        msg.stamp = msg.control_time = stamp
        msg.lateral.stamp = msg.lateral.control_time = stamp
        msg.lateral.steering_tire_angle = target.steering_angle
        msg.lateral.steering_tire_rotation_rate = target.steering_rate
        msg.lateral.is_defined_steering_tire_rotation_rate = True
        msg.longitudinal.stamp = msg.longitudinal.control_time = stamp
        msg.longitudinal.velocity = target.speed
        msg.longitudinal.acceleration = target.acceleration
        msg.longitudinal.jerk = target.jerk
        msg.longitudinal.is_defined_acceleration = msg.longitudinal.is_defined_jerk = True
        self.publisher.publish(msg)
        self.gear_publisher.publish(self.gear(stamp=stamp, command=self.gear.PARK if gear == "park"
                                              else self.gear.DRIVE))


OUTPUTS = {cls.name: cls for cls in (CarlaOutput, AckermannOutput, AutowareOutput)}
