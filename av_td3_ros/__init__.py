"""av_td3_ros: a camera-driven car policy trained with a stabilized TD3, as ROS 2 nodes.

Layers (dependencies point one way): nodes -> ros -> (perception, learning, sim) -> model.
Nothing outside `nodes/` and `ros/` imports rclpy.
"""

__version__ = "0.1.0"
