"""Episode management for CARLA: where a car starts, where its route goes, and the reset
sequence (teleport, zero velocity, new goal). Pure logic; `carla` is imported lazily and only by
`carla_client`. `fleet` names the cars and writes the bridge's objects file for N cars.
"""

from .errors import (
    CarlaNotInstalled,
    CarlaUnavailable,
    CarlaVersionMismatch,
    EgoNotFound,
    EpisodeError,
    ResetFailed,
    SpawnPointError,
    WrongMap,
)
from .manager import EpisodeManager, ResetResult, VehicleState, WorldPort
from .poses import CarlaPose, parse_pose, quaternion_from_rpy
from .spawn import ALL_POINTS, SPAWN_CHOICES, Candidate, SpawnChooser, resolve_points, validate_entries

__all__ = [
    "ALL_POINTS",
    "SPAWN_CHOICES",
    "Candidate",
    "CarlaNotInstalled",
    "CarlaPose",
    "CarlaUnavailable",
    "CarlaVersionMismatch",
    "EgoNotFound",
    "EpisodeError",
    "EpisodeManager",
    "ResetFailed",
    "ResetResult",
    "SpawnChooser",
    "SpawnPointError",
    "VehicleState",
    "WorldPort",
    "WrongMap",
    "parse_pose",
    "quaternion_from_rpy",
    "resolve_points",
    "validate_entries",
]
