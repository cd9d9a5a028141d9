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
from builtin_interfaces.msg import Time
from carla_msgs.msg import CarlaCollisionEvent, CarlaEgoVehicleControl, CarlaLaneInvasionEvent, CarlaStatus
from conftest import TEST_DIR
from nav_msgs.msg import Odometry, Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from av_td3_ros.driving.core import DrivingCore
from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.ros import bridge_messages as bm
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import image_to_array, odometry_to_state, path_to_route, stamp_to_ns
from av_td3_ros.ros.parameters import SIM_NODE_PARAMETERS, yaml_parameters

CONFIG = TEST_DIR.parent / "config" / "sim.yaml"


class _ConstantDriver:
    """A policy for the DrivingCore that always drives straight on at half throttle."""

    version = 0
    action_limit = 0.0

    @property
    def policy(self):
        return self

    def act(self, frames, kinematics, policy=None):
        return np.array([0.0, 0.5], np.float32), 0


def test_sim_yaml_documents_exactly_the_declared_parameters_with_their_defaults():
    documented = yaml_parameters(CONFIG)
    assert documented == {spec.name: spec.default for spec in SIM_NODE_PARAMETERS}
    lines = CONFIG.read_text().splitlines()
    for spec in SIM_NODE_PARAMETERS:  # every key has its comment line right above it
        at = next(i for i, text in enumerate(lines) if text.strip().startswith(f"{spec.name}:"))
        assert lines[at - 1].strip().startswith("#"), spec.name


class Driver:
    """Listens like a policy node; answers each frame with one control, stamped like the policy
    node's (the frame's stamp) or unstamped (`stamp_controls=False`, like carla_ad_agent).
    `published` collects (source timestamp, topic kind, header stamp ns) of every message: the
    order in which sim_node PUBLISHED them, whatever order DDS delivers them in."""

    def __init__(self, context, role: str, answer: bool = True, steer: float = 0.0,
                 stamp_controls: bool = True):
        self.node = rclpy.create_node(f"driver_{role}", context=context)
        self.role, self.answer, self.steer, self.stamp_controls = role, answer, steer, stamp_controls
        self.images, self.odoms, self.clocks, self.statuses, self.routes = [], [], [], [], []
        self.events, self.published = [], []
        self.lock = threading.Lock()
        n = self.node
        n.create_subscription(Image, f"/carla/{role}/rgb_front/image", self._on_image, qos.CAMERA_QOS)
        n.create_subscription(Odometry, f"/carla/{role}/odometry", self._keep(self.odoms, "odometry"),
                              qos.SENSOR_QOS)
        n.create_subscription(Clock, "/clock", self._keep(self.clocks, "clock"), qos.CONTROL_QOS)
        n.create_subscription(CarlaStatus, "/carla/status", self._keep(self.statuses, "status"),
                              qos.STATUS_QOS)
        for kind, msg_type in (("collision", CarlaCollisionEvent), ("lane_invasion", CarlaLaneInvasionEvent)):
            n.create_subscription(msg_type, f"/carla/{role}/{kind}", self._keep(self.events, kind),
                                  qos.EVENT_QOS)
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
        self.node.create_subscription(Path, topic, self._keep(self.routes, "route"), qos.ROUTE_QOS)

    def _record(self, kind, msg, info):
        stamp = msg.clock if kind == "clock" else getattr(msg, "header", None)
        stamp_ns = stamp_to_ns(stamp if kind == "clock" else stamp.stamp) if stamp is not None else None
        self.published.append((info["source_timestamp"], kind, stamp_ns))

    def _keep(self, store, kind):
        def callback(msg, info):
            with self.lock:
                store.append((time.monotonic(), msg))
                self._record(kind if kind not in ("collision", "lane_invasion") else kind, msg, info)
        return callback

    def _on_image(self, msg, info):
        with self.lock:
            self.images.append((time.monotonic(), msg))
            self._record("camera", msg, info)
        if self.answer:
            out = CarlaEgoVehicleControl(throttle=0.5, steer=self.steer, brake=0.0)
            if self.stamp_controls:
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

    def make(role: str, answer: bool = True, **options) -> Driver:
        made.append(Driver(rclpy_context, role, answer, **options))
        return made[-1]

    yield make
    for d in made:
        d.close()


def test_sim_node_publishes_the_bridge_contract_in_lock_step_and_resets_on_request(spawn, driver):
    role = "sim_contract"
    d = driver(role)
    # 400x300, not the default 800x600: on default transports the 1.9 MB frames crowd out the
    # best-effort odometry the driver (like a policy node) subscribes, so it would miss stamps.
    # A 5 s control timeout, not the bridge's 1 s: this test asks that every frame be answered,
    # and a control lost under load waits for a DDS retransmission (a 1.0 s miss at frame 15 on
    # the CI machine). How a missing control times out has its own test below.
    sim = start_sim(spawn, role, "-p", "image_width:=400", "-p", "image_height:=300",
                    "-p", "control_timeout:=5.0")
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
    core = DrivingCore(mode="evaluate", policy=_ConstantDriver(), reward=RewardConfig())
    core.set_route(route)
    (start,) = core.on_frame(stamp_to_ns(image.header.stamp), image_to_array(image), image.encoding,
                             state).transitions
    assert (start.frame_height, start.frame_width) == (84, 84) and start.kinematics.shape == (23,)

    # One world frame: clock and odometry share a stamp, the image's is within 1 ns of it (the
    # bridge's two float clocks); stamps strictly increase by fixed_delta_seconds (0.2).
    image_stamps = [stamp_to_ns(m.header.stamp) for _, m in images]
    assert all(b > a for a, b in zip(image_stamps, image_stamps[1:], strict=False))
    assert np.allclose(np.diff(image_stamps), 0.2e9)
    clock_stamps = {stamp_to_ns(m.clock) for _, m in clocks}
    odom_stamps = {stamp_to_ns(m.header.stamp) for _, m in odoms}
    assert set(list(odom_stamps)[5:]) <= clock_stamps
    assert all(min(abs(s - o) for o in odom_stamps) <= 1 for s in image_stamps[5:-1])
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
        assert d.node.count_publishers(f"/carla/{role}/vehicle_control_cmd") == 1
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
    with d.lock:  # when sim_node published each frame, not when DDS delivered it (jitter)
        published = sorted(t for t, k, _ in d.published if k == "camera")
    gaps = np.diff(published) / 1e9
    assert np.all(gaps > 0.25), gaps  # each tick waited its full timeout for the missing control
    sim.terminate()
    sim.wait(timeout=15)
    err = sim.stderr_path.read_text()
    assert "Timeout (0.3s) while waiting for vehicle control commands" in err


def test_an_invalid_parameter_stops_sim_node_with_a_message_naming_the_key(spawn):
    proc = start_sim(spawn, "sim_bad", "-p", "fixed_delta_seconds:=0.21")
    assert proc.wait(timeout=60) == 2
    assert "fixed_delta_seconds" in proc.stderr_path.read_text()


def _frames(published, dt_ns: int = 200_000_000) -> dict[int, list[tuple[int, str]]]:
    """frame number -> [(source timestamp, kind)] of the stamped messages, in publish order."""
    out: dict[int, list] = {}
    for source, kind, stamp_ns in sorted(published):
        if stamp_ns is not None and kind != "route":
            out.setdefault(round(stamp_ns / dt_ns), []).append((source, kind))
    return out


def test_each_tick_publishes_the_camera_then_odometry_then_the_events_like_the_bridge(spawn, driver):
    role = "sim_order"
    d = driver(role, steer=1.0)  # full lock: the car leaves its lane within a few ticks
    # 400x300 like the contract test: 800x600 frames on default transports crowd out the
    # best-effort odometry, and a frame whose odometry was dropped cannot show the order (a CI
    # run kept 1 complete frame of ~10 at 800x600).
    sim = start_sim(spawn, role, "-p", "image_width:=400", "-p", "image_height:=300")

    def complete(frames):
        return {f: m for f, m in frames.items() if {"clock", "camera", "odometry"} <= {k for _, k in m}}

    d.wait(lambda: any(k == "lane_invasion" for _, k, _ in d.published)
           and len(complete(_frames(d.published))) >= 8, 90.0, "a lane invasion and 8 complete frames")
    with d.lock:
        frames = _frames(d.published)
        statuses = sorted(t for t, k, _ in d.published if k == "status")
    rank = {"clock": 0, "camera": 1, "odometry": 2, "collision": 3, "lane_invasion": 3}
    checked = 0
    for frame, messages in complete(frames).items():
        kinds = [k for _, k in messages]
        assert [rank[k] for k in kinds] == sorted(rank[k] for k in kinds), (frame, kinds)
        clock_at = messages[kinds.index("clock")][0]
        assert any(t < clock_at for t in statuses)  # the headerless status comes first
        checked += 1
    assert checked >= 8
    assert any("lane_invasion" in [k for _, k in m] for m in frames.values())
    sim.terminate()
    sim.wait(timeout=15)


@pytest.mark.parametrize("bridge_stamps", [True, False])
def test_stamps_are_the_bridges_float_seconds_from_two_clocks_or_exact_when_asked(
        spawn, driver, bridge_stamps):
    role = f"sim_stamps_{str(bridge_stamps).lower()}"
    d = driver(role)
    # 400x300 like the contract test: 800x600 frames on default transports crowd out other topics.
    sim = start_sim(spawn, role, "-p", f"bridge_stamps:={str(bridge_stamps).lower()}",
                    "-p", "image_width:=400", "-p", "image_height:=300")
    d.wait(lambda: len(d.images) >= 25 and len(d.odoms) >= 25, 60.0, "25 frames")
    # Stop ticking (no more controls), then let /clock catch up: it is its own topic, and samples
    # of a killed publisher that were not yet delivered are lost.
    with d.lock:
        last = max(stamp_to_ns(m.header.stamp) for _, m in d.odoms)
    d.wait(lambda: any(stamp_to_ns(m.clock) >= last for _, m in list(d.clocks)), 30.0,
           "the clock to catch up")
    sim.terminate()
    sim.wait(timeout=15)
    with d.lock:
        images = {round(stamp_to_ns(m.header.stamp) / 2e8): m.header.stamp for _, m in d.images}
        odoms = {round(stamp_to_ns(m.header.stamp) / 2e8): m.header.stamp for _, m in d.odoms}
        clocks = {stamp_to_ns(m.clock) for _, m in d.clocks}
    common = sorted(set(images) & set(odoms))
    assert len(common) >= 20
    gaps = [stamp_to_ns(images[f]) - stamp_to_ns(odoms[f]) for f in common]
    assert {stamp_to_ns(odoms[f]) for f in common} <= clocks  # clock = snapshot time
    if bridge_stamps:
        for f in common:  # the image: CARLA's frame timestamp through float seconds
            assert images[f] == bm.float_seconds_stamp(f * 0.2), f
        assert set(gaps) <= {-1, 0, 1} and set(gaps) != {0}, gaps  # ns apart on some frames
    else:
        assert set(gaps) == {0}
        assert all(images[f] == bm.stamp_of(f, 0.2) for f in common)


def test_float_seconds_stamps_truncate_to_nanoseconds_like_ros_compatibility():
    assert bm.float_seconds_stamp(1.2) == Time(sec=1, nanosec=199_999_999)  # 1.2 - 1 < 0.2
    assert bm.float_seconds_stamp(0.6000000000000001) == Time(sec=0, nanosec=600_000_000)
    assert bm.float_seconds_stamp(0.0) == Time(sec=0, nanosec=0)


def test_unstamped_controls_answer_the_tick_as_the_bridge_accepts_any(spawn, driver):
    role = "sim_unstamped"
    d = driver(role, stamp_controls=False)  # header.stamp 0, as carla_ad_agent sends
    sim = start_sim(spawn, role, "-p", "control_timeout:=5.0")
    started = time.monotonic()
    d.wait(lambda: len(d.images) >= 20, 60.0, "20 frames")
    with d.lock:
        arrivals = [t for t, _ in d.images]
    assert np.median(np.diff(arrivals)) < 1.0, np.diff(arrivals)  # no 5 s timeouts: each control counted
    assert time.monotonic() - started < 60.0
    sim.terminate()
    sim.wait(timeout=15)
    assert "Timeout" not in sim.stderr_path.read_text()


def _reset(d: Driver) -> int:
    """Call the reset service; the frame number it reports the new episode starts at."""
    assert d.reset.wait_for_service(timeout_sec=10.0)
    future = d.reset.call_async(Trigger.Request())
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert future.done() and future.result().success, future.result()
    return int(future.result().message.rsplit(" ", 1)[1])


@pytest.mark.parametrize("delay", [1, 0])
def test_the_reset_answers_first_and_the_new_route_follows_a_tick_later_like_carla(spawn, driver, delay):
    role = f"sim_late_route_{delay}"
    d = driver(role)
    d.subscribe_route()
    sim = start_sim(spawn, role, "-p", f"route_delay_ticks:={delay}")
    d.wait(lambda: len(d.images) >= 5 and len(d.routes) == 1, 60.0, "frames and the first route")
    reset_frame = _reset(d)
    d.wait(lambda: len(d.routes) >= 2, 10.0, "the new route")
    d.wait(lambda: any(k == "camera" and s is not None and round(s / 2e8) >= reset_frame + 2
                       for _, k, s in d.published), 10.0, "frames of the new episode")
    sim.terminate()
    sim.wait(timeout=15)
    with d.lock:
        route_frame = round(stamp_to_ns(d.routes[1][1].header.stamp) / 2e8)
        route_at = max(t for t, k, _ in d.published if k == "route")
        cameras = {round(s / 2e8): t for t, k, s in d.published if k == "camera"}
    assert route_frame == reset_frame + delay  # stamped with the tick it went out at
    if delay:  # the new episode's first frame still came with the old route
        assert cameras[reset_frame] < route_at < cameras[reset_frame + 1]
    else:
        assert route_at < cameras[reset_frame]


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


# --- holding for the learner: the world waits until the trainer has made its updates ---------------

class UpdateCounter:
    """Stands in for the trainer's end of update_count_topic: a real node publishing the count."""

    def __init__(self, context, topic: str):
        from std_msgs.msg import UInt64

        self.node = rclpy.create_node("update_counter", context=context)
        self.pub = self.node.create_publisher(UInt64, topic, qos.UPDATE_COUNT_QOS)
        self.msg_type = UInt64

    def publish(self, count: int) -> None:
        self.pub.publish(self.msg_type(data=count))

    def close(self):
        self.node.destroy_node()


SMALL_CAMERA = ("-p", "image_width:=160", "-p", "image_height:=120")


def _settled_count(d: Driver, quiet: float = 3.0, timeout: float = 30.0) -> int:
    """The number of frames once none has arrived for `quiet` seconds (the simulator is held).
    3 s: a loaded machine stalled the free-running start for over 1 s once (11 frames "settled"),
    and a held step waits for hold_timeout (10 s) before it runs free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with d.lock:
            n, last = len(d.images), (d.images[-1][0] if d.images else 0.0)
        if n and time.monotonic() - last >= quiet:
            return n
        time.sleep(0.05)
    raise AssertionError("the simulator never stopped: it is not holding")


def test_a_held_simulator_steps_only_as_far_as_the_trainers_updates_allow(spawn, driver, rclpy_context):
    role, ratio, starts = "sim_hold", 0.5, 20
    d = driver(role)
    counter = UpdateCounter(rclpy_context, f"/{role}/update_count")
    try:
        start_sim(spawn, role, *SMALL_CAMERA, "-p", f"hold_update_ratio:={ratio}",
                  "-p", f"hold_learning_starts:={starts}", "-p", f"update_count_topic:=/{role}/update_count")
        # Before any update: free for learning_starts steps, then held where the first update is
        # due (step k+1 needs floor(0.5 x (k - 20)) updates: k = 22 needs one). Frames = steps + 1.
        assert _settled_count(d) == 22 + 1
        # The "trainer" makes 40 updates at 10/s; every one releases two steps.
        ceiling_violations = []
        for updates in range(1, 41):
            counter.publish(updates)
            time.sleep(0.1)
            with d.lock:
                steps = len(d.images) - 1
            if steps > 2 * updates + 22:  # never beyond what the updates allow
                ceiling_violations.append((updates, steps))
        assert not ceiling_violations
        steps = _settled_count(d) - 1
        # Exactly where the rule stops it: 40 updates allow steps up to 2 x 40 + 22 = 102, whose
        # ratio 40 / (102 - 20) = 0.488 is the held 0.5 less the rounding of one update's steps.
        assert steps == 2 * 40 + 22
        assert 0 <= ratio - 40 / (steps - starts) < 1.5 / (steps - starts)
    finally:
        counter.close()


def test_hold_ratio_0_is_off_and_a_silent_trainer_only_delays_a_held_step_by_its_timeout(spawn, driver):
    free = driver("sim_free")
    start_sim(spawn, "sim_free", *SMALL_CAMERA, "-p", "hold_update_ratio:=0.0",
              "-p", "hold_learning_starts:=5", "-p", "update_count_topic:=/sim_free/update_count")
    free.wait(lambda: len(free.images) >= 80, 60.0, "80 frames without any update count")

    held = driver("sim_silent")
    sim = start_sim(spawn, "sim_silent", *SMALL_CAMERA, "-p", "hold_update_ratio:=1.0",
                    "-p", "hold_learning_starts:=5", "-p", "hold_timeout:=1.0",
                    "-p", "update_count_topic:=/sim_silent/update_count")
    held.wait(lambda: len(held.images) >= 40, 60.0, "40 frames after the hold timed out")
    with held.lock:
        arrivals = np.array([t for t, _ in held.images])
    gaps = np.diff(arrivals)
    # Step 7 (after 6, the first with an update due) waited the full second, then the steps ran free.
    assert 0.9 < gaps[6] < 3.0, gaps[:10]
    assert np.median(gaps[8:]) < 0.3
    sim.terminate()
    sim.wait(timeout=15)
    assert "no new trainer update count on /sim_silent/update_count for 1.0 s" in sim.stderr_path.read_text()
