"""ROS hygiene for the whole suite, in one place.

Every rclpy process the suite starts - this one and every subprocess - stays on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; without it Fast DDS discovery multicasts on the
network card), uses a ROS_DOMAIN_ID claimed for this test session alone (so two suites running
at once never see each other), and logs into a temporary ROS_LOG_DIR (rclpy.init fails with
neither HOME nor ROS_LOG_DIR set). This is set at import time, before any test imports rclpy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from av_td3_ros.demo.environment import claim_domain_id, ros_environment

TEST_DIR = Path(__file__).resolve().parent
PROGRAMS = TEST_DIR / "programs"

DOMAIN_ID, _DOMAIN_LOCK = claim_domain_id()
_LOG_DIR = tempfile.mkdtemp(prefix="av_td3_ros-roslog-")
os.environ.update(ros_environment(DOMAIN_ID, _LOG_DIR))
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # ignored by this ROS version: never let it look set


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """The environment handed to every rclpy subprocess the suite starts."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    env["ROS_LOG_DIR"] = _LOG_DIR
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Spawner:
    """Starts Python programs as OS processes with the suite's ROS environment; kills them all
    on `close()`. Call it with (args, env overrides) -> Popen. stdout is a pipe (text); stderr
    goes to a file whose path is the Popen's `stderr_path`."""

    def __init__(self, env: dict[str, str], directory: Path):
        self.env, self.directory = env, Path(directory)
        self.procs: list[subprocess.Popen] = []

    def __call__(self, args: list[str], **env_overrides: str) -> subprocess.Popen:
        env = dict(self.env)
        env.update(env_overrides)
        err_path = self.directory / f"proc{len(self.procs)}.stderr"
        err = open(err_path, "w")
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        proc.stderr_path = err_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def spawn(ros_env, tmp_path):
    """Start a Python program as its own OS process with the suite's ROS environment.

    Returns a function (args, env overrides) -> Popen; every process is killed at teardown.
    stdout is a pipe (text); stderr goes to a file whose path is the Popen's `stderr_path`.
    """
    spawner = Spawner(ros_env, tmp_path)
    yield spawner
    spawner.close()


@pytest.fixture(scope="module")
def module_spawn(ros_env, tmp_path_factory):
    """`spawn` for processes shared by the tests of one module (killed after its last test)."""
    spawner = Spawner(ros_env, tmp_path_factory.mktemp("module_procs"))
    yield spawner
    spawner.close()


def _rclpy_context():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


@pytest.fixture
def rclpy_context():
    """A fresh rclpy context for in-process nodes, shut down after the test."""
    yield from _rclpy_context()


@pytest.fixture(scope="module")
def module_rclpy_context():
    """An rclpy context shared by the tests of one module."""
    yield from _rclpy_context()
