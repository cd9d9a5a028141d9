#!/usr/bin/env python3
"""The one rule for the message packages av_td3_ros copies from other projects.

`interfaces/` holds field-for-field copies of other projects' message packages (COPIED_PACKAGES)
next to av_td3_ros' own (av_td3_msgs). A copy must never shadow the real package, nor be shadowed
by a different one, silently: two packages of one name with different fields have the same DDS
type name and a different wire layout. So, for each copied package:

- where no package of that name is installed, ours is built;
- where one is installed and it is ours (an earlier build: its package.xml has our maintainer),
  ours is rebuilt, so an edited copy replaces the old one;
- where another one is installed (the real package: a bridge, a vehicle stack, apt), ours is NOT
  built, and every message of our copy is compared with the installed one: same field names and
  types in the same order, same constant values. Any difference is an error that names the
  message and the field.

The Docker image applies the same check to the real packages it builds (docker/Dockerfile).
Standard library only: it runs before av_td3_ros is installed, under the venv's interpreter or
the image's.

    copied_interfaces.py list                         the copied packages, one per line
    copied_interfaces.py state PACKAGE [--interfaces DIR]
        prints `build` (absent, or ours) or `use` (a compatible real package); exit 2 if the
        installed package differs from our copy
    copied_interfaces.py check [--interfaces DIR] [--real PACKAGE ...]
        every copied package imports and matches our copy; `--real`: these must be the real
        package, not ours (the image); exit 2 on any difference
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

COPIED_PACKAGES = ("carla_msgs", "ackermann_msgs", "autoware_control_msgs", "autoware_vehicle_msgs")
OUR_MAINTAINER_EMAIL = "av-td3-ros@example.com"
INTERFACES_DIR = Path(__file__).resolve().parents[1] / "interfaces"

# .msg primitive type -> the type string rosidl's Python classes report
_PRIMITIVES = {
    "bool": "boolean", "byte": "octet", "char": "uint8", "float32": "float", "float64": "double",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
    "uint32": "uint32", "int64": "int64", "uint64": "uint64", "string": "string", "wstring": "wstring",
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ARRAY = re.compile(r"^(?P<base>[^\[]+)\[(?P<bound><=)?(?P<size>\d*)\]$")


class InterfaceMismatch(Exception):
    """An installed package of a copied name differs from our copy."""


@dataclass
class MessageDefinition:
    name: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # (name, rosidl type), in order
    constants: dict[str, object] = field(default_factory=dict)


def _type_string(msg_type: str, package: str) -> str:
    match = _ARRAY.match(msg_type)
    if match:
        base = _type_string(match.group("base"), package)
        size = match.group("size")
        if not size:
            return f"sequence<{base}>"
        return f"sequence<{base}, {size}>" if match.group("bound") else f"{base}[{size}]"
    bounded_string = re.fullmatch(r"(w?string)<=(\d+)", msg_type)
    if bounded_string:
        return f"{bounded_string.group(1)}<{bounded_string.group(2)}>"
    if msg_type in _PRIMITIVES:
        return _PRIMITIVES[msg_type]
    if msg_type == "Header":
        return "std_msgs/Header"
    return msg_type if "/" in msg_type else f"{package}/{msg_type}"


def _constant_value(msg_type: str, text: str) -> object:
    if msg_type == "bool":
        return text.strip().lower() in ("true", "1")
    if msg_type in ("float32", "float64"):
        return float(text)
    if msg_type in ("string", "wstring"):
        return text.strip().strip("'\"")
    return int(text, 0)


def parse_msg(text: str, package: str, name: str) -> MessageDefinition:
    """A .msg file's fields (with rosidl's Python type strings) and constants."""
    definition = MessageDefinition(name)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = line.rstrip(";").strip()  # autoware's sources end some lines with ';'
        msg_type, _, rest = line.partition(" ")
        rest = rest.strip()
        if "=" in rest and not rest.startswith("="):
            const_name, _, value = rest.partition("=")
            const_name = const_name.strip()
            if not _NAME.match(const_name):
                raise ValueError(f"{package}/{name}.msg:{number}: bad constant {raw!r}")
            definition.constants[const_name] = _constant_value(msg_type, value.strip())
            continue
        field_name = rest.split()[0] if rest else ""
        if not _NAME.match(field_name):
            raise ValueError(f"{package}/{name}.msg:{number}: cannot read {raw!r}")
        definition.fields.append((field_name, _type_string(msg_type, package)))
    return definition


def our_definitions(package: str, interfaces_dir: Path = INTERFACES_DIR) -> dict[str, MessageDefinition]:
    msg_dir = Path(interfaces_dir) / package / "msg"
    files = sorted(msg_dir.glob("*.msg"))
    if not files:
        raise FileNotFoundError(f"no .msg files under {msg_dir}")
    return {f.stem: parse_msg(f.read_text(), package, f.stem) for f in files}


def installed_definition(package: str, message: str) -> MessageDefinition:
    module = importlib.import_module(f"{package}.msg")
    cls = getattr(module, message, None)
    if cls is None:
        raise InterfaceMismatch(f"{package}/msg/{message} does not exist in the installed {package} "
                                f"({_where(package)})")
    definition = MessageDefinition(message, list(cls.get_fields_and_field_types().items()))
    # rosidl puts the constants on the class (its metaclass' __prepare__)
    for name in dir(cls):
        if name.isupper() and not name.startswith("_"):
            definition.constants[name] = getattr(cls, name)
    return definition


def differences(ours: MessageDefinition, installed: MessageDefinition) -> list[str]:
    """What differs on the wire (fields: names, types, order) or in our constants' values."""
    out = []
    if ours.fields != installed.fields:
        mine, theirs = dict(ours.fields), dict(installed.fields)
        for name, msg_type in ours.fields:
            if name not in theirs:
                out.append(f"field {name} ({msg_type}) is missing")
            elif theirs[name] != msg_type:
                out.append(f"field {name} is {theirs[name]}, ours is {msg_type}")
        for name, msg_type in installed.fields:
            if name not in mine:
                out.append(f"it has a field {name} ({msg_type}) ours has not")
        if not out:
            order = [n for n, _ in installed.fields], [n for n, _ in ours.fields]
            out.append(f"field order {order[0]} != ours {order[1]}")
    for name, value in ours.constants.items():
        if name not in installed.constants:
            out.append(f"constant {name} is missing")
        elif installed.constants[name] != value:
            out.append(f"constant {name} = {installed.constants[name]!r}, ours = {value!r}")
    return out


def _installed_package_xml(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    here = Path(next(iter(spec.submodule_search_locations))).resolve()
    for prefix in here.parents:
        candidate = prefix / "share" / package / "package.xml"
        if candidate.is_file():
            return candidate
    return None


def _where(package: str) -> str:
    xml = _installed_package_xml(package)
    return str(xml.parent) if xml else "share/ not found"


def is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def is_ours(package: str) -> bool:
    xml = _installed_package_xml(package)
    if xml is None:
        return False
    root = ET.parse(xml).getroot()
    return any(m.get("email") == OUR_MAINTAINER_EMAIL for m in root.iter("maintainer"))


def check_installed(package: str, interfaces_dir: Path = INTERFACES_DIR) -> None:
    """Raise InterfaceMismatch unless every message of our copy matches the installed package."""
    problems = []
    for name, ours in our_definitions(package, interfaces_dir).items():
        try:
            installed = installed_definition(package, name)
        except InterfaceMismatch as e:
            problems.append(str(e))
            continue
        problems += [f"{package}/msg/{name}: {d}" for d in differences(ours, installed)]
    if problems:
        raise InterfaceMismatch(
            f"the installed {package} ({_where(package)}) is not the package av_td3_ros was written "
            f"for (interfaces/{package}, a field-for-field copy of the real one):\n  "
            + "\n  ".join(problems)
            + f"\nUse the {package} version interfaces/{package}/package.xml names, or uninstall it "
            f"so that ours is built.")


def state(package: str, interfaces_dir: Path = INTERFACES_DIR) -> str:
    """`build` (absent, or an earlier build of ours) or `use` (a real one that matches)."""
    if not is_installed(package) or is_ours(package):
        return "build"
    check_installed(package, interfaces_dir)
    return "use"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    state_parser = sub.add_parser("state")
    state_parser.add_argument("package", choices=COPIED_PACKAGES)
    check_parser = sub.add_parser("check")
    check_parser.add_argument("--real", nargs="*", default=[], choices=COPIED_PACKAGES)
    for p in (state_parser, check_parser):
        p.add_argument("--interfaces", type=Path, default=INTERFACES_DIR)
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            print("\n".join(COPIED_PACKAGES))
        elif args.command == "state":
            print(state(args.package, args.interfaces))
        else:
            for package in COPIED_PACKAGES:
                if not is_installed(package):
                    raise InterfaceMismatch(f"{package} is not installed")
                ours = is_ours(package)
                if ours and package in args.real:
                    raise InterfaceMismatch(f"{package} at {_where(package)} is av_td3_ros' copy; "
                                            f"the real package was expected here")
                check_installed(package, args.interfaces)
                print(f"copied_interfaces: {package}: {'ours' if ours else 'real'}, matches "
                      f"interfaces/{package} ({_where(package)})")
    except InterfaceMismatch as e:
        print(f"copied_interfaces: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
