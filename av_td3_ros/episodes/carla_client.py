"""The episode manager's side of the `carla` Python client. `carla` is imported lazily, inside
functions: the rest of av_td3_ros (and this package's pure logic) runs without it.

Error paths turn into EpisodeError subclasses with a clear message:
- no `carla` module                   -> CarlaNotInstalled
- server unreachable / time-out       -> CarlaUnavailable (carla raises RuntimeError
                                         "time-out of 2000ms while waiting for the simulator...")
- client and server versions differ   -> CarlaVersionMismatch (or a warning when allowed)
- CARLA refuses a reset command       -> ResetFailed
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import CarlaNotInstalled, CarlaUnavailable, CarlaVersionMismatch, ResetFailed
from .manager import VehicleState
from .poses import CarlaPose

__all__ = [
    "CarlaConnection",
    "CarlaWorld",
    "check_versions",
    "connect",
    "import_carla",
    "reset_commands",
    "version_triplet",
]

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def import_carla():
    """The carla module, or CarlaNotInstalled."""
    try:
        import carla
    except ImportError as exc:
        raise CarlaNotInstalled(str(exc)) from None
    return carla


def version_triplet(text: str) -> tuple[int, int, int] | None:
    """'0.9.15' / '0.9.15-dirty' / '0.9.15.post1' -> (0, 9, 15); None if there is none."""
    match = _VERSION.search(str(text))
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def check_versions(client_version: str, server_version: str, allow_mismatch: bool = False) -> str | None:
    """None when the versions agree (major.minor.patch); a warning text when they differ and
    `allow_mismatch`; CarlaVersionMismatch otherwise."""
    c, s = version_triplet(client_version), version_triplet(server_version)
    same = c == s if (c is not None and s is not None) else client_version == server_version
    if same:
        return None
    error = CarlaVersionMismatch(client_version, server_version)
    if allow_mismatch:
        return f"connecting anyway (allow_version_mismatch): {error}"
    raise error


@dataclass
class CarlaConnection:
    client: Any
    carla: Any
    host: str
    port: int
    timeout: float
    client_version: str
    server_version: str
    warning: str | None = None


def connect(host: str, port: int, timeout: float, *, allow_version_mismatch: bool = False,
            carla_module: Any = None) -> CarlaConnection:
    """Connect and compare versions. With no server, carla raises RuntimeError after `timeout`
    seconds; that becomes CarlaUnavailable naming host, port and what to check."""
    carla = carla_module if carla_module is not None else import_carla()
    try:
        client = carla.Client(host, int(port))
        client.set_timeout(float(timeout))
        server_version = client.get_server_version()
    except RuntimeError as exc:
        raise CarlaUnavailable(host, int(port), float(timeout), str(exc)) from None
    client_version = client.get_client_version()
    warning = check_versions(client_version, server_version, allow_version_mismatch)
    return CarlaConnection(client, carla, host, int(port), float(timeout), client_version,
                           server_version, warning)


def reset_commands(carla: Any, actor_id: int, pose: CarlaPose) -> list:
    """One batch, applied at the same tick: teleport, zero linear and angular velocity, brake."""
    zero = carla.Vector3D(0.0, 0.0, 0.0)
    return [
        carla.command.ApplyTransform(actor_id, pose.to_transform(carla)),
        carla.command.ApplyTargetVelocity(actor_id, zero),
        carla.command.ApplyTargetAngularVelocity(actor_id, zero),
        carla.command.ApplyVehicleControl(
            actor_id,
            carla.VehicleControl(throttle=0.0, steer=0.0, brake=1.0, hand_brake=False, reverse=False,
                                 manual_gear_shift=False),
        ),
    ]


@dataclass
class CarlaWorld:
    """WorldPort on a live CARLA connection. The world handle is fetched again at each reset
    (`map_name`), because the bridge may load another town after we connected."""

    connection: CarlaConnection
    _world: Any = field(default=None, init=False, repr=False)
    _world_id: Any = field(default=None, init=False, repr=False)
    _map_name: str = field(default="", init=False, repr=False)
    _spawn_points: list[CarlaPose] = field(default_factory=list, init=False, repr=False)

    def _unavailable(self, exc: RuntimeError) -> CarlaUnavailable:
        c = self.connection
        return CarlaUnavailable(c.host, c.port, c.timeout, str(exc))

    def _refresh(self) -> None:
        try:
            world = self.connection.client.get_world()
            if world.id != self._world_id:
                carla_map = world.get_map()
                self._map_name = carla_map.name
                self._spawn_points = [CarlaPose.from_transform(t) for t in carla_map.get_spawn_points()]
                self._world_id = world.id
            self._world = world
        except RuntimeError as exc:
            raise self._unavailable(exc) from None

    def map_name(self) -> str:
        self._refresh()
        return self._map_name

    def spawn_points(self) -> list[CarlaPose]:
        if self._world is None:
            self._refresh()
        return list(self._spawn_points)

    def vehicles(self) -> list[VehicleState]:
        if self._world is None:
            self._refresh()
        try:
            out = []
            for actor in self._world.get_actors().filter("vehicle.*"):
                location = actor.get_location()
                role = actor.attributes.get("role_name", "")
                out.append(VehicleState(int(actor.id), str(role), float(location.x), float(location.y)))
            return out
        except RuntimeError as exc:
            raise self._unavailable(exc) from None

    def teleport(self, actor_id: int, pose: CarlaPose) -> None:
        commands = reset_commands(self.connection.carla, actor_id, pose)
        try:
            responses = self.connection.client.apply_batch_sync(commands, False)
        except RuntimeError as exc:
            raise self._unavailable(exc) from None
        errors = [str(r.error) for r in responses if r.has_error()]
        if errors:
            raise ResetFailed(f"CARLA refused the reset of actor {actor_id}: {'; '.join(errors)}")
