"""Stands in for carla_waypoint_publisher's goal subscription: a node in namespace argv[1] that
subscribes the absolute topic argv[2] (as the real node does); the rest of argv are the node's
ROS arguments (the remappings the launch file gives it). Prints "ready", then one JSON line with
the resolved subscription name and the goal it received."""

import json
import sys
import time

import rclpy
from geometry_msgs.msg import PoseStamped

namespace, topic = sys.argv[1], sys.argv[2]
rclpy.init(args=["goal_listener", "--ros-args", *sys.argv[3:]])
node = rclpy.create_node("carla_waypoint_publisher", namespace=namespace)
got: list = []
sub = node.create_subscription(PoseStamped, topic, got.append, 10)
print("ready", flush=True)
deadline = time.monotonic() + 30
while not got and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
x = got[0].pose.position.x if got else None
print(json.dumps({"resolved": sub.topic_name, "x": x}), flush=True)
node.destroy_node()
rclpy.shutdown()
