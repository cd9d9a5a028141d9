"""Errors of the episode manager. Each message says what happened and what to do about it."""

from __future__ import annotations

__all__ = [
    "CarlaNotInstalled",
    "CarlaUnavailable",
    "CarlaVersionMismatch",
    "EgoNotFound",
    "EpisodeError",
    "ResetFailed",
    "SpawnPointError",
    "WrongMap",
]


class EpisodeError(RuntimeError):
    """Base class: a reset could not be done. The message is meant for a human (and for the
    std_srvs/Trigger response the policy node logs)."""


class CarlaNotInstalled(EpisodeError):
    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the `carla` Python client is not installed: install the wheel whose version equals the "
            "CARLA server's (the Docker image has carla==0.9.15 for carlasim/carla:0.9.15; "
            "`pip install carla==<server version>`)" + (f" ({detail})" if detail else "")
        )


class CarlaUnavailable(EpisodeError):
    def __init__(self, host: str, port: int, timeout: float, detail: str) -> None:
        super().__init__(
            f"CARLA server at {host}:{port} did not answer within {timeout:g} s ({detail.strip()}). "
            "Is the server running and has it finished loading (the first start takes up to a "
            "minute; `docker compose ps carla`)? Are host and port right?"
        )
        self.host = host
        self.port = port


class CarlaVersionMismatch(EpisodeError):
    def __init__(self, client_version: str, server_version: str) -> None:
        super().__init__(
            f"carla client {client_version} does not match CARLA server {server_version}: "
            f"install carla=={server_version} next to this node (or run the server version the "
            "client was built for); set allow_version_mismatch:=true to connect anyway at your "
            "own risk"
        )
        self.client_version = client_version
        self.server_version = server_version


class WrongMap(EpisodeError):
    def __init__(self, loaded: str, expected: str) -> None:
        super().__init__(
            f"CARLA runs map '{loaded}' but '{expected}' is expected: the bridge loads the town at "
            "start - is it still loading, or was it started with another town?"
        )


class EgoNotFound(EpisodeError):
    def __init__(self, role_name: str, present: list[str]) -> None:
        shown = present if present else "none"
        super().__init__(
            f"no vehicle with role_name '{role_name}' in the CARLA world (vehicles with a role "
            f"name: {shown}); carla_spawn_objects spawns it from objects.json - is it running and "
            "does the vehicle's id equal the role name?"
        )
        self.role_name = role_name


class SpawnPointError(EpisodeError):
    """A spawn-point list entry is malformed, out of range, or no point is free."""


class ResetFailed(EpisodeError):
    """CARLA refused a reset command (the message carries CARLA's error)."""
