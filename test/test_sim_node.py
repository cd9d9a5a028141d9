"""sim_node stands in for the CARLA ROS bridge: the same topics, types, frames and QoS the policy
node relies on, in lock-step (one control per frame, a bridge-style timeout without one), with the
reset service the policy node calls. sim_node runs as its own OS process; the driver here is a
real rclpy node in the test process."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from carla_msgs.msg import CarlaEgoVehicleControl, CarlaStatus
from conftest import TEST_DIR
from nav_msgs.msg import Odometry, Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import image_to_array, odometry_to_state, path_to_route, stamp_to_ns
from av_td3_ros.ros.parameters import yaml_parameters
from av_td3_ros.ros.policy_perception import PolicyPerception
from av_td3_ros.ros.sim_parameters import SIM_NODE_PARAMETERS

CONFIG = TEST_DIR.parent / "config" / "sim.yaml"


def test_sim_yaml_documents_exactly_the_declared_parameters_with_their_defaults():
    documented = yaml_parameters(CONFIG)
    assert documented == {spec.name: spec.default for spec in SIM_NODE_PARAMETERS}
    lines = CONFIG.read_text().splitlines()
    for spec in SIM_NODE_PARAMETERS:  # every key has its comment line right above it
        at = next(i for i, text in enumerate(lines) if text.strip().startswith(f"{spec.name}:"))
        assert lines[at - 1].strip().startswith("#"), spec.name


class Driver:
    """Listens like a policy node; answers frames on demand with controls stamped like it does."""

    def __init__(self, context, role: str, answer: bool = True):
        self.node = rclpy.create_node(f"driver_{role}", context=context)
        self.role, self.answer = role, answer
        self.images, self.odoms, self.clocks, self.statuses, self.routes = [], [], [], [], []
        self.lock = threading.Lock()
        n = self.node
        n.create_subscription(Image, f"/carla/{role}/rgb_front/image", self._on_image, qos.CAMERA_QOS)
        n.create_subscription(Odometry, f"/carla/{role}/odometry", self._keep(self.odoms), qos.SENSOR_QOS)
        n.create_subscription(Clock, "/clock", self._keep(self.clocks), qos.CONTROL_QOS)
        n.create_subscription(CarlaStatus, "/carla/status", self._keep(self.statuses), qos.STATUS_QOS)
        self.control = n.create_publisher(CarlaEgoVehicleControl, f"/carla/{role}/vehicle_control_cmd",
                                          qos.CONTROL_QOS)
        self.reset = n.create_client(Trigger, f"/av_td3/{role}/reset")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def subscribe_route(self):
        """Created late on purpose: only a transient-local route reaches it."""
        topic = f"/carla/{self.role}/waypoints"
        self.node.create_subscription(Path, topic, self._keep(self.routes), qos.ROUTE_QOS)

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append((time.monotonic(), msg))
        return callback

    def _on_image(self, msg):
        with self.lock:
            self.images.append((time.monotonic(), msg))
        if self.answer:
            out = CarlaEgoVehicleControl(throttle=0.5, steer=0.0, brake=0.0)
            out.header.stamp = msg.header.stamp
            self.control.publish(out)

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


def start_sim(spawn, role: str, *params: str):
    return spawn(["-m", "av_td3_ros.nodes.sim_node", "--ros-args", "-p", f"role_name:={role}",
                  "-p", f"reset_service:=/av_td3/{role}/reset", "-p", "status_topic:=/carla/status", *params])


@pytest.fixture
def driver(rclpy_context):
    made = []

    def make(role: str, answer: bool = True) -> Driver:
        made.append(Driver(rclpy_context, role, answer))
        return made[-1]

    yield make
    for d in made:
        d.close()


def test_sim_node_publishes_the_bridge_contract_in_lock_step_and_resets_on_request(spawn, driver):
    role = "sim_contract"
    d = driver(role)
    # 400x300, not the default 800x600: on default transports the 1.9 MB frames crowd out the
    # best-effort odometry the driver (like a policy node) subscribes, so it would miss stamps.
    sim = start_sim(spawn, role, "-p", "image_width:=400", "-p", "image_height:=300")
    d.wait(lambda: len(d.images) >= 20, 60.0, "20 answered frames")
    d.subscribe_route()  # long after the route went out
    d.wait(lambda: len(d.routes) >= 1, 10.0, "the latched route")

    # Types, encodings and frames the policy node's conversions accept.
    with d.lock:
        images, odoms, clocks, statuses = list(d.images), list(d.odoms), list(d.clocks), list(d.statuses)
        route_msg = d.routes[0][1]
    image = images[-1][1]
    assert (image.encoding, image.width, image.height, image.step) == ("bgra8", 400, 300, 1600)
    assert image_to_array(image).shape == (300, 400, 4)
    odom = odoms[-1][1]
    assert odom.header.frame_id == "map" and odom.child_frame_id == role
    state = odometry_to_state(odom)
    assert 0.0 < state.speed < 13.0
    assert route_msg.header.frame_id == "map"
    route = path_to_route(route_msg)
    assert route.shape == (750, 2) and np.all(np.linalg.norm(np.diff(route, axis=0), axis=1) > 1.0)
    perception = PolicyPerception(RewardConfig())
    perception.set_route(route)
    assert perception.frame84(image_to_array(image), image.encoding).shape == (84, 84)
    assert perception.kinematics(state).shape == (23,)

    # One world frame = one stamp on clock, status, odometry and image; stamps strictly increase.
    image_stamps = [stamp_to_ns(m.header.stamp) for _, m in images]
    assert all(b > a for a, b in zip(image_stamps, image_stamps[1:], strict=False))
    assert np.allclose(np.diff(image_stamps), 0.2e9)  # fixed_delta_seconds = 0.2 of sim time per tick
    clock_stamps = {stamp_to_ns(m.clock) for _, m in clocks}
    odom_stamps = {stamp_to_ns(m.header.stamp) for _, m in odoms}
    assert set(image_stamps[5:]) <= clock_stamps and set(image_stamps[5:]) <= odom_stamps
    assert all(m.synchronous_mode and m.synchronous_mode_running for _, m in statuses)

    # QoS as the bridge: camera reliable; route reliable + transient local.
    camera_info = d.node.get_publishers_info_by_topic(f"/carla/{role}/rgb_front/image")
    route_info = d.node.get_publishers_info_by_topic(f"/carla/{role}/waypoints")
    assert camera_info[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    assert route_info[0].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert route_info[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE

    # Reset: success, a fresh route with a later stamp, the car back at its start speed.
    assert d.reset.wait_for_service(timeout_sec=10.0)
    future = d.reset.call_async(Trigger.Request())
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done() and future.result().success, future.result()
    d.wait(lambda: len(d.routes) >= 2, 10.0, "the re-published route")
    with d.lock:
        assert stamp_to_ns(d.routes[1][1].header.stamp) > stamp_to_ns(route_msg.header.stamp)
    assert sim.poll() is None
    sim.terminate()
    assert sim.wait(timeout=15) == 0
    err = sim.stderr_path.read_text()
    assert "Timeout" not in err and "ERROR" not in err, err


def test_without_a_control_a_tick_times_out_like_the_bridge_and_goes_on(spawn, driver):
    role = "sim_timeout"
    d = driver(role, answer=False)
    # The first tick waits for a control publisher: the driver has one, it just never answers.
    sim = start_sim(spawn, role, "-p", "control_timeout:=0.3")
    d.wait(lambda: len(d.images) >= 4, 60.0, "4 unanswered frames")
    with d.lock:
        arrivals = [t for t, _ in d.images]
    gaps = np.diff(arrivals)
    assert np.all(gaps > 0.25), gaps  # each tick waited its full timeout for the missing control
    sim.terminate()
    sim.wait(timeout=15)
    err = sim.stderr_path.read_text()
    assert "Timeout (0.3s) while waiting for vehicle control commands" in err


def test_an_invalid_parameter_stops_sim_node_with_a_message_naming_the_key(spawn):
    proc = start_sim(spawn, "sim_bad", "-p", "fixed_delta_seconds:=0.21")
    assert proc.wait(timeout=60) == 2
    assert "fixed_delta_seconds" in proc.stderr_path.read_text()


def test_sim_node_publishes_the_rgb_front_view_by_default_at_the_objects_json_camera_size(spawn, driver):
    """No camera parameter given: the frames are config/objects.json's rgb_front camera, exactly the
    front view the simulator core renders (the first one is the seed-0 reset frame), sky above the
    horizon, the road below it."""
    from av_td3_ros.sim import EmbeddedSimulator, SimConfig
    from av_td3_ros.sim.camera import rgb_front_camera
    from av_td3_ros.sim.render import ASPHALT, SKY

    role = "sim_front"
    d = driver(role)
    sim = start_sim(spawn, role)
    d.wait(lambda: len(d.images) >= 3, 60.0, "3 frames")
    with d.lock:
        first = d.images[0][1]
    camera = rgb_front_camera()
    assert (first.width, first.height, first.encoding) == (camera.width, camera.height, "bgra8")
    assert (camera.width, camera.height) == (800, 600)
    frame = image_to_array(first)
    with EmbeddedSimulator(SimConfig(seed=0)) as local:
        assert np.array_equal(frame, local.reset().image)
    horizon = int(camera.horizon_row(0.0))
    assert np.all(frame[: horizon - 1] == np.array(SKY, dtype=np.uint8))
    assert np.array_equal(frame[-1, camera.width // 2], np.array(ASPHALT, dtype=np.uint8))
    sim.terminate()
    assert sim.wait(timeout=15) == 0
