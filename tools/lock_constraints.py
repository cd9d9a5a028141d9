#!/usr/bin/env python3
"""Merge a fresh `pip freeze` (stdin) with the Python 3.10 overrides of the current constraints.

    pip freeze --exclude-editable | sed 's/+cpu$//' \
        | python tools/lock_constraints.py requirements/constraints.txt

constraints.txt is frozen from the Python 3.11 venv, but the Docker image (ROS 2 Humble) runs
Python 3.10 from the SAME file. A pin that has no 3.10 build (or breaks Humble) therefore appears
twice: `name==X; python_version >= "3.11"` (the frozen one) and `name==Y; python_version < "3.11"`
(hand-chosen, verified by tools/check_image_pins.py). A plain re-freeze would drop the second
line and break the image build; this keeps every `< "3.11"` line as it is and adds the
`>= "3.11"` marker to the frozen pin of the same package. Prints the new file on stdout.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADER = [
    "# Every version the venv and CI install, frozen from a working venv (Python 3.11).",
    '# Lines marked python_version < "3.11" are for the Docker image (ROS 2 Humble, Python 3.10):',
    "# the frozen pin has no 3.10 build, or breaks Humble (numpy 2 vs its NumPy-1 C extensions);",
    "# tools/check_image_pins.py verifies them against PyPI. Regenerate: make lock (keeps them).",
]
OLD_MARKER = 'python_version < "3.11"'
NEW_MARKER = 'python_version >= "3.11"'


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return canonical(re.split(r"[=<>!~; ]", line.strip(), maxsplit=1)[0])


def merge(frozen: list[str], previous: list[str]) -> list[str]:
    overrides: dict[str, list[str]] = {}
    for line in previous:
        text = line.strip()
        if text and not text.startswith("#") and text.replace(" ", "").endswith(OLD_MARKER.replace(" ", "")):
            overrides.setdefault(requirement_name(text), []).append(text)
    body: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in frozen:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name = requirement_name(text)
        seen.add(name)
        if name in overrides:
            body.append((name, f"{text.split(';')[0].strip()}; {NEW_MARKER}"))
            body.extend((name, o) for o in overrides[name])
        else:
            body.append((name, text))
    for name, lines in overrides.items():  # 3.10-only packages (not in the venv at all)
        if name not in seen:
            body.extend((name, o) for o in lines)
    body.sort(key=lambda item: item[0])  # stable: the >= line stays before its < line
    return HEADER + [text for _, text in body]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    previous = Path(argv[1]).read_text().splitlines() if Path(argv[1]).exists() else []
    sys.stdout.write("\n".join(merge(sys.stdin.read().splitlines(), previous)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
