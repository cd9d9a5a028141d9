"""ros: the layer between rclpy/messages and the numpy/torch core (with nodes/, the only place
that imports rclpy or message types).

parameters   the nodes' ParameterSpec lists (derived from the core's settings where they are one)
             + declare_parameters(node, specs) -> namespace (InvalidParameter)
qos          the named QoS profile of every topic
conversions  Image/Odometry/Path/PolicyWeights/Transition/CarlaEgoVehicleControl <-> numpy
runtime      PolicyRuntime: the actor, validated weights, atomic swaps (no rclpy)
control_loop ControlLoop: one new frame -> one control (+ transitions), episodes (no rclpy)
policy_perception  the perception core wired for a policy node (no rclpy)
monitoring   RateMeter, Watchdog, LatencyStats (no rclpy)
log          Python logging -> ROS logger; per-key log throttle
"""
