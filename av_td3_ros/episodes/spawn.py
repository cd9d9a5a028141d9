"""Choosing where a car starts an episode and where its route goes (no carla, no rclpy).

Entries of a spawn/goal list are either the index of one of the map's spawn points ("12") or an
explicit pose "x,y,z,roll,pitch,yaw" in the ROS map frame (metres, degrees; the bridge's own
`spawn_point` format). ["all"] (or an empty list) means every spawn point of the map.

Choices are reproducible: each car has its own random stream derived from (seed, role name), so
the sequence of start points of `hero1` does not depend on when `hero0` resets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import SpawnPointError
from .poses import CarlaPose, parse_pose

__all__ = ["ALL_POINTS", "Candidate", "SpawnChooser", "resolve_points", "validate_entries", "SPAWN_CHOICES"]

SPAWN_CHOICES = ("random", "cycle")
ALL_POINTS = "all"


@dataclass(frozen=True)
class Candidate:
    """A resolved spawn or goal point: `label` says where it came from (for messages)."""

    label: str
    pose: CarlaPose


def _entry_index(entry: str) -> int | None:
    text = str(entry).strip()
    if text.lstrip("+").isdigit():
        return int(text)
    return None


def _means_all(entries: Sequence[str]) -> bool:
    return not entries or [str(e).strip().lower() for e in entries] == [ALL_POINTS]


def validate_entries(entries: Sequence[str], what: str = "spawn_points") -> None:
    """Raise SpawnPointError for an entry that is neither an index nor a 6-number pose (at start,
    before any map is known)."""
    if _means_all(entries):
        return
    for entry in entries:
        if _entry_index(entry) is not None:
            continue
        try:
            parse_pose(entry)
        except ValueError as exc:
            raise SpawnPointError(
                f"{what}: {exc}; use a map spawn point index like '12' or "
                "'x,y,z,roll,pitch,yaw' (ROS map frame, metres, degrees), or ['all']"
            ) from None


def resolve_points(entries: Sequence[str], map_points: Sequence[CarlaPose],
                   what: str = "spawn_points") -> list[Candidate]:
    """Turn list entries into candidates using the map's spawn points (["all"] or []: all of them)."""
    if _means_all(entries):
        if not map_points:
            raise SpawnPointError(f"{what}: the map has no spawn points; give explicit poses")
        return [Candidate(f"map spawn point {i}", p) for i, p in enumerate(map_points)]
    validate_entries(entries, what)
    out: list[Candidate] = []
    for entry in entries:
        index = _entry_index(entry)
        if index is None:
            out.append(Candidate(f"pose ({entry.strip()})", parse_pose(entry)))
        elif index >= len(map_points):
            raise SpawnPointError(
                f"{what}: index {index} is out of range: this map has {len(map_points)} spawn "
                f"points (0..{len(map_points) - 1})"
            )
        else:
            out.append(Candidate(f"map spawn point {index}", map_points[index]))
    return out


class SpawnChooser:
    """Picks start points (random or cycling through the list) away from other vehicles, and
    goal points at least `min_goal_distance` from the start.

    random: uniform among the free candidates, from the car's own seeded stream.
    cycle:  the candidates in list order, per car, skipping occupied ones.
    """

    def __init__(self, *, choice: str = "random", seed: int = 0, min_separation: float = 10.0,
                 min_goal_distance: float = 100.0) -> None:
        if choice not in SPAWN_CHOICES:
            raise SpawnPointError(f"spawn_choice '{choice}' must be one of {list(SPAWN_CHOICES)}")
        if min_separation < 0 or min_goal_distance < 0:
            raise SpawnPointError("min_separation and min_goal_distance must be >= 0")
        self.choice = choice
        self.seed = int(seed)
        self.min_separation = float(min_separation)
        self.min_goal_distance = float(min_goal_distance)
        self._streams: dict[str, random.Random] = {}
        self._cursor: dict[str, int] = {}

    def _rng(self, role: str, purpose: str) -> random.Random:
        key = f"{purpose}:{role}"
        if key not in self._streams:
            # A str seed is hashed with SHA-512 by random.Random: stable across runs and
            # interpreters (unlike hash(), which is salted per process).
            self._streams[key] = random.Random(f"av_td3_ros:{self.seed}:{purpose}:{role}")
        return self._streams[key]

    def choose_start(self, role: str, candidates: Sequence[Candidate],
                     occupied: Sequence[tuple[float, float]] = ()) -> Candidate:
        """A start point at least `min_separation` metres (x-y) from every occupied position."""
        if not candidates:
            raise SpawnPointError("no spawn point candidates")
        free = [i for i, c in enumerate(candidates)
                if all(c.pose.distance_xy(x, y) >= self.min_separation for x, y in occupied)]
        if not free:
            raise SpawnPointError(
                f"no spawn point is at least {self.min_separation:g} m from the other "
                f"{len(occupied)} vehicle(s) ({len(candidates)} candidates): add spawn points or "
                "lower min_separation"
            )
        if self.choice == "random":
            return candidates[self._rng(role, "start").choice(free)]
        cursor = self._cursor.get(role, 0)
        n = len(candidates)
        for step in range(n):
            index = (cursor + step) % n
            if index in free:
                self._cursor[role] = index + 1
                return candidates[index]
        raise AssertionError("unreachable: free is not empty")  # pragma: no cover

    def choose_goal(self, role: str, start: CarlaPose, candidates: Sequence[Candidate]) -> Candidate:
        """A random goal at least `min_goal_distance` from `start`; the farthest one if none is."""
        if not candidates:
            raise SpawnPointError("no goal point candidates")
        far = [c for c in candidates if c.pose.distance_xy(start.x, start.y) >= self.min_goal_distance]
        rng = self._rng(role, "goal")
        if far:
            return far[rng.randrange(len(far))]
        return max(candidates, key=lambda c: c.pose.distance_xy(start.x, start.y))
