"""`av-td3 release`: end a policy node's latched stop with a release token signed by the
operator's key (av_td3_ros.vehicle.release), over ROS.

It reads the node's run and current stop from /diagnostics (`gate_release_node`,
`gate_release_session`, `gate_stop_id`, `gate_latched`; --stop-id names another stop), signs a
token for that node, run and stop, publishes it
on `<node>/release_stop` and waits for the node's answer on `<node>/release_stop_result`.
Exit codes: 0 released, 1 refused (the node's reason is printed), 2 usage/key error or no answer.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["release_stop"]


def release_stop(node_name: str, key_path: str, stop_id: int | None = None, timeout: float = 10.0,
                 out=sys.stdout, err=sys.stderr) -> int:
    from av_td3_ros.learning.signing import KeyFileError, load_signing_key
    from av_td3_ros.vehicle.release import sign_release

    if not node_name.startswith("/"):
        node_name = "/" + node_name
    try:
        key = load_signing_key(key_path)
    except KeyFileError as exc:
        print(f"av-td3 release: {exc}", file=err)
        return 2

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from av_td3_ros.ros import qos

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("av_td3_release", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status, results = {}, []

    def on_diagnostics(msg) -> None:
        for entry in msg.status:
            values = {kv.key: kv.value for kv in entry.values}
            if values.get("gate_release_node") == node_name:
                status.clear()
                status.update(values)

    def spin_until(done, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return done()

    try:
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, qos.DIAGNOSTICS_QOS)
        node.create_subscription(String, f"{node_name}/release_stop_result",
                                 lambda msg: results.append(msg.data), qos.RELEASE_QOS)
        publisher = node.create_publisher(String, f"{node_name}/release_stop", qos.RELEASE_QOS)
        if not spin_until(lambda: bool(status), timeout):
            print(f"av-td3 release: no /diagnostics from {node_name} with a gate within {timeout:g} s "
                  "(deploy mode, output ackermann or autoware?)", file=err)
            return 2
        stop_id = int(status["gate_stop_id"]) if stop_id is None else int(stop_id)
        print(f"{node_name}: stop {status['gate_stop_id']}, latched {status.get('gate_latched')}, "
              f"state {status.get('gate_state')}", file=out)
        if not spin_until(lambda: publisher.get_subscription_count() > 0, timeout):
            print(f"av-td3 release: nobody subscribes to {node_name}/release_stop", file=err)
            return 2
        token = sign_release(key, node_name, status["gate_release_session"], stop_id)
        nonce = json.loads(token)["nonce"]
        # The result subscription must be matched too, or the answer could be missed.
        spin_until(lambda: node.count_publishers(f"{node_name}/release_stop_result") > 0, timeout)
        publisher.publish(String(data=token))

        def answered():
            return any(json.loads(r).get("nonce") == nonce for r in results)

        if not spin_until(answered, timeout):
            print(f"av-td3 release: no answer from {node_name} within {timeout:g} s", file=err)
            return 2
        answer = next(a for a in map(json.loads, results) if a.get("nonce") == nonce)
        print(f"{node_name}: {answer['message']} (stop {answer['stop_id']}, key {key.key_id})", file=out)
        return 0 if answer.get("released") else 1
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
