"""episode_manager: the reset service(s) the policy nodes call, on the `carla` Python client.

For each managed car (role name) it offers a std_srvs/Trigger service; a call teleports the car
to a start point (random or from a list, seeded), zeroes its velocity, and re-publishes a goal on
/carla/<role>/goal so the bridge's waypoint publisher replans the route (the new route arrives
on the latched /carla/<role>/waypoints). The reset logic lives in av_td3_ros.episodes; this node
only translates parameters, services, topics and timers.

The goal goes out at the first clock tick AFTER the teleport (or after `goal_delay_max` wall
seconds): the waypoint publisher plans from the car's location as its carla client last saw it,
which is the old one until the world has ticked.

It keeps running when CARLA is not there yet: it retries the connection on a wall-clock timer
(the node may use sim time, whose /clock only ticks once the bridge runs), answers resets with
success=false and the reason, and reports the connection on /diagnostics (rqt_robot_monitor).

Run: ros2 run av_td3_ros episode_manager --ros-args -p host:=localhost -p role_names:="['hero0','hero1']"
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from functools import partial

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.time import Time
from std_srvs.srv import Trigger

from av_td3_ros.episodes import (
    ALL_POINTS,
    SPAWN_CHOICES,
    CarlaUnavailable,
    EpisodeError,
    EpisodeManager,
    ResetResult,
    SpawnChooser,
    WorldPort,
    validate_entries,
)
from av_td3_ros.episodes.fleet import DEFAULT_ROLE, GOAL_TOPIC_TEMPLATE, SINGLE_RESET_SERVICE
from av_td3_ros.ros.parameters import InvalidParameter, ParameterSpec, declare_parameters

__all__ = ["EPISODE_MANAGER_PARAMETERS", "EpisodeManagerNode", "WorldConnection", "main"]

NODE_NAME = "episode_manager"

EPISODE_MANAGER_PARAMETERS = [
    ParameterSpec("host", "localhost", "CARLA server host"),
    ParameterSpec("port", 2000, "CARLA server RPC port", min=1, max=65535),
    ParameterSpec("timeout", 10.0, "seconds the carla client waits for each server call", min=0.1),
    ParameterSpec("town", "", "map the server must run, e.g. Town01 ('' = whatever is loaded); "
                  "a reset on another map fails with a clear message"),
    ParameterSpec("allow_version_mismatch", False,
                  "connect even when the carla client and server versions differ (not advised)"),
    ParameterSpec("role_names", [DEFAULT_ROLE], "role names of the cars this node resets "
                  "(objects.json ids; hero0..heroN for several cars)"),
    ParameterSpec("reset_service", SINGLE_RESET_SERVICE,
                  "std_srvs/Trigger reset service; with several role names it must contain "
                  "{role_name}, e.g. /av_td3/{role_name}/reset_episode"),
    ParameterSpec("goal_topic", GOAL_TOPIC_TEMPLATE,
                  "geometry_msgs/PoseStamped goal re-published after each reset ({role_name} is "
                  "replaced; the bridge's carla_waypoint_publisher listens on /carla/<role>/goal)"),
    ParameterSpec("spawn_points", [ALL_POINTS], "start points: map spawn point indices ('12') or "
                  "'x,y,z,roll,pitch,yaw' (ROS map frame, m, deg); ['all'] = every spawn point of "
                  "the map"),
    ParameterSpec("spawn_choice", "random", "how a start point is picked from the list",
                  choices=SPAWN_CHOICES),
    ParameterSpec("goal_points", [ALL_POINTS], "goal points, same format; ['all'] = every spawn "
                  "point of the map"),
    ParameterSpec("seed", 0, "seed of the start and goal choices (each car has its own stream)",
                  min=0),
    ParameterSpec("min_separation", 10.0, "metres between a new start point and any other vehicle",
                  min=0.0),
    ParameterSpec("min_goal_distance", 100.0, "minimum straight-line metres from start to goal",
                  min=0.0),
    ParameterSpec("reconnect_period", 5.0, "wall-clock seconds between connection attempts",
                  min=0.1),
    ParameterSpec("goal_delay_max", 2.0, "wall-clock seconds to wait for the clock to tick after a "
                  "teleport before the goal is published anyway", min=0.0),
]


class WorldConnection:
    """What a world factory returns: the WorldPort plus what to report about the connection."""

    def __init__(self, world: WorldPort, client_version: str = "", server_version: str = "",
                 warning: str | None = None) -> None:
        self.world = world
        self.client_version = client_version
        self.server_version = server_version
        self.warning = warning


def carla_world_factory(host: str, port: int, timeout: float, allow_version_mismatch: bool
                        ) -> Callable[[], WorldConnection]:
    def factory() -> WorldConnection:
        from av_td3_ros.episodes.carla_client import CarlaWorld, connect

        conn = connect(host, port, timeout, allow_version_mismatch=allow_version_mismatch)
        return WorldConnection(CarlaWorld(conn), conn.client_version, conn.server_version, conn.warning)

    return factory


class EpisodeManagerNode(Node):
    def __init__(self, world_factory: Callable[[], WorldConnection] | None = None, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, EPISODE_MANAGER_PARAMETERS)
        self.p = p
        roles = list(p.role_names)
        if not roles or len(set(roles)) != len(roles) or any(not r for r in roles):
            raise InvalidParameter("role_names", roles, "must be distinct, non-empty role names")
        if len(roles) > 1 and "{role_name}" not in p.reset_service:
            raise InvalidParameter("reset_service", p.reset_service,
                                   "must contain {role_name} when several role_names are managed")
        if len(roles) > 1 and "{role_name}" not in p.goal_topic:
            raise InvalidParameter("goal_topic", p.goal_topic,
                                   "must contain {role_name} when several role_names are managed")
        validate_entries(p.spawn_points, "spawn_points")
        validate_entries(p.goal_points, "goal_points")
        self.roles = roles
        self._factory = world_factory or carla_world_factory(p.host, p.port, p.timeout,
                                                             p.allow_version_mismatch)
        self._chooser = SpawnChooser(choice=p.spawn_choice, seed=p.seed,
                                     min_separation=p.min_separation,
                                     min_goal_distance=p.min_goal_distance)
        self._connection: WorldConnection | None = None
        self._manager: EpisodeManager | None = None
        self._last_error = "not connected yet"
        self._failures: dict[str, int] = {r: 0 for r in roles}

        self._goal_pubs = {
            r: self.create_publisher(PoseStamped, p.goal_topic.format(role_name=r), 10) for r in roles
        }
        self._services = [
            self.create_service(Trigger, p.reset_service.format(role_name=r), partial(self._on_reset, r))
            for r in roles
        ]
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._pending_goals: dict[str, tuple[PoseStamped, Time, float]] = {}
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self._goal_timer = self.create_timer(0.02, self._flush_goals, clock=wall)
        self._reconnect_timer = self.create_timer(p.reconnect_period, self._on_reconnect_timer, clock=wall)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, clock=wall)
        self.get_logger().info(
            f"resetting {roles} on CARLA {p.host}:{p.port}; services "
            f"{[p.reset_service.format(role_name=r) for r in roles]}"
        )

    # -- connection -------------------------------------------------------------------------
    def _ensure_manager(self) -> EpisodeManager:
        if self._manager is None:
            conn = self._factory()
            if conn.warning:
                self.get_logger().warning(conn.warning)
            self._connection = conn
            self._manager = EpisodeManager(
                conn.world, self.roles, self._chooser, spawn_entries=list(self.p.spawn_points),
                goal_entries=list(self.p.goal_points), town=self.p.town,
            )
            self._last_error = ""
            self.get_logger().info(
                f"connected to CARLA {conn.server_version or '?'} (client {conn.client_version or '?'})"
            )
        return self._manager

    def _drop_connection(self) -> None:
        self._manager = None
        self._connection = None

    def _on_reconnect_timer(self) -> None:
        if self._manager is not None:
            return
        try:
            self._ensure_manager()
        except EpisodeError as exc:
            if str(exc) != self._last_error:
                self.get_logger().error(str(exc))
            self._last_error = str(exc)

    # -- reset --------------------------------------------------------------------------------
    def reset(self, role: str) -> ResetResult:
        """The reset sequence for one car, then the goal; raises EpisodeError."""
        try:
            result = self._ensure_manager().reset(role)
        except CarlaUnavailable:
            self._drop_connection()
            raise
        self._publish_goal(result)
        return result

    def _publish_goal(self, result: ResetResult) -> None:
        """Queue the goal; `_flush_goals` sends it once the (sim) clock has moved on."""
        msg = PoseStamped()
        msg.header.frame_id = "map"
        x, y, z = result.goal.pose.ros_position()
        qx, qy, qz, qw = result.goal.pose.ros_orientation()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = x, y, z
        msg.pose.orientation.x, msg.pose.orientation.y = qx, qy
        msg.pose.orientation.z, msg.pose.orientation.w = qz, qw
        self._pending_goals[result.role_name] = (msg, self.get_clock().now(), time.monotonic())

    def _flush_goals(self) -> None:
        now = self.get_clock().now()
        for role, (msg, reset_at, wall_at) in list(self._pending_goals.items()):
            if now > reset_at or time.monotonic() - wall_at >= self.p.goal_delay_max:
                msg.header.stamp = now.to_msg()
                self._goal_pubs[role].publish(msg)
                del self._pending_goals[role]

    def _on_reset(self, role: str, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            result = self.reset(role)
        except EpisodeError as exc:
            self._failures[role] += 1
            self._last_error = str(exc)
            self.get_logger().error(f"reset of {role} failed: {exc}")
            response.success = False
            response.message = str(exc)
            return response
        except Exception as exc:  # never let an exception escape a service callback
            self._failures[role] += 1
            self._last_error = f"unexpected {type(exc).__name__}: {exc}"
            self.get_logger().error(f"reset of {role} failed unexpectedly:\n{traceback.format_exc()}")
            response.success = False
            response.message = self._last_error
            return response
        self.get_logger().info(result.message)
        response.success = True
        response.message = result.message
        return response

    # -- diagnostics ----------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: CARLA connection"
        status.hardware_id = f"carla:{self.p.host}:{self.p.port}"
        conn = self._connection
        if self._manager is not None and conn is not None:
            status.level = DiagnosticStatus.WARN if conn.warning else DiagnosticStatus.OK
            status.message = conn.warning or f"connected to CARLA {conn.server_version}"
        else:
            status.level = DiagnosticStatus.ERROR
            status.message = self._last_error or "not connected"
        manager = self._manager
        values = [
            KeyValue(key="server_version", value=conn.server_version if conn else ""),
            KeyValue(key="client_version", value=conn.client_version if conn else ""),
            KeyValue(key="last_error", value=self._last_error),
        ]
        for r in self.roles:
            episodes = manager.episodes.get(r, 0) if manager else 0
            values.append(KeyValue(key=f"{r}.resets", value=str(episodes)))
            values.append(KeyValue(key=f"{r}.failed_resets", value=str(self._failures[r])))
        status.values = values
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    try:
        node = EpisodeManagerNode()
    except (InvalidParameter, EpisodeError) as exc:
        print(f"{NODE_NAME}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.exit(2)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
