"""ROS hygiene for the whole suite, in one place.

Every rclpy process the suite starts - this one and every subprocess - stays on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; without it Fast DDS discovery multicasts on the
network card), uses a ROS_DOMAIN_ID claimed for this test session alone (so two suites running
at once never see each other), and logs into a temporary ROS_LOG_DIR (rclpy.init fails with
neither HOME nor ROS_LOG_DIR set). This is set at import time, before any test imports rclpy.
"""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent
PROGRAMS = TEST_DIR / "programs"


def _claim_domain_id() -> tuple[int, object]:
    """Hold an exclusive lock on one domain id for the life of this process."""
    ids = list(range(1, 101))  # 0..101 are valid on Linux; leave 0 (the default) to users
    random.shuffle(ids)
    for domain_id in ids:
        handle = open(os.path.join(tempfile.gettempdir(), f"av_td3_ros-domain-{domain_id}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return domain_id, handle
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..100: too many test sessions at once")


DOMAIN_ID, _DOMAIN_LOCK = _claim_domain_id()
_LOG_DIR = tempfile.mkdtemp(prefix="av_td3_ros-roslog-")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_LOG_DIR"] = _LOG_DIR
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.pop("ROS_LOCALHOST_ONLY", None)


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """The environment handed to every rclpy subprocess the suite starts."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    env["ROS_LOG_DIR"] = _LOG_DIR
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def spawn(ros_env, tmp_path):
    """Start a Python program as its own OS process with the suite's ROS environment.

    Returns a function (args, env overrides) -> Popen; every process is killed at teardown.
    stdout is a pipe (text); stderr goes to a file whose path is the Popen's `stderr_path`.
    """
    procs: list[subprocess.Popen] = []

    def start(args: list[str], **env_overrides: str) -> subprocess.Popen:
        env = dict(ros_env)
        env.update(env_overrides)
        err_path = tmp_path / f"proc{len(procs)}.stderr"
        err = open(err_path, "w")
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        proc.stderr_path = err_path  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def rclpy_context():
    """A fresh rclpy context for in-process nodes, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)
