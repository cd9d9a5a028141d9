"""Publishes one message of each copied type that test_foundation checks (AckermannDriveStamped,
autoware Control, GearCommand, the headerless CarlaStatus) with known field values, repeatedly,
until a subscriber has matched every topic and a few rounds have gone out."""

import time

import rclpy
from ackermann_msgs.msg import AckermannDriveStamped
from autoware_control_msgs.msg import Control
from autoware_vehicle_msgs.msg import GearCommand
from builtin_interfaces.msg import Time
from carla_msgs.msg import CarlaStatus

rclpy.init()
node = rclpy.create_node("copied_interfaces_publisher")

ackermann = AckermannDriveStamped()
ackermann.header.frame_id = "base_link"
ackermann.header.stamp = Time(sec=12, nanosec=500)
ackermann.drive.steering_angle = 0.25
ackermann.drive.steering_angle_velocity = 0.5
ackermann.drive.speed = 8.0
ackermann.drive.acceleration = -2.5
ackermann.drive.jerk = 1.5

control = Control(stamp=Time(sec=7, nanosec=1), control_time=Time(sec=7, nanosec=2))
control.lateral.stamp = Time(sec=7, nanosec=3)
control.lateral.control_time = Time(sec=7, nanosec=4)
control.lateral.steering_tire_angle = -0.125
control.lateral.steering_tire_rotation_rate = 0.75
control.lateral.is_defined_steering_tire_rotation_rate = True
control.longitudinal.stamp = Time(sec=7, nanosec=5)
control.longitudinal.control_time = Time(sec=7, nanosec=6)
control.longitudinal.velocity = 3.0
control.longitudinal.acceleration = -1.25
control.longitudinal.jerk = 0.5
control.longitudinal.is_defined_acceleration = True
control.longitudinal.is_defined_jerk = False

gear = GearCommand(stamp=Time(sec=9, nanosec=9), command=GearCommand.PARK)
status = CarlaStatus(frame=2**40 + 3, fixed_delta_seconds=0.05, synchronous_mode=True,
                     synchronous_mode_running=False)

outgoing = [(node.create_publisher(type(msg), topic, 10), msg) for topic, msg in (
    ("/test/ackermann", ackermann), ("/test/control", control), ("/test/gear", gear),
    ("/test/status", status))]
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not all(pub.get_subscription_count() for pub, _ in outgoing):
    time.sleep(0.05)
for _ in range(20):
    for pub, msg in outgoing:
        pub.publish(msg)
    time.sleep(0.1)
print("published", flush=True)
node.destroy_node()
rclpy.shutdown()
