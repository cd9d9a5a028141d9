"""The episode manager: spawn-point choice, the reset sequence, error paths, and its ROS node.

What runs here: the pure logic (av_td3_ros.episodes) against a fake world; the carla side with
the REAL `carla` package (carla==0.9.16 on this Python 3.11; the Docker image has 0.9.15) for
every type that needs no server - Transform, Location, Rotation, Vector3D, VehicleControl, the
batch commands, and a real Client with no server (its time-out path); the node with real rclpy.

What needs a CARLA server is marked `carla_server` below and skipped unless CARLA_SERVER=host:port
is set (e.g. `CARLA_SERVER=localhost:2000 pytest test/test_episode_manager.py -k server` next to
`docker compose -f docker/compose.yaml --profile carla up carla`). Those tests also need the
client version to equal the server's (carla==0.9.15 for carlasim/carla:0.9.15, i.e. Python 3.10).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import pytest

from av_td3_ros.episodes import (
    Candidate,
    CarlaNotInstalled,
    CarlaPose,
    CarlaUnavailable,
    CarlaVersionMismatch,
    EgoNotFound,
    EpisodeError,
    EpisodeManager,
    ResetFailed,
    SpawnChooser,
    SpawnPointError,
    VehicleState,
    WrongMap,
    parse_pose,
    quaternion_from_rpy,
    resolve_points,
)
from av_td3_ros.episodes import carla_client as cc

carla = pytest.importorskip("carla", reason="the carla client is in requirements/carla.txt")

CARLA_SERVER = os.environ.get("CARLA_SERVER", "")
carla_server = pytest.mark.skipif(not CARLA_SERVER, reason="needs a CARLA server: set CARLA_SERVER=host:port")


# --- a fake world ------------------------------------------------------------------------------

def grid_points(n: int = 20, spacing: float = 30.0) -> list[CarlaPose]:
    return [CarlaPose(x=i * spacing, y=0.0, z=0.5, yaw=90.0) for i in range(n)]


class FakeWorld:
    def __init__(self, vehicles: list[VehicleState], points: list[CarlaPose] | None = None,
                 map_name: str = "Carla/Maps/Town01") -> None:
        self._vehicles = list(vehicles)
        self.points = points if points is not None else grid_points()
        self.name = map_name
        self.calls: list[tuple] = []

    def map_name(self) -> str:
        self.calls.append(("map_name",))
        return self.name

    def spawn_points(self) -> list[CarlaPose]:
        self.calls.append(("spawn_points",))
        return list(self.points)

    def vehicles(self) -> list[VehicleState]:
        self.calls.append(("vehicles",))
        return list(self._vehicles)

    def teleport(self, actor_id: int, pose: CarlaPose) -> None:
        self.calls.append(("teleport", actor_id, pose))
        self._vehicles = [VehicleState(v.actor_id, v.role_name, pose.x, pose.y) if v.actor_id == actor_id
                          else v for v in self._vehicles]


def cars(*roles: str) -> list[VehicleState]:
    return [VehicleState(100 + i, r, 1000.0 + 500 * i, 1000.0) for i, r in enumerate(roles)]


# --- poses -------------------------------------------------------------------------------------

def test_ros_and_carla_frames_differ_by_the_sign_of_y_pitch_and_yaw():
    pose = parse_pose("10, 5, 0.5, 0, 0, 90")  # ROS map frame: 5 m to the LEFT, facing left
    assert (pose.x, pose.y, pose.z, pose.yaw) == (10.0, -5.0, 0.5, -90.0)  # CARLA: y right, yaw cw
    assert pose.ros_position() == (10.0, 5.0, 0.5)
    qx, qy, qz, qw = pose.ros_orientation()
    assert (qx, qy) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert (qz, qw) == pytest.approx((math.sin(math.pi / 4), math.cos(math.pi / 4)))
    assert quaternion_from_rpy(0.0, 0.0, 0.0) == pytest.approx((0.0, 0.0, 0.0, 1.0))
    # unit quaternion for any angles
    q = quaternion_from_rpy(0.3, -0.7, 2.1)
    assert sum(c * c for c in q) == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["1,2,3", "1,2,3,4,5,x", "", "1,2,3,4,5,6,7", "nan,0,0,0,0,0"])
def test_malformed_poses_are_rejected_with_the_expected_format(text):
    with pytest.raises(ValueError, match="x,y,z,roll,pitch,yaw|not finite"):
        parse_pose(text)


def test_poses_round_trip_through_real_carla_transforms():
    transform = carla.Transform(carla.Location(x=1.5, y=-2.0, z=0.3),
                                carla.Rotation(pitch=1.0, yaw=-170.0, roll=2.0))
    pose = CarlaPose.from_transform(transform)
    assert (pose.x, pose.y, pose.z, pose.roll, pose.pitch, pose.yaw) == pytest.approx(
        (1.5, -2.0, 0.3, 2.0, 1.0, -170.0))
    back = pose.to_transform(carla)
    assert isinstance(back, carla.Transform)
    assert (back.location.x, back.location.y, back.rotation.yaw, back.rotation.roll) == pytest.approx(
        (1.5, -2.0, -170.0, 2.0))


# --- spawn points --------------------------------------------------------------------------------

def test_an_empty_list_means_every_map_spawn_point_and_entries_mix_indices_and_poses():
    points = grid_points(5)
    assert [c.label for c in resolve_points([], points)] == [f"map spawn point {i}" for i in range(5)]
    chosen = resolve_points(["3", "10,-4,0.5,0,0,180"], points)
    assert chosen[0] == Candidate("map spawn point 3", points[3])
    assert chosen[1].pose == CarlaPose(10.0, 4.0, 0.5, 0.0, -0.0, -180.0)


def test_bad_spawn_entries_say_what_is_wrong():
    with pytest.raises(SpawnPointError, match="index 7 is out of range: this map has 5 spawn points"):
        resolve_points(["7"], grid_points(5))
    with pytest.raises(SpawnPointError, match="spawn_points: .*'12' or 'x,y,z,roll,pitch,yaw'"):
        resolve_points(["north"], grid_points(5))
    with pytest.raises(SpawnPointError, match="no spawn points"):
        resolve_points([], [])


def _starts(chooser: SpawnChooser, role: str, n: int, candidates, occupied=()):
    return [chooser.choose_start(role, candidates, occupied).label for _ in range(n)]


def test_random_choice_is_reproducible_per_seed_and_independent_per_car():
    candidates = resolve_points([], grid_points(50))
    a = _starts(SpawnChooser(seed=7), "hero0", 20, candidates)
    assert a == _starts(SpawnChooser(seed=7), "hero0", 20, candidates)
    assert a != _starts(SpawnChooser(seed=8), "hero0", 20, candidates)
    assert len(set(a)) > 5  # it does move around
    # hero1's sequence does not depend on how often hero0 reset in between
    solo = SpawnChooser(seed=7)
    only_hero1 = _starts(solo, "hero1", 10, candidates)
    mixed = SpawnChooser(seed=7)
    interleaved = []
    for _ in range(10):
        _starts(mixed, "hero0", 3, candidates)
        interleaved += _starts(mixed, "hero1", 1, candidates)
    assert interleaved == only_hero1


def test_start_points_keep_their_distance_from_other_vehicles():
    candidates = resolve_points([], grid_points(10, spacing=5.0))  # x = 0, 5, ..., 45
    chooser = SpawnChooser(seed=1, min_separation=12.0)
    occupied = [(20.0, 0.0)]
    for _ in range(50):
        c = chooser.choose_start("hero0", candidates, occupied)
        assert abs(c.pose.x - 20.0) >= 12.0
    with pytest.raises(SpawnPointError, match="no spawn point is at least 100 m from the other 1 vehicle"):
        SpawnChooser(min_separation=100.0).choose_start("hero0", candidates, occupied)


def test_cycle_goes_through_the_list_in_order_skipping_occupied_points():
    candidates = resolve_points(["0", "1", "2"], grid_points(3))
    chooser = SpawnChooser(choice="cycle", min_separation=1.0)
    assert _starts(chooser, "car", 4, candidates) == [
        "map spawn point 0", "map spawn point 1", "map spawn point 2", "map spawn point 0"]
    assert _starts(chooser, "car", 1, candidates, occupied=[(30.0, 0.0)]) == ["map spawn point 2"]
    with pytest.raises(SpawnPointError, match="spawn_choice 'zigzag'"):
        SpawnChooser(choice="zigzag")


def test_goals_are_far_enough_from_the_start_or_the_farthest_point():
    candidates = resolve_points([], grid_points(10, spacing=30.0))
    chooser = SpawnChooser(seed=3, min_goal_distance=100.0)
    start = candidates[0].pose
    for _ in range(30):
        assert chooser.choose_goal("car", start, candidates).pose.distance_xy(start.x, start.y) >= 100.0
    far = SpawnChooser(min_goal_distance=10_000.0).choose_goal("car", start, candidates)
    assert far == candidates[-1]


# --- the reset sequence ----------------------------------------------------------------------------

def test_reset_looks_the_car_up_teleports_it_away_from_others_and_picks_a_goal():
    world = FakeWorld(cars("hero0", "hero1"))
    manager = EpisodeManager(world, ["hero0", "hero1"], SpawnChooser(seed=0, min_separation=10.0))
    result = manager.reset("hero1")
    assert [c[0] for c in world.calls] == ["map_name", "spawn_points", "vehicles", "teleport"]
    _, actor_id, pose = world.calls[-1]
    assert actor_id == 101 and pose == result.start.pose
    assert (result.role_name, result.episode) == ("hero1", 1)
    assert result.goal.pose.distance_xy(pose.x, pose.y) >= 100.0
    assert "hero1: episode 1 starts at map spawn point" in result.message
    # the next reset of hero0 keeps 10 m from hero1's new position; map points are cached per map
    world.calls.clear()
    second = manager.reset("hero0")
    assert [c[0] for c in world.calls] == ["map_name", "vehicles", "teleport"]
    assert second.start.pose.distance_xy(pose.x, pose.y) >= 10.0
    assert manager.episodes == {"hero0": 1, "hero1": 1}


def test_reset_errors_name_the_problem():
    world = FakeWorld(cars("ego_vehicle", "hero7"))
    manager = EpisodeManager(world, ["hero0"], SpawnChooser())
    with pytest.raises(EgoNotFound, match=r"no vehicle with role_name 'hero0'.*\['ego_vehicle', 'hero7'\]"):
        manager.reset("hero0")
    with pytest.raises(EpisodeError, match="'hero9' is not managed here"):
        manager.reset("hero9")
    twins = FakeWorld([VehicleState(1, "hero0", 0, 0), VehicleState(2, "hero0", 50, 0)])
    with pytest.raises(EpisodeError, match="2 vehicles have role_name 'hero0'"):
        EpisodeManager(twins, ["hero0"], SpawnChooser()).reset("hero0")
    assert not [c for c in twins.calls if c[0] == "teleport"]
    town = FakeWorld(cars("hero0"), map_name="Carla/Maps/Town10HD_Opt")
    with pytest.raises(WrongMap, match="runs map 'Carla/Maps/Town10HD_Opt' but 'Town01' is expected"):
        EpisodeManager(town, ["hero0"], SpawnChooser(), town="Town01").reset("hero0")
    with pytest.raises(SpawnPointError):
        EpisodeManager(world, ["hero0"], SpawnChooser(), spawn_entries=["x"])
    with pytest.raises(EpisodeError, match="repeat"):
        EpisodeManager(world, ["a", "a"], SpawnChooser())


def test_a_new_map_is_resolved_again():
    world = FakeWorld(cars("car"), points=grid_points(3))
    manager = EpisodeManager(world, ["car"], SpawnChooser(choice="cycle", min_separation=0.0),
                             spawn_entries=["2"])
    assert manager.reset("car").start.pose == grid_points(3)[2]
    world.name, world.points = "Carla/Maps/Town02", [CarlaPose(7.0 * i, 1.0, 0.3) for i in range(3)]
    assert manager.reset("car").start.pose == CarlaPose(14.0, 1.0, 0.3)
    world.points = [CarlaPose(0, 0, 0)]
    world.name = "Carla/Maps/Town03"
    with pytest.raises(SpawnPointError, match="index 2 is out of range: this map has 1"):
        manager.reset("car")


# --- the carla side, with the real carla package -----------------------------------------------------

def test_the_reset_batch_teleports_zeroes_both_velocities_and_brakes_with_real_carla_commands():
    pose = CarlaPose(12.0, -3.0, 0.6, 0.0, 0.0, 45.0)
    commands = cc.reset_commands(carla, 42, pose)
    kinds = [type(c).__name__ for c in commands]
    assert kinds == ["ApplyTransform", "ApplyTargetVelocity", "ApplyTargetAngularVelocity",
                     "ApplyVehicleControl"]
    assert all(c.actor_id == 42 for c in commands)
    assert isinstance(commands[0], carla.command.ApplyTransform)
    t = commands[0].transform
    assert (t.location.x, t.location.y, t.location.z, t.rotation.yaw) == pytest.approx(
        (12.0, -3.0, 0.6, 45.0))
    assert commands[1].velocity == carla.Vector3D(0.0, 0.0, 0.0)
    assert commands[2].angular_velocity == carla.Vector3D(0.0, 0.0, 0.0)
    control = commands[3].control
    assert (control.throttle, control.steer, control.brake, control.hand_brake) == (0.0, 0.0, 1.0, False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_a_clear_error_after_the_timeout():
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(CarlaUnavailable) as info:
        cc.connect("127.0.0.1", port, 0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    text = str(info.value)
    assert f"CARLA server at 127.0.0.1:{port} did not answer within 0.5 s" in text
    assert "time-out" in text  # carla's own words are kept
    assert "Is the server running" in text


def test_version_comparison():
    assert cc.version_triplet("0.9.15") == (0, 9, 15)
    assert cc.version_triplet("0.9.15-1-g1234abc-dirty") == (0, 9, 15)
    assert cc.check_versions("0.9.15", "0.9.15-dirty") is None
    with pytest.raises(CarlaVersionMismatch,
                       match=r"client 0.9.16 does not match CARLA server 0.9.15.*carla==0.9.15"):
        cc.check_versions("0.9.16", "0.9.15")
    warning = cc.check_versions("0.9.16", "0.9.15", allow_mismatch=True)
    assert warning and "allow_version_mismatch" in warning


class _FakeClient:
    """Stands in for carla.Client where the real one needs a server; reports the REAL client
    version of the installed carla package."""

    server_version = "0.9.15"

    def __init__(self, host, port):
        self._real = carla.Client(host, port)
        self.timeout = None
        self.world = None
        self.batches: list = []
        self.batch_errors: list[str] = []

    def set_timeout(self, seconds):
        self.timeout = seconds

    def get_server_version(self):
        return self.server_version

    def get_client_version(self):
        return self._real.get_client_version()

    def get_world(self):
        return self.world

    def apply_batch_sync(self, commands, do_tick):
        assert do_tick is False  # the bridge ticks the world, never us
        self.batches.append(commands)
        return [_Response(e) for e in self.batch_errors] or [_Response("") for _ in commands]


class _Response:
    def __init__(self, error: str):
        self.error = error

    def has_error(self):
        return bool(self.error)


class _FakeCarla:
    """The real carla module, except Client."""

    def __init__(self, client_cls):
        self._client_cls = client_cls

    def __getattr__(self, name):
        if name == "Client":
            return self._client_cls
        return getattr(carla, name)


def test_a_client_server_version_mismatch_refuses_to_connect():
    real_version = carla.Client("127.0.0.1", 1).get_client_version()  # no server needed
    assert cc.version_triplet(real_version) is not None

    class OtherServer(_FakeClient):
        server_version = "0.9.14" if cc.version_triplet(real_version) != (0, 9, 14) else "0.9.13"

    fake = _FakeCarla(OtherServer)
    with pytest.raises(CarlaVersionMismatch) as info:
        cc.connect("127.0.0.1", 2000, 1.0, carla_module=fake)
    assert real_version in str(info.value)
    conn = cc.connect("127.0.0.1", 2000, 1.0, allow_version_mismatch=True, carla_module=fake)
    assert conn.warning and conn.client_version == real_version and conn.client.timeout == 1.0


class _Actor:
    def __init__(self, actor_id, role, x, y):
        self.id = actor_id
        self.attributes = {"role_name": role} if role is not None else {}
        self._location = carla.Location(x=x, y=y, z=0.0)

    def get_location(self):
        return self._location


class _Actors(list):
    def filter(self, pattern):
        assert pattern == "vehicle.*"
        return self


class _Map:
    def __init__(self, name, transforms):
        self.name = name
        self._transforms = transforms

    def get_spawn_points(self):
        return self._transforms


class _World:
    def __init__(self, world_id, carla_map, actors):
        self.id = world_id
        self._map = carla_map
        self._actors = actors
        self.map_calls = 0

    def get_map(self):
        self.map_calls += 1
        return self._map

    def get_actors(self):
        return self._actors


def test_carla_world_reads_spawn_points_and_vehicles_and_teleports_in_one_batch():
    class Client(_FakeClient):
        server_version = None  # set below to the real client version: versions agree

    Client.server_version = carla.Client("127.0.0.1", 1).get_client_version()
    conn = cc.connect("127.0.0.1", 2000, 2.0, carla_module=_FakeCarla(Client))
    transforms = [carla.Transform(carla.Location(x=10.0 * i, y=5.0, z=0.3), carla.Rotation(yaw=90.0))
                  for i in range(4)]
    world = _World(1, _Map("Carla/Maps/Town01", transforms),
                   _Actors([_Actor(7, "ego_vehicle", 1.0, 2.0), _Actor(8, None, 50.0, 0.0)]))
    conn.client.world = world
    cw = cc.CarlaWorld(conn)
    assert cw.map_name() == "Carla/Maps/Town01"
    p2 = cw.spawn_points()[2]
    assert (p2.x, p2.y, p2.z, p2.roll, p2.pitch, p2.yaw) == pytest.approx((20.0, 5.0, 0.3, 0.0, 0.0, 90.0))
    assert cw.vehicles() == [VehicleState(7, "ego_vehicle", 1.0, 2.0), VehicleState(8, "", 50.0, 0.0)]
    cw.map_name()
    assert world.map_calls == 1  # same world: the map is not downloaded again

    manager = EpisodeManager(cw, ["ego_vehicle"], SpawnChooser(seed=0, min_separation=5.0))
    result = manager.reset("ego_vehicle")
    (batch,) = conn.client.batches
    assert [type(c).__name__ for c in batch][0] == "ApplyTransform" and batch[0].actor_id == 7
    assert batch[0].transform.location.x == pytest.approx(result.start.pose.x)

    conn.client.batch_errors = ["actor 7 not found"]
    with pytest.raises(ResetFailed, match="CARLA refused the reset of actor 7: actor 7 not found"):
        cw.teleport(7, result.start.pose)

    def lost():
        raise RuntimeError("time-out of 2000ms while waiting for the simulator")

    conn.client.get_world = lost
    with pytest.raises(CarlaUnavailable, match="did not answer within 2 s"):
        manager.reset("ego_vehicle")


def test_carla_is_optional_at_import_time():
    code = (
        "import sys; sys.modules['carla'] = None\n"  # makes `import carla` fail
        "import av_td3_ros.episodes, av_td3_ros.episodes.carla_client, av_td3_ros.episodes.fleet\n"
        "import av_td3_ros.nodes.episode_manager\n"
        "from av_td3_ros.episodes.carla_client import connect\n"
        "from av_td3_ros.episodes import CarlaNotInstalled\n"
        "try:\n    connect('127.0.0.1', 2000, 1.0)\nexcept CarlaNotInstalled as e:\n    print('OK', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK the `carla` Python client is not installed")
    code = ("import sys, av_td3_ros.episodes.carla_client, av_td3_ros.nodes.episode_manager\n"
            "print('carla' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_import_carla_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "carla", None)
    with pytest.raises(CarlaNotInstalled, match="pip install carla==<server version>"):
        cc.import_carla()


# --- the ROS node ------------------------------------------------------------------------------------

def _spin_until(executor, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def _call(executor, client, timeout=10.0):
    from std_srvs.srv import Trigger

    assert _spin_until(executor, client.service_is_ready, timeout), "service not available"
    future = client.call_async(Trigger.Request())
    assert _spin_until(executor, future.done, timeout)
    return future.result()


def test_the_node_resets_over_its_trigger_service_and_republishes_the_goal(rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from av_td3_ros.nodes.episode_manager import EpisodeManagerNode, WorldConnection

    world = FakeWorld(cars("ego_vehicle"))
    node = EpisodeManagerNode(
        world_factory=lambda: WorldConnection(world, "0.9.15", "0.9.15"),
        context=rclpy_context,
        parameter_overrides=[Parameter("seed", value=3), Parameter("min_goal_distance", value=50.0)],
    )
    probe = Node("probe", context=rclpy_context)
    goals, diags = [], []
    probe.create_subscription(PoseStamped, "/carla/ego_vehicle/goal", goals.append, 10)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    client = probe.create_client(Trigger, "/av_td3/reset_episode")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    executor.add_node(probe)
    try:
        response = _call(executor, client)
        assert response.success, response.message
        assert response.message.startswith("ego_vehicle: episode 1 starts at map spawn point")
        assert _spin_until(executor, lambda: goals)
        goal = goals[0]
        assert goal.header.frame_id == "map"
        start = world.calls[-1][2]
        gx, gy = goal.pose.position.x, goal.pose.position.y
        assert math.hypot(gx - start.x, -gy - start.y) >= 50.0  # ROS y = -CARLA y
        q = goal.pose.orientation
        assert q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 == pytest.approx(1.0)
        assert _spin_until(executor, lambda: any(
            s.name.startswith("episode_manager") for d in diags for s in d.status))
        status = [s for d in diags for s in d.status if s.name.startswith("episode_manager")][-1]
        assert status.level == DiagnosticStatus.OK
        assert {kv.key: kv.value for kv in status.values}["ego_vehicle.resets"] == "1"
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()


def test_the_goal_waits_for_the_next_clock_tick_after_the_teleport(rclpy_context):
    # the waypoint publisher plans from the car's location as of the last tick: a goal sent before
    # the world ticked would be planned from the old position
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock
    from std_srvs.srv import Trigger

    from av_td3_ros.nodes.episode_manager import EpisodeManagerNode, WorldConnection

    world = FakeWorld(cars("ego_vehicle"))
    node = EpisodeManagerNode(
        world_factory=lambda: WorldConnection(world, "0.9.15", "0.9.15"), context=rclpy_context,
        parameter_overrides=[Parameter("use_sim_time", value=True), Parameter("goal_delay_max", value=60.0)],
    )
    probe = Node("probe", context=rclpy_context)
    clock_pub = probe.create_publisher(Clock, "/clock", 10)
    goals = []
    probe.create_subscription(PoseStamped, "/carla/ego_vehicle/goal", goals.append, 10)
    client = probe.create_client(Trigger, "/av_td3/reset_episode")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    executor.add_node(probe)

    def tick(ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(ns, 10**9)
        clock_pub.publish(msg)

    try:
        assert _spin_until(executor, lambda: clock_pub.get_subscription_count() > 0)
        tick(10 * 10**9)
        assert _spin_until(executor, lambda: node.get_clock().now().nanoseconds == 10 * 10**9)
        assert _call(executor, client).success
        assert not _spin_until(executor, lambda: goals, timeout=0.5)  # no tick yet: no goal
        tick(10 * 10**9 + 50_000_000)
        assert _spin_until(executor, lambda: goals)
        stamp = goals[0].header.stamp
        assert (stamp.sec, stamp.nanosec) == (10, 50_000_000)
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()


def test_the_node_answers_failure_with_the_reason_while_carla_is_unreachable(rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from av_td3_ros.nodes.episode_manager import EpisodeManagerNode

    attempts = []

    def unreachable():
        attempts.append(1)
        raise CarlaUnavailable("carla", 2000, 10.0, "time-out of 10000ms while waiting for the simulator")

    node = EpisodeManagerNode(
        world_factory=unreachable, context=rclpy_context,
        parameter_overrides=[Parameter("role_names", value=["hero0", "hero1"]),
                             Parameter("reset_service", value="/av_td3/{role_name}/reset_episode")],
    )
    probe = Node("probe", context=rclpy_context)
    diags = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    executor.add_node(probe)
    try:
        for role in ("hero0", "hero1"):
            response = _call(executor, probe.create_client(Trigger, f"/av_td3/{role}/reset_episode"))
            assert not response.success
            assert "CARLA server at carla:2000 did not answer" in response.message
        assert len(attempts) >= 2  # each reset tries to connect again
        assert _spin_until(executor, lambda: any(
            s.level == DiagnosticStatus.ERROR and "did not answer" in s.message
            for d in diags for s in d.status))
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()


def test_the_node_refuses_ambiguous_service_names_for_several_cars(rclpy_context):
    from rclpy.parameter import Parameter

    from av_td3_ros.nodes.episode_manager import EpisodeManagerNode
    from av_td3_ros.ros.parameters import InvalidParameter

    with pytest.raises(InvalidParameter, match="reset_service.*must contain \\{role_name\\}"):
        EpisodeManagerNode(world_factory=lambda: None, context=rclpy_context,
                           parameter_overrides=[Parameter("role_names", value=["hero0", "hero1"])])
    with pytest.raises(SpawnPointError):
        EpisodeManagerNode(world_factory=lambda: None, context=rclpy_context,
                           parameter_overrides=[Parameter("spawn_points", value=["somewhere"])])


# --- with a CARLA server (skipped here) ----------------------------------------------------------

@carla_server
def test_server_versions_agree_and_the_map_has_spawn_points():
    host, port = CARLA_SERVER.rsplit(":", 1)
    conn = cc.connect(host, int(port), 20.0)
    assert conn.warning is None
    world = cc.CarlaWorld(conn)
    assert world.map_name() and len(world.spawn_points()) > 0


@carla_server
def test_server_teleport_moves_a_vehicle_and_stops_it():
    host, port = CARLA_SERVER.rsplit(":", 1)
    conn = cc.connect(host, int(port), 20.0)
    carla_world = conn.client.get_world()
    blueprint = carla_world.get_blueprint_library().find("vehicle.tesla.model3")
    blueprint.set_attribute("role_name", "av_td3_test")
    points = carla_world.get_map().get_spawn_points()
    actor = carla_world.try_spawn_actor(blueprint, points[0])
    assert actor is not None, "spawn point 0 is occupied"
    try:
        world = cc.CarlaWorld(conn)
        manager = EpisodeManager(world, ["av_td3_test"], SpawnChooser(choice="cycle", min_separation=0.0),
                                 spawn_entries=[str(len(points) - 1)])
        result = manager.reset("av_td3_test")
        if carla_world.get_settings().synchronous_mode:
            carla_world.tick()
        else:
            carla_world.wait_for_tick()
        location = actor.get_location()
        assert math.hypot(location.x - result.start.pose.x, location.y - result.start.pose.y) < 1.0
        assert actor.get_velocity().length() < 0.5
    finally:
        actor.destroy()
