"""Rewrite the build host's Python/numpy include paths baked into the ros-* wheels' cmake files.

The PyPI ROS wheels were built in a manylinux container whose exported cmake targets name
/opt/python/cp311-cp311/... for the Python and numpy headers. CMake refuses imported targets
with non-existent include directories, so an interface package would not build against them.
This rewrites those paths to this interpreter's own. Idempotent: run it after every install of
ros-* wheels (pip may restore the original files).
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

# The baked-in prefix differs per CPython ABI (cp310, cp311, ...): match any of them.
_PY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?")
_NP_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages/numpy/(?:_core|core)/include"
)


def rewrite(text: str, py_include: str, np_include: str) -> str:
    # numpy first: its path contains the Python prefix, but not the include/python3.x suffix.
    text = _NP_INCLUDE.sub(np_include, text)
    return _PY_INCLUDE.sub(py_include, text)


def main(prefix: str) -> int:
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    changed = 0
    for path in Path(prefix, "share").rglob("*.cmake"):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if "/opt/python/" not in text:
            continue
        new = rewrite(text, py_include, np_include)
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
    print(f"fix_ros_cmake_paths: {changed} cmake file(s) rewritten under {prefix}/share")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
