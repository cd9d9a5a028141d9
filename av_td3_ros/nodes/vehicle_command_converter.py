"""vehicle_command_converter: a vehicle stack's command -> CARLA pedals, for a simulator that
takes CarlaEgoVehicleControl (sim_node, or CARLA's bridge without carla_ackermann_control).

It stands where a real vehicle's drive-by-wire would be, so a policy node with `output:=ackermann`
or `output:=autoware` can drive the embedded simulator end to end. Per message: steering angle
[rad, + left] and signed acceleration -> steer = -angle / max_steering_angle, throttle or brake
= acceleration / max_acceleration or -acceleration / max_deceleration (vehicle.*:
VehicleParameters, av_td3_ros.vehicle.conversion.pedals_from_targets). A speed target is honoured
as a cap: no throttle once the measured speed (odometry) is at or above it. The control keeps
the command's stamp. Autoware's GearCommand PARK holds the brake.

The control publisher is created only once a command source is matched on the input: a
simulator in synchronous mode starts ticking when a control publisher appears (sim_node does),
and a converter with nobody behind it would let it tick into commands that cannot arrive yet.
"""

from __future__ import annotations

import sys

import rclpy
from carla_msgs.msg import CarlaEgoVehicleControl
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import control_to_message, odometry_to_state
from av_td3_ros.ros.parameters import InvalidParameter, ParameterSpec, declare_parameters, parameters_from
from av_td3_ros.ros.spinning import spin_until_stopped, stop_event, stop_spinning

__all__ = ["CONVERTER_PARAMETERS", "VehicleCommandConverter", "main"]


def converter_parameters() -> list[ParameterSpec]:
    from av_td3_ros.vehicle import VehicleParameters

    P = ParameterSpec
    return [
        P("input", "ackermann", "the vehicle-stack command taken", choices=("ackermann", "autoware")),
        P("role_name", "ego_vehicle", "CARLA role name of the ego vehicle"),
        P("ackermann_topic", "/carla/{role_name}/ackermann_cmd", "AckermannDriveStamped input"),
        P("autoware_control_topic", "/control/command/control_cmd", "autoware Control input"),
        P("autoware_gear_topic", "/control/command/gear_cmd", "autoware GearCommand input"),
        P("odometry_topic", "/carla/{role_name}/odometry", "Odometry, for the speed cap"),
        P("control_topic", "/carla/{role_name}/vehicle_control_cmd", "CarlaEgoVehicleControl output"),
        *parameters_from(VehicleParameters, "vehicle."),
    ]


CONVERTER_PARAMETERS = converter_parameters()
SOURCE_CHECK_PERIOD = 0.05  # [s] how often the converter looks for a matched command source


class VehicleCommandConverter(Node):
    def __init__(self, node_name: str = "vehicle_command_converter", **kwargs):
        super().__init__(node_name, **kwargs)
        from av_td3_ros.vehicle import VehicleParameters

        p = self.p = declare_parameters(self, CONVERTER_PARAMETERS)
        self.vehicle = VehicleParameters.from_namespace(p.vehicle)
        topic = lambda name: getattr(p, name).replace("{role_name}", p.role_name)  # noqa: E731
        self.control_topic = topic("control_topic")
        self.speed = None
        self.parked = False
        self.out = None  # the control publisher, once a command source is matched
        self.create_subscription(Odometry, topic("odometry_topic"), self._on_odometry, qos.SENSOR_QOS)
        if p.input == "ackermann":
            from ackermann_msgs.msg import AckermannDriveStamped

            self.commands = [self.create_subscription(AckermannDriveStamped, topic("ackermann_topic"),
                                                      self._on_ackermann, qos.CONTROL_QOS)]
        else:
            from autoware_control_msgs.msg import Control
            from autoware_vehicle_msgs.msg import GearCommand

            self.park = GearCommand.PARK
            self.commands = [
                self.create_subscription(Control, topic("autoware_control_topic"), self._on_autoware,
                                         qos.CONTROL_QOS),
                self.create_subscription(GearCommand, topic("autoware_gear_topic"), self._on_gear,
                                         qos.CONTROL_QOS),
            ]
        self._source_check = self.create_timer(SOURCE_CHECK_PERIOD, self._advertise_when_fed)

    def _advertise_when_fed(self) -> None:
        if all(sub.get_publisher_count() > 0 for sub in self.commands):
            self.out = self.create_publisher(CarlaEgoVehicleControl, self.control_topic, qos.CONTROL_QOS)
            self._source_check.cancel()
            self.get_logger().info(f"command source matched: publishing on {self.control_topic}")

    def _on_odometry(self, msg) -> None:
        try:
            self.speed = odometry_to_state(msg).forward_speed
        except ValueError:
            self.speed = None

    def _on_ackermann(self, msg) -> None:
        d = msg.drive
        self._send(msg.header.stamp, d.steering_angle, d.acceleration, d.speed)

    def _on_autoware(self, msg) -> None:
        self._send(msg.stamp, msg.lateral.steering_tire_angle, msg.longitudinal.acceleration,
                   msg.longitudinal.velocity)

    def _on_gear(self, msg) -> None:
        self.parked = msg.command == self.park

    def _send(self, stamp, angle: float, accel: float, speed_target: float) -> None:
        from av_td3_ros.driving.command import BRAKE, clamp_control
        from av_td3_ros.vehicle import pedals_from_targets

        pedals = pedals_from_targets(angle, accel, self.vehicle)
        throttle = pedals.throttle
        if self.speed is not None and self.speed >= speed_target:
            throttle = 0.0  # the target speed is reached: no more drive
        if self.out is None:
            return  # not advertised yet: nobody would receive it
        command = BRAKE if self.parked else clamp_control(pedals.steer, throttle, pedals.brake)
        self.out.publish(control_to_message(command, stamp, self.p.role_name))


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_event()
    try:
        node = VehicleCommandConverter()
    except (InvalidParameter, ValueError) as exc:
        print(f"vehicle_command_converter: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        sys.exit(2)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = spin_until_stopped(executor, stop)
    stop_spinning(executor, spinner)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
