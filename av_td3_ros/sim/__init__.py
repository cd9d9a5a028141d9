"""Embedded simulator: highway-env racetrack-v1 behind CARLA-like signals (no ROS in here)."""

import os

# Before highway-env (and so pygame) is imported by any module of this package. highway-env's
# EnvViewer stops drawing under SDL's "dummy" driver (every frame black); "offscreen" draws headless.
# Our own renderer does not use pygame, but anything else in the process that opens an EnvViewer
# then gets a working default. A value the user set is respected.
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's import banner pollutes CLI output

# ruff: noqa: E402

from av_td3_ros.sim.follower import Control, WaypointFollower
from av_td3_ros.sim.simulator import (
    EGO_ACTOR_ID,
    ENV_ID,
    LANE_MARKING_BROKEN,
    LANE_MARKING_OTHER,
    LANE_MARKING_SOLID,
    EmbeddedSimulator,
    SimConfig,
    SimState,
)

__all__ = [
    "EGO_ACTOR_ID",
    "ENV_ID",
    "LANE_MARKING_BROKEN",
    "LANE_MARKING_OTHER",
    "LANE_MARKING_SOLID",
    "Control",
    "EmbeddedSimulator",
    "SimConfig",
    "SimState",
    "WaypointFollower",
]
