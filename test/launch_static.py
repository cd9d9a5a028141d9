"""Static readers for the launch files, setup.py, the Dockerfile and the compose file.

The `launch` / `launch_ros` packages cannot be installed here (FACTS.md), so the launch files are
read as Python source with `ast`, the way a reviewer reads them: which nodes of which packages
they start, with which literal parameter keys and parameter files, which launch files they
include with which arguments, which launch arguments they declare and use. Helpers for
test_launch_files.py and test_compose.py; not a test module itself.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = REPO / "launch"
CONFIG_DIR = REPO / "config"
CONFIG_NAME = re.compile(r"^[\w.-]+\.(yaml|yml|json|xml)$")


@dataclass
class NodeCall:
    line: int
    package: str | None
    executable: str | None
    name: str | None
    namespaced: bool
    param_keys: list[str] = field(default_factory=list)
    param_files: list[ast.expr] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class IncludeCall:
    line: int
    package: str | None
    launch_file: str | None
    arguments: dict[str, ast.expr] = field(default_factory=dict)


@dataclass
class LaunchFile:
    path: Path
    tree: ast.Module
    constants: dict[str, str]
    declared: dict[str, ast.expr | None]
    used: set[str]
    nodes: list[NodeCall]
    includes: list[IncludeCall]
    config_names: set[str]


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ""


def _const_str(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                out[stmt.targets[0].id] = stmt.value.value
    return out


def _list_elements(value: ast.expr, scope: ast.AST) -> list[ast.expr] | None:
    """Elements of a parameters list: a literal list, or a local name built with `x = [...]` and
    `x.append(...)` in the enclosing function. None when it cannot be read statically."""
    if isinstance(value, ast.List):
        return list(value.elts)
    if isinstance(value, ast.Name):
        found: list[ast.expr] = []
        assigned = False
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == value.id
                                                    for t in node.targets):
                if not isinstance(node.value, ast.List):
                    return None
                found.extend(node.value.elts)
                assigned = True
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "append" and isinstance(node.func.value, ast.Name)
                  and node.func.value.id == value.id and len(node.args) == 1):
                found.append(node.args[0])
        return found if assigned else None
    return None


def _node_call(call: ast.Call, scope: ast.AST, constants: dict[str, str]) -> NodeCall:
    namespace = _keyword(call, "namespace")
    nc = NodeCall(
        line=call.lineno,
        package=_const_str(_keyword(call, "package"), constants),
        executable=_const_str(_keyword(call, "executable"), constants),
        name=_const_str(_keyword(call, "name"), constants),
        namespaced=namespace is not None
        and not (isinstance(namespace, ast.Constant) and namespace.value == ""),
    )
    params = _keyword(call, "parameters")
    if params is None:
        return nc
    elements = _list_elements(params, scope)
    if elements is None:
        nc.problems.append(f"line {call.lineno}: parameters= cannot be read statically")
        return nc
    for element in elements:
        if isinstance(element, ast.Dict):
            for key in element.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    nc.param_keys.append(key.value)
                else:
                    nc.problems.append(f"line {element.lineno}: parameter dict with a non-literal key")
        else:
            nc.param_files.append(element)
    return nc


def _include_call(call: ast.Call, constants: dict[str, str]) -> IncludeCall:
    inc = IncludeCall(line=call.lineno, package=None, launch_file=None)
    for node in ast.walk(call):
        if isinstance(node, ast.Call) and _call_name(node) == "get_package_share_directory" and node.args:
            inc.package = _const_str(node.args[0], constants)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.endswith(".launch.py"):
            inc.launch_file = node.value
    args = _keyword(call, "launch_arguments")
    if isinstance(args, ast.Call) and isinstance(args.func, ast.Attribute) \
            and isinstance(args.func.value, ast.Dict):
        args = args.func.value  # {...}.items()
    if isinstance(args, ast.Dict):
        for key, value in zip(args.keys, args.values, strict=True):
            name = _const_str(key, constants) if key is not None else None
            if name is None:
                raise AssertionError(f"line {call.lineno}: launch_arguments with a non-literal key")
            inc.arguments[name] = value
    return inc


def _launch_config_names(call: ast.Call, constants: dict[str, str]) -> str | None:
    """The name in LaunchConfiguration("x") or a local helper arg("x")."""
    if _call_name(call) in ("LaunchConfiguration", "arg", "_flag") and call.args:
        target = call.args[-1] if _call_name(call) == "_flag" else call.args[0]
        return _const_str(target, constants)
    return None


def parse_launch_file(path: Path) -> LaunchFile:
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = _module_constants(tree)
    declared: dict[str, ast.expr | None] = {}
    used: set[str] = set()
    nodes: list[NodeCall] = []
    includes: list[IncludeCall] = []
    config_names: set[str] = set()

    scopes: list[ast.AST] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    scope_of: dict[int, ast.AST] = {}
    for scope in scopes:  # innermost function wins (walk order: outer before inner)
        for node in ast.walk(scope):
            scope_of[id(node)] = scope

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and CONFIG_NAME.match(node.value):
            config_names.add(node.value)
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name == "DeclareLaunchArgument":
            arg_name = _const_str(node.args[0] if node.args else _keyword(node, "name"), constants)
            assert arg_name, f"{path.name}:{node.lineno}: DeclareLaunchArgument without a literal name"
            declared[arg_name] = _keyword(node, "default_value")
        elif name == "Node":
            nodes.append(_node_call(node, scope_of.get(id(node), tree), constants))
        elif name == "IncludeLaunchDescription":
            includes.append(_include_call(node, constants))
        else:
            used_name = _launch_config_names(node, constants)
            if used_name:
                used.add(used_name)
    return LaunchFile(path, tree, constants, declared, used, nodes, includes, config_names)


def launch_files() -> list[Path]:
    return sorted(LAUNCH_DIR.glob("*.launch.py"))


# --- setup.py -------------------------------------------------------------------------------------

def _string_value(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name) \
                    and value.value.id in constants:
                parts.append(constants[value.value.id])
            else:
                return None
        return "".join(parts)
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


@dataclass
class SetupInfo:
    console_scripts: dict[str, str]  # name -> "module:function"
    data_files: list[tuple[str, list[str]]]  # (destination, [source patterns])


def parse_setup_py(path: Path = REPO / "setup.py") -> SetupInfo:
    tree = ast.parse(path.read_text())
    constants = _module_constants(tree)
    scripts: dict[str, str] = {}
    data_files: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _call_name(node) == "setup"):
            continue
        entry_points = _keyword(node, "entry_points")
        if isinstance(entry_points, ast.Dict):
            for key, value in zip(entry_points.keys, entry_points.values, strict=True):
                if _string_value(key, constants) == "console_scripts" and isinstance(value, ast.List):
                    for element in value.elts:
                        text = _string_value(element, constants)
                        assert text and "=" in text, f"setup.py: unreadable script {ast.dump(element)}"
                        script, target = (part.strip() for part in text.split("=", 1))
                        scripts[script] = target
        files = _keyword(node, "data_files")
        if isinstance(files, ast.List):
            for element in files.elts:
                assert isinstance(element, ast.Tuple) and len(element.elts) == 2
                dest = _string_value(element.elts[0], constants)
                patterns: list[str] = []
                for sub in ast.walk(element.elts[1]):
                    text = _string_value(sub, constants) if isinstance(sub, ast.expr) else None
                    if text is not None and not isinstance(sub, ast.Name):
                        patterns.append(text)
                data_files.append((dest or "", patterns))
    return SetupInfo(scripts, data_files)


def installed_by_data_files(relative: str, setup: SetupInfo) -> str | None:
    """The install destination of a repository file per setup.py's data_files, or None."""
    from fnmatch import fnmatch

    for dest, patterns in setup.data_files:
        if any(fnmatch(relative, p) for p in patterns):
            return dest
    return None


# --- parameter specs ------------------------------------------------------------------------------

# Where a node's ParameterSpec list lives when its node module does not expose one (yet).
KNOWN_SPECS = {
    "policy_node": ("av_td3_ros.ros.parameters", "POLICY_NODE_PARAMETERS"),
    "trainer_node": ("av_td3_ros.ros.parameters", "TRAINER_NODE_PARAMETERS"),
    "episode_manager": ("av_td3_ros.nodes.episode_manager", "EPISODE_MANAGER_PARAMETERS"),
}


def node_parameter_names(executable: str, setup: SetupInfo) -> set[str] | None:
    """Names declared by one of our nodes: its module's *_PARAMETERS list of ParameterSpec (the
    list the node passes to declare_parameters), else the KNOWN_SPECS entry; None if none."""
    from av_td3_ros.ros.parameters import ParameterSpec

    target = setup.console_scripts.get(executable)
    candidates = []
    if target:
        module = importlib.import_module(target.split(":")[0])
        candidates = [
            value for key, value in vars(module).items()
            if key.endswith("_PARAMETERS") and isinstance(value, list) and value
            and all(isinstance(v, ParameterSpec) for v in value)
        ]
    if len(candidates) != 1 and executable in KNOWN_SPECS:
        module_name, attr = KNOWN_SPECS[executable]
        module = importlib.import_module(module_name)
        candidates = [getattr(module, attr)] if hasattr(module, attr) else []
    if len(candidates) != 1:
        return None
    return {spec.name for spec in candidates[0]}


# --- the CARLA ROS bridge (what its real launch files and nodes accept) ---------------------------
# From carla-simulator/ros-bridge (ROS 2 branch; the Humble forks keep these names):
# carla_ros_bridge/launch/carla_ros_bridge.launch.py declares these arguments;
# carla_spawn_objects reads objects_definition_file, spawn_sensors_only and spawn_point_<id>;
# carla_waypoint_publisher reads host, port, timeout, role_name and subscribes /carla/<role>/goal.
BRIDGE_LAUNCH_ARGUMENTS = {
    "host", "port", "timeout", "passive", "synchronous_mode",
    "synchronous_mode_wait_for_vehicle_control_command", "fixed_delta_seconds", "town",
    "register_all_sensors", "ego_vehicle_role_name",
}
EXTERNAL_NODES = {
    ("carla_spawn_objects", "carla_spawn_objects"): {"objects_definition_file", "spawn_sensors_only"},
    ("carla_waypoint_publisher", "carla_waypoint_publisher"): {"host", "port", "timeout", "role_name"},
}
EXTERNAL_INCLUDES = {("carla_ros_bridge", "carla_ros_bridge.launch.py"): BRIDGE_LAUNCH_ARGUMENTS}


# --- ROS 2 parameter file keys --------------------------------------------------------------------

def params_key_matches(key: str, node_name: str, namespaced: bool) -> bool:
    """Whether a params-file section key applies to node `node_name` (rcl rules: a key without a
    leading '/' is a root-namespace name; '/**' matches every node, '/**/name' every namespace).
    `namespaced`: the node runs in a (launch-time) namespace we cannot know statically."""
    if key in ("/**", "**"):
        return True
    if key in (f"/**/{node_name}", f"**/{node_name}"):
        return True
    if namespaced:
        return False
    return key.lstrip("/") == node_name


# --- Dockerfile ---------------------------------------------------------------------------------

@dataclass
class Instruction:
    stage: str  # the `AS` name of the stage it belongs to ("" before any FROM)
    keyword: str  # upper case: FROM, RUN, COPY, ARG, ENV, ...
    text: str  # arguments, continuation lines joined, comments dropped
    line: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    out: list[Instruction] = []
    stage = ""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1].strip())
            continue
        buffer.append(line)
        full = " ".join(part for part in buffer if part)
        buffer = []
        keyword, _, rest = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
            stage = match.group(1) if match else ""
        out.append(Instruction(stage, keyword, rest.strip(), start))
    return out


def dockerfile_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults (first definition wins)."""
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.text:
            name, value = ins.text.split("=", 1)
            out.setdefault(name.strip(), value.strip().strip('"'))
    return out


def evaluate_constraints(python_version: str, path: Path = REPO / "requirements" / "constraints.txt"):
    """{canonical name: Requirement} of the constraint lines that apply on CPython `python_version`
    on Linux x86_64 (markers evaluated for THAT interpreter, which pip itself does not do)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
           "os_name": "posix"}
    out = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name not in out, f"constraints.txt: two pins for {req.name} on Python {python_version}"
        out[name] = req
    return out


def pinned_version(req) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==":
        return specs[0].version
    return None
