"""`ros2 launch av_td3_ros ...` works from the venv as in the image: the venv holds the colcon
layout of an ament_python package (tools/install_ament_layout.py, run by `make venv`).

launch and launch_ros are not installable here; these tests perform the two lookups they make,
with the real ament_index_python, in a process whose environment is what `source .venv/setup.sh`
gives: the launch file (`get_package_share_directory`) and each node executable
(`<get_package_prefix>/lib/<package>/<executable>`, launch_ros' ExecutableInPackage).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from launch_static import REPO, installed_by_data_files, parse_setup_py

sys.path.insert(0, str(REPO / "tools"))
import install_ament_layout as layout  # noqa: E402

VENV = Path(sys.prefix)
SETUP = parse_setup_py()

LOOKUPS = r"""
import json, os, sys
from ament_index_python.packages import (get_package_prefix, get_package_share_directory,
                                         get_packages_with_prefixes)
pkg = "av_td3_ros"
share = get_package_share_directory(pkg)
prefix = get_package_prefix(pkg)
print(json.dumps({
    "share": share,
    "launch": sorted(os.listdir(os.path.join(share, "launch"))),
    "config": sorted(os.listdir(os.path.join(share, "config"))),
    "package_xml": os.path.realpath(os.path.join(share, "package.xml")),
    "executables": {exe: os.path.join(prefix, "lib", pkg, exe) for exe in sys.argv[1:]},
    "interfaces": {p: get_packages_with_prefixes().get(p) for p in ("carla_msgs", "av_td3_msgs")},
}))
"""


def _sourced_env() -> dict[str, str]:
    """The environment after `source .venv/setup.sh` (run by a real shell)."""
    out = subprocess.run(["bash", "-c", f'. "{VENV}/setup.sh" && env -0'], capture_output=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"})
    assert out.returncode == 0, out.stderr
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def lookups():
    env = _sourced_env()
    assert env["AMENT_PREFIX_PATH"].split(os.pathsep)[0] == str(VENV)
    scripts = sorted(SETUP.console_scripts)
    out = subprocess.run([sys.executable, "-c", LOOKUPS, *scripts], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return env, json.loads(out.stdout)


def test_the_launch_files_and_config_are_found_through_the_ament_index(lookups):
    _, found = lookups
    assert found["share"] == str(VENV / "share" / "av_td3_ros")
    launch_files = sorted(p.name for p in (REPO / "launch").glob("*.launch.py"))
    assert found["launch"] == launch_files and "carla.launch.py" in launch_files
    configs = sorted(p.name for p in (REPO / "config").iterdir()
                     if installed_by_data_files(f"config/{p.name}", SETUP) == "share/av_td3_ros/config")
    assert found["config"] == configs and "policy.yaml" in configs
    assert found["package_xml"] == str(REPO / "package.xml")  # linked: edits need no reinstall
    assert found["interfaces"] == {"carla_msgs": str(VENV), "av_td3_msgs": str(VENV)}


def test_launch_ros_finds_and_runs_every_node_executable_under_lib_package(lookups):
    env, found = lookups
    assert set(found["executables"]) == set(SETUP.console_scripts) >= {"policy_node", "trainer_node",
                                                                       "sim_node", "episode_manager"}
    for exe, path in found["executables"].items():
        assert path == str(VENV / "lib" / "av_td3_ros" / exe)
        assert os.path.isfile(path) and os.access(path, os.X_OK), path
    # the path launch_ros would execute really starts the program, with the venv's interpreter
    out = subprocess.run([found["executables"]["av-td3"], "--help"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_the_layout_is_refreshed_in_place_and_links_to_removed_files_are_dropped(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    scripts = layout.console_scripts(layout.setup_arguments())
    for script in scripts:
        (venv / "bin" / script).write_text("#!/bin/sh\n")
    first = layout.install(venv)
    stale = venv / "share" / "av_td3_ros" / "config" / "removed.yaml"
    stale.symlink_to(REPO / "config" / "removed.yaml")  # a config file deleted since the last install
    foreign = venv / "share" / "av_td3_ros" / "config" / "user.yaml"
    foreign.write_text("mine: 1\n")  # not a link of ours: left alone
    assert layout.install(venv) == first
    assert not stale.is_symlink() and foreign.read_text() == "mine: 1\n"
    assert (venv / "share/ament_index/resource_index/packages/av_td3_ros").is_symlink()
    assert {p.name for p in (venv / "lib" / "av_td3_ros").iterdir()} == set(scripts)
    assert f'_av_td3_venv="{venv.resolve()}"' in (venv / "setup.sh").read_text()


def test_the_layout_needs_the_console_scripts_installed_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="install the package first"):
        layout.install(tmp_path / "empty")
