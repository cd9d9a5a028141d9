"""Prints the ROS environment this process was started with, as JSON, and shows rclpy starts."""

import json
import os

import rclpy

rclpy.init()
node = rclpy.create_node("env_probe")
print(json.dumps({
    "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"),
    "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID"),
    "context_domain_id": node.context.get_domain_id(),
}), flush=True)
node.destroy_node()
rclpy.shutdown()
