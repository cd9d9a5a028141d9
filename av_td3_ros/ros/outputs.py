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

__all__ = ["OUTPUTS", "CarlaOutput", "OutputAdapter"]


class OutputAdapter:
    name = ""

    def __init__(self, node, topic: Callable[[str], str]):
        self.node = node
        self.entities: list = []

    def publish(self, command: ControlCommand, stamp, state: VehicleState | None) -> None:
        raise NotImplementedError


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


OUTPUTS: dict[str, type[OutputAdapter]] = {CarlaOutput.name: CarlaOutput}
