"""The reset sequence, independent of how the world is reached (no carla, no rclpy).

A reset of car `role`:
  1. look the car up by its role name among the world's vehicles (EgoNotFound if absent);
  2. choose a start point away from every other vehicle (seeded; random or cycling);
  3. teleport it there with zero linear and angular velocity and the brake on, in ONE batch
     applied at the same tick - teleporting instead of respawning, because respawning the ego
     again and again has crashed the CARLA ROS bridge (and it re-creates every sensor);
  4. choose a goal and return it: the caller re-publishes it on /carla/<role>/goal so the
     waypoint publisher replans (it also replans by itself when the car moved > 2 m, but not
     when the new start is near the old position).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import EgoNotFound, EpisodeError, WrongMap
from .poses import CarlaPose
from .spawn import Candidate, SpawnChooser, resolve_points, validate_entries

__all__ = ["EpisodeManager", "ResetResult", "VehicleState", "WorldPort"]


@dataclass(frozen=True)
class VehicleState:
    actor_id: int
    role_name: str
    x: float
    y: float


class WorldPort(Protocol):
    """What the reset sequence needs from a simulator (CarlaWorld implements it on carla)."""

    def map_name(self) -> str: ...

    def spawn_points(self) -> list[CarlaPose]: ...

    def vehicles(self) -> list[VehicleState]: ...

    def teleport(self, actor_id: int, pose: CarlaPose) -> None: ...


@dataclass(frozen=True)
class ResetResult:
    role_name: str
    episode: int
    start: Candidate
    goal: Candidate

    @property
    def message(self) -> str:
        return (f"{self.role_name}: episode {self.episode} starts at {self.start.label} "
                f"({self.start.pose.describe()}), goal {self.goal.label}")


@dataclass
class EpisodeManager:
    world: WorldPort
    role_names: Sequence[str]
    chooser: SpawnChooser
    spawn_entries: Sequence[str] = ()
    goal_entries: Sequence[str] = ()
    town: str = ""
    episodes: dict[str, int] = field(default_factory=dict)
    _points_for: str | None = field(default=None, init=False, repr=False)
    _starts: list[Candidate] = field(default_factory=list, init=False, repr=False)
    _goals: list[Candidate] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.role_names:
            raise EpisodeError("no role names to manage")
        if len(set(self.role_names)) != len(self.role_names):
            raise EpisodeError(f"role names repeat: {list(self.role_names)}")
        validate_entries(self.spawn_entries, "spawn_points")
        validate_entries(self.goal_entries, "goal_points")

    def _refresh_points(self) -> None:
        """(Re)resolve the lists against the map actually loaded (the bridge may load the town
        after we connected, so the map is checked at every reset; resolving is cached per map)."""
        name = self.world.map_name()
        if self.town and name.rsplit("/", 1)[-1] != self.town.rsplit("/", 1)[-1]:
            raise WrongMap(name, self.town)
        if name != self._points_for:
            map_points = self.world.spawn_points()
            self._starts = resolve_points(self.spawn_entries, map_points, "spawn_points")
            self._goals = resolve_points(self.goal_entries, map_points, "goal_points")
            self._points_for = name

    def reset(self, role_name: str) -> ResetResult:
        if role_name not in self.role_names:
            raise EpisodeError(f"'{role_name}' is not managed here (managed: {list(self.role_names)})")
        self._refresh_points()
        vehicles = self.world.vehicles()
        mine = [v for v in vehicles if v.role_name == role_name]
        if not mine:
            raise EgoNotFound(role_name, sorted({v.role_name for v in vehicles if v.role_name}))
        if len(mine) > 1:
            raise EpisodeError(
                f"{len(mine)} vehicles have role_name '{role_name}' (actor ids "
                f"{[v.actor_id for v in mine]}): leftovers of an earlier run? Restart the bridge "
                "or destroy them"
            )
        car = mine[0]
        occupied = [(v.x, v.y) for v in vehicles if v.actor_id != car.actor_id]
        start = self.chooser.choose_start(role_name, self._starts, occupied)
        self.world.teleport(car.actor_id, start.pose)
        goal = self.chooser.choose_goal(role_name, start.pose, self._goals)
        self.episodes[role_name] = self.episodes.get(role_name, 0) + 1
        return ResetResult(role_name, self.episodes[role_name], start, goal)
