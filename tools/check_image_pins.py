#!/usr/bin/env python3
"""Check, against PyPI, that the Docker image's Python dependencies resolve on its interpreter
(ROS 2 Humble: CPython 3.10, manylinux x86_64) from the SAME files CI uses - WITHOUT building
the image and WITHOUT downloading torch.

    .venv/bin/python tools/check_image_pins.py            # needs network access to PyPI

1. Evaluates requirements/constraints.txt's environment markers for Python 3.10 (pip would
   evaluate them for the Python running it, not for --python-version).
2. Resolves python.txt (minus torch, which the image takes from the PyTorch index) + carla.txt +
   bridge.txt + torch's own dependencies (read from the torch installed in this venv) with
   `pip install --dry-run --python-version 3.10 --only-binary=:all: --report`.
3. Fails if any resolved distribution's Requires-Python excludes 3.10, or is not pinned.
Not part of `make test` (network); run it after changing requirements/*.txt or `make lock`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
REQ = REPO / "requirements"
TARGET = {
    "python_version": "3.10",
    "python_full_version": "3.10.12",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
UNPINNED_OK = {"pip", "setuptools", "wheel"}  # the image's venv brings its own


def constraints_for(env: dict[str, str], path: Path = REQ / "constraints.txt") -> dict[str, Requirement]:
    """Constraint lines whose marker holds in `env`, by canonical name (markers dropped)."""
    out: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name in out:
            raise SystemExit(f"constraints.txt: two pins for {req.name} under Python {env['python_version']}")
        req.marker = None
        out[name] = req
    return out


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines()
            if line.split("#")[0].strip()]


def main() -> int:
    cons = constraints_for(TARGET)
    wanted = [r for r in requirement_lines(REQ / "python.txt")
              if canonicalize_name(Requirement(r).name) != "torch"]
    wanted += requirement_lines(REQ / "carla.txt") + requirement_lines(REQ / "bridge.txt")
    for dep in metadata.requires("torch") or []:
        req = Requirement(dep)
        if req.marker is None or req.marker.evaluate(TARGET | {"extra": ""}):
            req.marker = None
            wanted.append(str(req))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "req.txt").write_text("\n".join(wanted) + "\n")
        (Path(tmp) / "cons.txt").write_text("\n".join(str(r) for r in cons.values()) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
               "--quiet", "--python-version", "3.10", "--implementation", "cp", "--abi", "cp310",
               "--only-binary=:all:", "--target", str(Path(tmp) / "t"), "--report", str(Path(tmp) / "r.json"),
               "-r", str(Path(tmp) / "req.txt"), "-c", str(Path(tmp) / "cons.txt")]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # PyPI itself, as the image sees it
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            print(done.stdout, done.stderr, sep="\n")
            print("FAIL: the image's requirements do not resolve for Python 3.10")
            return 1
        report = json.loads((Path(tmp) / "r.json").read_text())
    problems = []
    for item in report["install"]:
        meta = item["metadata"]
        name, version = canonicalize_name(meta["name"]), meta["version"]
        requires_python = meta.get("requires_python") or ""
        if requires_python and "3.10.12" not in SpecifierSet(requires_python):
            problems.append(f"{name}=={version} requires Python {requires_python}")
        if name not in cons and name not in UNPINNED_OK:
            problems.append(f"{name}=={version} is not pinned in constraints.txt for Python 3.10")
        print(f"  {name}=={version}")
    for p in problems:
        print("FAIL:", p)
    if not problems:
        print(f"OK: {len(report['install'])} distributions resolve for CPython 3.10 from the pinned files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
