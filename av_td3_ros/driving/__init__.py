"""driving: one car's per-frame decision, as plain numpy and torch (no ROS).

core           DrivingCore: camera frame + VehicleState -> one ControlCommand, episodes, transitions
command        ControlCommand, BRAKE, action -> command
state          VehicleState
runtime        PolicyRuntime: the actor a car runs, validated weights, atomic swaps
frame_windows  FrameWindows: weights updates decode in the gaps between camera frames
monitoring     RateMeter, Watchdog, LatencyStats
stamp_gate     StampGate: each frame stamp answered once
"""
