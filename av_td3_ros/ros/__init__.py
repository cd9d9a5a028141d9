"""ros: rclpy and message code only — the translation between ROS and the core (with nodes/, the
only place that imports rclpy or message types; test/test_layers.py keeps it so).

parameters       ParameterSpec lists + declare_parameters(node, specs) -> namespace (InvalidParameter)
qos              the named QoS profile of every topic
conversions      Image/Odometry/Path/PolicyWeights/Transition/CarlaEgoVehicleControl <-> core values
outputs          output adapters: ControlCommand -> the vehicle interface's message (`output`)
bridge_messages  the messages sim_node publishes the way the CARLA ROS bridge does
spinning         a node program's spin-until-signal scaffold
log              Python logging -> the node's ROS logger; per-key log throttle
"""
