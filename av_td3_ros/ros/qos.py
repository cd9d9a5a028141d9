"""Named QoS profiles for every topic of the system (one place, so publishers and subscribers
on both sides of a topic always agree).

Compatibility reminders (DDS request/offer): a RELIABLE subscription matches only RELIABLE
publishers, a TRANSIENT_LOCAL subscription only TRANSIENT_LOCAL publishers; BEST_EFFORT / VOLATILE
subscriptions match anything. So:
- camera: RELIABLE depth 10 like the CARLA bridge; BEST_EFFORT would let the writer drop most
  1.9 MB frames on default transports (FACTS: 3 of 50 arrived).
- sensor (odometry): RELIABLE depth 10, as the bridge publishes it. It was BEST_EFFORT (to match
  any publisher) until 800x600 camera frames on default transports were measured to crowd out
  about 25 % of best-effort odometry samples: each lost one holds a frame odometry_sync_timeout
  long and then pairs it with the previous tick's pose.
- events (collision, lane invasion): RELIABLE depth 10 — one-shot events must not be lost.
- route: RELIABLE TRANSIENT_LOCAL depth 1 — published once; a late subscriber still gets it.
- weights: RELIABLE TRANSIENT_LOCAL depth 1 — a policy node that starts late gets the latest.
- transitions: RELIABLE KEEP_LAST depth 1000 — 4 policy nodes at 20 Hz are 80 msg/s, so the
  trainer may stall ~12 s before a writer overwrites an unacknowledged sample (the trainer then
  sees the seq gap). Not KEEP_ALL: a full KEEP_ALL history blocks the publisher, i.e. the
  policy node's control loop. ~7.3 KB x 1000 = 7.3 MB of history per writer.
- control, diagnostics, status, scalars: RELIABLE depth 10 (ROS defaults).
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = [
    "CAMERA_QOS",
    "CONTROL_QOS",
    "DIAGNOSTICS_QOS",
    "ESTOP_QOS",
    "EVENT_QOS",
    "ROUTE_QOS",
    "SCALAR_QOS",
    "SENSOR_QOS",
    "STATUS_QOS",
    "TRANSITIONS_DEPTH",
    "TRANSITIONS_QOS",
    "UPDATE_COUNT_QOS",
    "WEIGHTS_QOS",
    "RELEASE_QOS",
    "describe",
]

TRANSITIONS_DEPTH = 1000


def _profile(depth: int, reliable: bool = True, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


CAMERA_QOS = _profile(10)
SENSOR_QOS = _profile(10)
EVENT_QOS = _profile(10)
ROUTE_QOS = _profile(1, latched=True)
WEIGHTS_QOS = _profile(1, latched=True)
UPDATE_COUNT_QOS = _profile(1, latched=True)  # the latest count is all a held simulator needs
TRANSITIONS_QOS = _profile(TRANSITIONS_DEPTH)
CONTROL_QOS = _profile(10)
# The e-stop is latched: a node (re)started after the stop was pressed still sees it.
ESTOP_QOS = _profile(1, latched=True)
# A stop release is never latched: a stored token must not reach a node that starts later.
RELEASE_QOS = _profile(10)
DIAGNOSTICS_QOS = _profile(10)
STATUS_QOS = _profile(10)
SCALAR_QOS = _profile(10)


def describe(profile: QoSProfile) -> str:
    """'RELIABLE TRANSIENT_LOCAL KEEP_LAST(1)' — for logs and docs."""
    return f"{profile.reliability.name} {profile.durability.name} {profile.history.name}({profile.depth})"
