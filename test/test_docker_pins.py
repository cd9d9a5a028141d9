"""The Docker image installs its Python dependencies from the SAME pinned files CI installs.

The Makefile (what CI runs) installs requirements/*.txt with `-c requirements/constraints.txt`;
the image must install the package's own files (python.txt, carla.txt) with that same constraints
file, nothing unpinned and nothing named ad hoc, torch from the PyTorch CPU index at the version
python.txt pins. constraints.txt is frozen on Python 3.11; the image runs Python 3.10 (ROS 2
Humble), so pins without a 3.10 build carry `python_version` markers - checked here for
consistency (resolution against PyPI: tools/check_image_pins.py, which needs network).
"""

from __future__ import annotations

import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

import pytest
from launch_static import REPO, dockerfile_args, dockerfile_instructions, evaluate_constraints, pinned_version
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DOCKERFILE = REPO / "docker" / "Dockerfile"
MAKEFILE = REPO / "Makefile"
REQ = REPO / "requirements"
INSTRUCTIONS = dockerfile_instructions(DOCKERFILE)
PACKAGE_FILES = {"python.txt", "carla.txt"}  # what the package itself needs (venv, CI and image)
IMAGE_ONLY_FILES = {"bridge.txt"}  # the third-party bridge stage's extras


def _commands(text: str) -> list[list[str]]:
    """Split a RUN line into simple commands (on &&, ;, |) and shell words."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out, words = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", ">", "<", "(", ")", "<(", "&"):
            if words:
                out.append(words)
            words = []
        else:
            words.append(token)
    if words:
        out.append(words)
    return out


def _copied_requirements() -> dict[str, str]:
    """image path -> repository path of every requirements file COPY'd into the image."""
    out = {}
    for ins in INSTRUCTIONS:
        if ins.keyword != "COPY" or "--from" in ins.text:
            continue
        words = shlex.split(ins.text)
        sources, dest = words[:-1], words[-1]
        for src in sources:
            if src.startswith("requirements/"):
                target = dest + Path(src).name if dest.endswith("/") else dest
                out[target] = src
    return out


def _pip_installs():
    """(stage, words) of every `pip install` in a RUN."""
    for ins in INSTRUCTIONS:
        if ins.keyword != "RUN":
            continue
        for words in _commands(ins.text):
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                yield ins.stage, words


def _option_values(words: list[str], *flags: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in flags]


def _makefile_installs() -> tuple[set[str], set[str]]:
    """(-r files, -c files) of the Makefile's dependency install (what CI installs)."""
    text = MAKEFILE.read_text().replace("\\\n", " ")
    variables = dict(re.findall(r"^([A-Z_]+)\s*:?=\s*(.*)$", text, re.MULTILINE))
    recipe = re.search(r"^\$\(VENV\)/\.stamp-deps:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe, "Makefile: no $(VENV)/.stamp-deps recipe"
    body = recipe.group(1)
    for _ in range(3):
        body = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), m.group(0)), body)
    words = body.split()
    return set(_option_values(words, "-r")), set(_option_values(words, "-c"))


def test_every_pip_install_in_the_image_uses_the_constraints_and_only_requirement_files():
    copied = _copied_requirements()
    installs = list(_pip_installs())
    assert installs, "no pip install in the Dockerfile"
    for stage, words in installs:
        constraints = _option_values(words, "-c", "--constraint")
        assert [copied.get(c) for c in constraints] == ["requirements/constraints.txt"], (stage, words)
        assert "--no-cache-dir" in words
        # nothing named ad hoc: every non-option word is a value of an option
        values = set(_option_values(words, "-c", "-r", "--index-url", "--extra-index-url"))
        bare = [w for w in words[2:] if not w.startswith("-") and w not in values]
        assert bare == [], f"{stage}: packages named outside the pinned files: {bare}"
        assert "--extra-index-url" not in words, "an extra index could shadow PyPI packages"


def test_the_image_installs_the_same_package_files_as_ci_with_the_same_constraints():
    copied = _copied_requirements()
    by_stage: dict[str, set[str]] = {}
    for stage, words in _pip_installs():
        for path in _option_values(words, "-r"):
            by_stage.setdefault(stage, set()).add(Path(copied.get(path, path)).name)
    nodes = by_stage.get("nodes", set()) - {"torch.txt"}
    assert nodes == PACKAGE_FILES, nodes
    assert by_stage.get("bridge", set()) <= IMAGE_ONLY_FILES
    make_files, make_constraints = _makefile_installs()
    assert make_constraints == {"requirements/constraints.txt"}
    assert {f"requirements/{name}" for name in PACKAGE_FILES} <= make_files, (
        f"the Makefile (CI) installs {sorted(make_files)}: add requirements/carla.txt")
    assert not {f"requirements/{name}" for name in IMAGE_ONLY_FILES} & make_files


def test_torch_comes_from_the_cpu_index_at_the_version_python_txt_pins():
    args = dockerfile_args(INSTRUCTIONS)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    (run,) = [i for i in INSTRUCTIONS if i.keyword == "RUN" and "torch.txt" in i.text]
    assert re.search(r"grep -E '\^torch==' /tmp/requirements/python.txt > /tmp/requirements/torch.txt",
                     run.text)
    torch_install = [w for w in _commands(run.text) if "/tmp/requirements/torch.txt" in w and w[0] == "pip"]
    (words,) = torch_install
    assert _option_values(words, "--index-url") == ["${TORCH_INDEX_URL}"]
    assert "--no-deps" in words  # torch's dependencies then resolve from PyPI with the constraints
    (line,) = [x for x in (REQ / "python.txt").read_text().splitlines() if x.startswith("torch")]
    version = pinned_version(Requirement(line))
    assert version, "python.txt must pin torch exactly (an unpinned torch pulls a CUDA build)"
    for py in ("3.10", "3.11"):
        assert pinned_version(evaluate_constraints(py)["torch"]) == version
    # torch first, then the rest (which finds torch already satisfied)
    text = run.text
    assert text.index("-r /tmp/requirements/torch.txt") < text.index("-r /tmp/requirements/python.txt")


def _requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        text = line.split("#")[0].strip()
        if text:
            names.append(canonicalize_name(Requirement(text).name))
    return names


@pytest.mark.parametrize("python", ["3.10", "3.11"])
def test_constraints_pin_every_package_exactly_once_per_python(python):
    cons = evaluate_constraints(python)  # asserts: no two pins for one package
    loose = [str(r) for r in cons.values() if not pinned_version(r)]
    assert not loose, loose
    files = PACKAGE_FILES | (IMAGE_ONLY_FILES if python == "3.10" else set())
    for name in files:
        for pkg in _requirement_names(REQ / name):
            assert pkg in cons, f"{name}: {pkg} is not pinned for Python {python}"


def test_markers_come_in_pairs_and_the_venv_pins_are_unchanged():
    lines = [x.strip() for x in (REQ / "constraints.txt").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    old = {canonicalize_name(Requirement(x).name) for x in lines if 'python_version < "3.11"' in x}
    new = {canonicalize_name(Requirement(x).name) for x in lines if 'python_version >= "3.11"' in x}
    assert new <= old, f"a >= 3.11 pin without its < 3.11 counterpart: {sorted(new - old)}"
    other_markers = [x for x in lines if ";" in x and "python_version" not in x]
    assert not other_markers, other_markers
    # The markers must not change what the venv (Python 3.11, where the file was frozen) gets.
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name, req in evaluate_constraints(here).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        assert installed.split("+")[0] == pinned_version(req), f"{name}: venv {installed} != {req}"


def test_the_image_gets_numpy_1_for_ros_humble_and_the_servers_carla_client():
    cons = evaluate_constraints("3.10")
    # ROS 2 Humble's apt C extensions (cv_bridge, rosidl-generated message modules) are built
    # against the NumPy 1 ABI: NumPy 2 makes them fail at import.
    assert int(pinned_version(cons["numpy"]).split(".")[0]) == 1
    # carla wheels exist per Python version: 0.9.15 (= the server image) has cp310, not cp311
    assert pinned_version(cons["carla"]) == dockerfile_args(INSTRUCTIONS)["CARLA_VERSION"]
    assert pinned_version(evaluate_constraints("3.11")["carla"]) == "0.9.16"


def test_the_image_base_is_ros_humble_on_python_3_10():
    froms = {i.stage: i.text.split()[0] for i in INSTRUCTIONS if i.keyword == "FROM"}
    assert froms["nodes"].startswith("ros:humble-")  # Ubuntu 22.04: CPython 3.10
    assert froms["bridge"] == "nodes"


def test_make_lock_keeps_the_python_3_10_overrides():
    sys.path.insert(0, str(REPO / "tools"))
    from lock_constraints import merge

    previous = (REQ / "constraints.txt").read_text().splitlines()
    frozen = ["numpy==2.3.0", "pandas==3.2.0", "PyYAML==6.0.3", "carla==0.9.16", "newpkg==1.0"]
    merged = merge(frozen, previous)
    body = [x for x in merged if not x.startswith("#")]
    assert 'numpy==2.3.0; python_version >= "3.11"' in body
    assert 'numpy==1.26.4; python_version < "3.11"' in body
    assert body.index('numpy==2.3.0; python_version >= "3.11"') + 1 == body.index(
        'numpy==1.26.4; python_version < "3.11"')
    assert "PyYAML==6.0.3" in body and "newpkg==1.0" in body
    assert 'transforms3d==0.4.2; python_version < "3.11"' in body  # image-only pins survive
    recipe = re.search(r"^lock:.*\n((?:\t.*\n)+)", MAKEFILE.read_text().replace("\\\n", " "), re.MULTILINE)
    assert recipe and "tools/lock_constraints.py" in recipe.group(1), (
        "make lock must merge through tools/lock_constraints.py, or a re-freeze drops the "
        "Python 3.10 pins and breaks the Docker image")
