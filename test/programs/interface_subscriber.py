"""Subscribes the two test topics and prints the first message of each as JSON, then exits."""

import json
import time

import rclpy
from av_td3_msgs.msg import Transition
from carla_msgs.msg import CarlaEgoVehicleControl

rclpy.init()
node = rclpy.create_node("interface_subscriber")
got: dict = {}


def on_control(msg: CarlaEgoVehicleControl) -> None:
    got.setdefault("control", {
        "frame_id": msg.header.frame_id, "throttle": msg.throttle, "steer": msg.steer,
        "brake": msg.brake, "hand_brake": msg.hand_brake, "reverse": msg.reverse,
        "gear": msg.gear, "manual_gear_shift": msg.manual_gear_shift,
    })


def on_transition(msg: Transition) -> None:
    got.setdefault("transition", {
        "actor_id": msg.actor_id, "seq": msg.seq, "episode": msg.episode, "step": msg.step,
        "policy_version": msg.policy_version, "kind": msg.kind,
        "frame_height": msg.frame_height, "frame_width": msg.frame_width,
        "frame_sum": int(sum(bytes(msg.frame))), "frame_len": len(msg.frame),
        "kinematics": [float(x) for x in msg.kinematics], "action": [float(x) for x in msg.action],
        "reward": msg.reward, "terminated": msg.terminated, "truncated": msg.truncated,
    })


node.create_subscription(CarlaEgoVehicleControl, "/test/control", on_control, 10)
node.create_subscription(Transition, "/test/transition", on_transition, 10)
print("ready", flush=True)
deadline = time.monotonic() + 30
while len(got) < 2 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps(got), flush=True)
node.destroy_node()
rclpy.shutdown()
