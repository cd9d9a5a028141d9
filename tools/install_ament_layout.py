#!/usr/bin/env python3
"""Install av_td3_ros into a venv the way colcon installs an ament_python package, so that
`ros2 launch av_td3_ros ...` finds it there as it does in the image.

`pip install -e .` puts the console scripts in VENV/bin and skips setup.py's data_files; ROS
tools look elsewhere: `get_package_share_directory("av_td3_ros")` needs the ament index marker
VENV/share/ament_index/resource_index/packages/av_td3_ros and finds VENV/share/av_td3_ros/
(launch files, config, package.xml); launch_ros runs executables from VENV/lib/av_td3_ros/<name>.
This links every data_files entry of setup.py to the repository file (edits show without a
reinstall, as with `colcon build --symlink-install`), links VENV/lib/av_td3_ros/<script> to each
console script in VENV/bin, drops links it made for files that are gone, and writes
VENV/setup.sh, which puts VENV on AMENT_PREFIX_PATH (what a workspace's install/setup.sh does).

    tools/install_ament_layout.py VENV
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "av_td3_ros"

SETUP_SH = """\
# Source this file (sh, bash, zsh) to use this venv as an ament prefix, as a colcon workspace's
# install/setup.sh does: `ros2 launch av_td3_ros ...` then finds the package's launch files,
# config and executables here. Written by tools/install_ament_layout.py.
_av_td3_venv="{venv}"
case ":${{AMENT_PREFIX_PATH:-}}:" in
  *":${{_av_td3_venv}}:"*) ;;
  *) export AMENT_PREFIX_PATH="${{_av_td3_venv}}${{AMENT_PREFIX_PATH:+:${{AMENT_PREFIX_PATH}}}}" ;;
esac
case ":${{PATH}}:" in
  *":${{_av_td3_venv}}/bin:"*) ;;
  *) export PATH="${{_av_td3_venv}}/bin:${{PATH}}" ;;
esac
unset _av_td3_venv
"""


def setup_arguments(repo: Path = REPO) -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (setup.py stays the one list)."""
    captured: dict = {}
    real_setup = setuptools.setup
    cwd = os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(repo)  # its globs are relative to the repository
        runpy.run_path(str(repo / "setup.py"), run_name="av_td3_ros_setup")
    finally:
        setuptools.setup = real_setup
        os.chdir(cwd)
    if not captured:
        raise RuntimeError(f"{repo / 'setup.py'} did not call setuptools.setup")
    return captured


def console_scripts(arguments: dict) -> list[str]:
    entries = arguments.get("entry_points", {}).get("console_scripts", [])
    return [entry.split("=", 1)[0].strip() for entry in entries]


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_dir() and not link.is_symlink():
            raise RuntimeError(f"{link} is a directory; expected a link to {target}")
        link.unlink()
    link.symlink_to(target)


def _drop_stale_links(directory: Path, keep: set[Path], owner: Path) -> list[Path]:
    """Links in `directory` into `owner` that are not in `keep` (files removed since)."""
    dropped = []
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_symlink() and entry not in keep:
                target = Path(os.readlink(entry))
                if target.is_absolute() and owner in target.parents:
                    entry.unlink()
                    dropped.append(entry)
    return dropped


def install(venv: Path, repo: Path = REPO) -> list[Path]:
    """Create or refresh the layout; returns the links it keeps."""
    venv = Path(venv).resolve()
    arguments = setup_arguments(repo)
    links: dict[Path, Path] = {}
    for destination, files in arguments.get("data_files", []):
        for name in files:
            source = (repo / name).resolve()
            if not source.is_file():
                raise FileNotFoundError(f"setup.py data_files names {name}, which does not exist")
            links[venv / destination / source.name] = source
    marker = venv / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    if marker not in links:
        raise RuntimeError(f"setup.py data_files do not install the ament index marker of {PACKAGE}")
    for script in console_scripts(arguments):
        target = venv / "bin" / script
        if not target.is_file():
            raise FileNotFoundError(f"{target} does not exist: install the package first "
                                    f"(pip install -e {repo})")
        links[venv / "lib" / PACKAGE / script] = target

    for link, target in links.items():
        _link(target, link)
    for directory in {link.parent for link in links}:
        owner = venv / "bin" if directory == venv / "lib" / PACKAGE else repo
        _drop_stale_links(directory, set(links), owner)
    setup_sh = venv / "setup.sh"
    tmp = setup_sh.with_suffix(".sh.tmp")
    tmp.write_text(SETUP_SH.format(venv=venv))
    tmp.replace(setup_sh)
    return sorted(links)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    links = install(Path(argv[0]))
    print(f"install_ament_layout: {len(links)} links under {Path(argv[0]).resolve()} "
          f"(share/{PACKAGE}, lib/{PACKAGE}, the ament index marker) and setup.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
