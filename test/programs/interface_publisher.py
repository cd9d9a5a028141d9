"""Publishes one CarlaEgoVehicleControl and one Transition with known field values, repeatedly,
until a subscriber has matched both topics and a few rounds have gone out."""

import time

import numpy as np
import rclpy
from av_td3_msgs.msg import Transition
from carla_msgs.msg import CarlaEgoVehicleControl

rclpy.init()
node = rclpy.create_node("interface_publisher")
control_pub = node.create_publisher(CarlaEgoVehicleControl, "/test/control", 10)
transition_pub = node.create_publisher(Transition, "/test/transition", 10)

control = CarlaEgoVehicleControl()
control.header.frame_id = "ego_vehicle"
control.throttle = 0.25
control.steer = -0.5
control.brake = 0.0
control.hand_brake = False
control.reverse = True
control.gear = 3
control.manual_gear_shift = True

transition = Transition()
transition.actor_id = "car7"
transition.seq = 12345678901
transition.episode = 4
transition.step = 17
transition.policy_version = 9
transition.kind = Transition.KIND_STEP
transition.frame_height = 84
transition.frame_width = 84
transition.frame = (np.arange(84 * 84) % 251).astype(np.uint8).tobytes()
transition.kinematics = [float(i) / 4 for i in range(23)]
transition.action = [0.5, -0.25]
transition.reward = 1.5
transition.terminated = False
transition.truncated = True

deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    if control_pub.get_subscription_count() and transition_pub.get_subscription_count():
        break
    time.sleep(0.05)
for _ in range(20):
    control_pub.publish(control)
    transition_pub.publish(transition)
    time.sleep(0.1)
print("published", flush=True)
node.destroy_node()
rclpy.shutdown()
