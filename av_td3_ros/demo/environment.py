"""The environment of every rclpy process this project starts (the demo, the test suite).

- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: without it Fast DDS discovery multicasts on the network
  card; ROS_LOCALHOST_ONLY is ignored by this ROS version, so it is removed.
- a ROS_DOMAIN_ID claimed for this run alone (a lock file per id), so two runs on one machine
  never see each other's topics;
- ROS_LOG_DIR: rclpy.init() fails when neither HOME nor ROS_LOG_DIR is set.
No rclpy import here: this must be set before rclpy is first imported.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile

__all__ = ["caller_ros_environment", "claim_domain_id", "ros_environment"]


def claim_domain_id(low: int = 1, high: int = 100) -> tuple[int, object]:
    """(domain id, lock handle): an id no other run on this machine holds. Keep the handle open
    for as long as the id is in use. 0 (the default domain) is left to users."""
    ids = list(range(low, high + 1))
    random.shuffle(ids)
    for domain_id in ids:
        handle = open(os.path.join(tempfile.gettempdir(), f"av_td3_ros-domain-{domain_id}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return domain_id, handle
    raise RuntimeError(f"no free ROS_DOMAIN_ID in {low}..{high}: too many runs at once")


def ros_environment(domain_id: int, log_dir: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_LOG_DIR"] = str(log_dir)
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.setdefault("SDL_VIDEODRIVER", "offscreen")
    return env


def caller_ros_environment(low: int, high: int, log_prefix: str = "av_td3_bench_roslog-") -> dict[str, str]:
    """ros_environment for a benchmark: the caller's ROS_DOMAIN_ID and ROS_LOG_DIR when set (a user
    who pins a domain, e.g. under the test suite's lock file), else a random id in low..high and
    a fresh log directory."""
    domain_id = os.environ.get("ROS_DOMAIN_ID") or str(random.randint(low, high))
    log_dir = os.environ.get("ROS_LOG_DIR") or tempfile.mkdtemp(prefix=log_prefix)
    return ros_environment(int(domain_id), log_dir)
