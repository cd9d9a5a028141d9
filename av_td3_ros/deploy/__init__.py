"""deploy: the policy for vehicle computers (no ROS).

    onnx_policy  export_onnx (safetensors weights -> .onnx, checked against torch, written
                 atomically) and OnnxPolicyRuntime (onnxruntime, act() like PolicyRuntime)

onnx/onnxruntime/torch are imported when used, so `import av_td3_ros.deploy` costs nothing.
"""
