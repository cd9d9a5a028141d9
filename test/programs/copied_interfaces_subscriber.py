"""Subscribes the topics of copied_interfaces_publisher.py and prints the first message of each,
as nested dicts of every field (rosidl's own field list), in one JSON line; then exits."""

import json
import time

import rclpy
from ackermann_msgs.msg import AckermannDriveStamped
from autoware_control_msgs.msg import Control
from autoware_vehicle_msgs.msg import GearCommand
from carla_msgs.msg import CarlaStatus


def as_dict(msg):
    if not hasattr(msg, "get_fields_and_field_types"):
        return msg
    return {name: as_dict(getattr(msg, name)) for name in msg.get_fields_and_field_types()}


rclpy.init()
node = rclpy.create_node("copied_interfaces_subscriber")
got: dict = {}
for topic, msg_type in (("/test/ackermann", AckermannDriveStamped), ("/test/control", Control),
                        ("/test/gear", GearCommand), ("/test/status", CarlaStatus)):
    node.create_subscription(msg_type, topic, lambda m, t=topic: got.setdefault(t, as_dict(m)), 10)
print("ready", flush=True)
deadline = time.monotonic() + 30
while len(got) < 4 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps(got), flush=True)
node.destroy_node()
rclpy.shutdown()
