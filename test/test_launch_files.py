"""The launch files, read statically (the launch package cannot be installed here): every
executable they start exists (our console scripts, or the CARLA ROS bridge's real executables),
every parameter they pass is one the node declares (our ParameterSpec lists, imported - never
copied - or the bridge's documented parameters), every config / parameter file they name exists,
is installed by setup.py and fits the node, and config/objects.json is the bridge's format with
the sensors the policy node subscribes."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml
from launch_static import (
    CONFIG_DIR,
    EXTERNAL_INCLUDES,
    EXTERNAL_NODES,
    REPO,
    installed_by_data_files,
    launch_files,
    node_parameter_names,
    params_key_matches,
    parse_launch_file,
    parse_setup_py,
)

from av_td3_ros.episodes import fleet
from av_td3_ros.ros.parameters import yaml_parameters

PACKAGE = "av_td3_ros"
EXPECTED = {"carla.launch.py", "policy.launch.py", "embedded.launch.py"}
SETUP = parse_setup_py()
LAUNCH_FILES = launch_files()
PARSED = {p.name: parse_launch_file(p) for p in LAUNCH_FILES}
ALWAYS_ALLOWED = {"use_sim_time"}  # rclpy declares it on every node


def _nodes():
    for name, lf in PARSED.items():
        for node in lf.nodes:
            yield pytest.param(lf, node, id=f"{name}:{node.line}:{node.executable}")


def test_the_three_launch_files_exist_and_setup_py_installs_them():
    assert EXPECTED <= set(PARSED), sorted(PARSED)
    for path in LAUNCH_FILES:
        dest = installed_by_data_files(f"launch/{path.name}", SETUP)
        assert dest == f"share/{PACKAGE}/launch", f"{path.name} is not installed by setup.py data_files"


@pytest.mark.parametrize("name", sorted(PARSED))
def test_launch_arguments_used_are_declared_and_declared_ones_used(name):
    lf = PARSED[name]
    assert lf.used - set(lf.declared) == set(), f"{name}: used but never declared"
    assert set(lf.declared) - lf.used == set(), f"{name}: declared but never used"


@pytest.mark.parametrize("lf,node", list(_nodes()))
def test_every_executable_exists(lf, node):
    assert node.package and node.executable, f"{lf.path.name}:{node.line}: package/executable not literal"
    if node.package == PACKAGE:
        assert node.executable in SETUP.console_scripts, (
            f"{lf.path.name}:{node.line}: {node.executable} is not a console script in setup.py "
            f"(have {sorted(SETUP.console_scripts)})"
        )
    else:
        assert (node.package, node.executable) in EXTERNAL_NODES, (
            f"{lf.path.name}:{node.line}: unknown executable {node.package}/{node.executable}"
        )


@pytest.mark.parametrize("lf,node", list(_nodes()))
def test_every_parameter_passed_is_declared_by_the_node(lf, node):
    assert not node.problems, node.problems
    keys = set(node.param_keys)
    if node.package == PACKAGE:
        declared = node_parameter_names(node.executable, SETUP)
        assert declared is not None, (
            f"{node.executable}: no ParameterSpec list found (a *_PARAMETERS list in its module)"
        )
    else:
        declared = EXTERNAL_NODES[(node.package, node.executable)]
        keys = {k for k in keys if not k.startswith("spawn_point_")}  # carla_spawn_objects: per vehicle id
    unknown = keys - declared - ALWAYS_ALLOWED
    assert not unknown, f"{lf.path.name}:{node.line}: {node.executable} does not declare {sorted(unknown)}"


def _config_files_of(lf, expr: ast.expr) -> list[str]:
    """Config file names a parameters-list entry refers to: arg("x") / LaunchConfiguration("x")
    resolved through the declared default, or a literal in the expression itself."""
    names = []
    for sub in ast.walk(expr):
        if isinstance(sub, ast.Call) and sub.args and isinstance(sub.args[0], ast.Constant):
            fn = sub.func.id if isinstance(sub.func, ast.Name) else getattr(sub.func, "attr", "")
            if fn in ("arg", "LaunchConfiguration") and sub.args[0].value in lf.declared:
                default = lf.declared[sub.args[0].value]
                if default is not None:
                    names += _config_files_of(lf, default)
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) \
                and sub.value.endswith((".yaml", ".yml")):
            names.append(sub.value)
    return names


@pytest.mark.parametrize("lf,node", [p for p in _nodes() if p.values[1].param_files])
def test_parameter_files_exist_apply_to_the_node_and_hold_only_declared_keys(lf, node):
    declared = node_parameter_names(node.executable, SETUP) if node.package == PACKAGE else None
    for expr in node.param_files:
        names = _config_files_of(lf, expr)
        assert names, f"{lf.path.name}:{node.line}: cannot tell which parameter file is passed"
        for name in names:
            path = CONFIG_DIR / name
            assert path.is_file(), f"{lf.path.name}: config/{name} does not exist"
            sections = yaml.safe_load(path.read_text())
            matching = [k for k in sections if params_key_matches(k, node.name, node.namespaced)]
            assert matching, (
                f"config/{name}: no section applies to {'namespaced ' if node.namespaced else ''}"
                f"node '{node.name}' (keys {list(sections)}; use '/**' or '/**/{node.name}')"
            )
            if declared is not None:
                for key in matching:
                    unknown = set(yaml_parameters(path, node_key=key)) - declared - ALWAYS_ALLOWED
                    assert not unknown, (
                        f"config/{name} [{key}]: {node.executable} does not declare {sorted(unknown)}")


@pytest.mark.parametrize("name", sorted(PARSED))
def test_included_launch_files_are_the_bridges_and_get_only_its_arguments(name):
    for inc in PARSED[name].includes:
        allowed = EXTERNAL_INCLUDES.get((inc.package, inc.launch_file))
        assert allowed is not None, f"{name}:{inc.line}: unknown include {inc.package}/{inc.launch_file}"
        unknown = set(inc.arguments) - allowed
        assert not unknown, f"{name}:{inc.line}: {inc.launch_file} declares no {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(PARSED))
def test_config_files_named_exist_and_are_installed(name):
    for config in PARSED[name].config_names:
        assert (CONFIG_DIR / config).is_file(), f"{name} names config/{config}, which does not exist"
        assert installed_by_data_files(f"config/{config}", SETUP) == f"share/{PACKAGE}/config", (
            f"config/{config} is not installed by setup.py data_files"
        )


def test_carla_launch_runs_the_bridge_synchronously_waiting_for_each_control():
    lf = PARSED["carla.launch.py"]
    (bridge,) = lf.includes
    assert (bridge.package, bridge.launch_file) == ("carla_ros_bridge", "carla_ros_bridge.launch.py")
    consts = {k: v.value for k, v in bridge.arguments.items() if isinstance(v, ast.Constant)}
    assert consts["synchronous_mode"] == "True"
    assert consts["synchronous_mode_wait_for_vehicle_control_command"] == "True"
    assert {"host", "port", "town", "fixed_delta_seconds", "ego_vehicle_role_name"} <= set(bridge.arguments)
    assert ast.literal_eval(lf.declared["fixed_delta_seconds"]) == "0.05"
    for arg in ("role_name", "host", "port", "town", "mode", "weights", "policy_config",
                "trainer_config", "num_vehicles"):
        assert arg in lf.declared, arg
    started = {(n.package, n.executable) for n in lf.nodes}
    assert started == {
        ("carla_spawn_objects", "carla_spawn_objects"),
        ("carla_waypoint_publisher", "carla_waypoint_publisher"),
        (PACKAGE, "episode_manager"),
        (PACKAGE, "policy_node"),
        (PACKAGE, "trainer_node"),
    }
    by_exe = {n.executable: n for n in lf.nodes}
    # one policy node and one waypoint publisher per car, each in its car's namespace; one trainer
    assert by_exe["policy_node"].namespaced and by_exe["carla_waypoint_publisher"].namespaced
    assert not by_exe["trainer_node"].namespaced
    assert {"role_name", "mode", "weights_file", "reset_service", "use_sim_time"} <= set(
        by_exe["policy_node"].param_keys)
    assert {"role_names", "reset_service", "host", "port", "use_sim_time"} <= set(
        by_exe["episode_manager"].param_keys)
    assert "objects_definition_file" in by_exe["carla_spawn_objects"].param_keys


def test_policy_launch_deploys_one_policy_node_with_a_weights_file_and_nothing_else():
    lf = PARSED["policy.launch.py"]
    assert not lf.includes
    (node,) = lf.nodes
    assert (node.package, node.executable) == (PACKAGE, "policy_node")
    mode = [v for n in ast.walk(lf.tree) if isinstance(n, ast.Dict)
            for k, v in zip(n.keys, n.values, strict=True)
            if isinstance(k, ast.Constant) and k.value == "mode"]
    assert [ast.literal_eval(v) for v in mode] == ["deploy"]
    assert lf.declared["weights"] is None, "weights must be a required argument"
    for topic in ("camera_topic", "odometry_topic", "route_topic", "control_topic"):
        assert topic in node.param_keys, topic
    assert "weights_file" in node.param_keys


def test_embedded_launch_replaces_carla_with_sim_node():
    lf = PARSED["embedded.launch.py"]
    assert not lf.includes
    assert {(n.package, n.executable) for n in lf.nodes} == {
        (PACKAGE, "sim_node"), (PACKAGE, "policy_node"), (PACKAGE, "trainer_node")}


def test_launch_files_import_only_what_the_images_system_python_has():
    # `ros2 launch` runs under /usr/bin/python3, outside the image's venv: launch files may use
    # launch, launch_ros, ament_index_python, the stdlib and av_td3_ros.episodes (stdlib only).
    allowed_roots = {"launch", "launch_ros", "ament_index_python", "av_td3_ros"}
    for lf in PARSED.values():
        for node in ast.walk(lf.tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                assert root in allowed_roots or root in sys.stdlib_module_names, f"{lf.path.name}: {name}"
                if root == "av_td3_ros":
                    assert name in ("av_td3_ros.episodes", "av_td3_ros.episodes.fleet"), name
    for module in ("__init__", "errors", "fleet", "manager", "poses", "spawn"):
        tree = ast.parse((REPO / "av_td3_ros" / "episodes" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "__future__", (
                    f"episodes/{module}.py: {root}")


# --- objects.json and the fleet ------------------------------------------------------------------

def test_objects_json_is_the_one_car_fleet_definition_with_the_sensors_the_policy_uses():
    data = json.loads((CONFIG_DIR / "objects.json").read_text())
    assert data == fleet.objects_definition([fleet.DEFAULT_ROLE])
    (car,) = data["objects"]
    assert car["id"] == "ego_vehicle" and car["type"].startswith("vehicle.")
    sensors = {s["id"]: s for s in car["sensors"]}
    assert sensors["rgb_front"]["type"] == "sensor.camera.rgb"
    assert (sensors["rgb_front"]["image_size_x"], sensors["rgb_front"]["image_size_y"]) == (800, 600)
    assert sensors["rgb_front"]["fov"] == 90.0
    assert sensors["rgb_front"]["spawn_point"]["x"] > 0  # in front of the car's centre
    assert sensors["odometry"]["type"] == "sensor.pseudo.odom"
    assert sensors["collision"]["type"] == "sensor.other.collision"
    assert sensors["lane_invasion"]["type"] == "sensor.other.lane_invasion"
    assert sensors["control"]["type"] == "actor.pseudo.control"  # /carla/<role>/control/set_transform


def test_the_sensor_ids_give_the_topics_the_policy_node_subscribes_by_default():
    from av_td3_ros.ros.parameters import POLICY_NODE_PARAMETERS

    defaults = {s.name: s.default for s in POLICY_NODE_PARAMETERS}
    ids = {s["id"] for s in fleet.ego_sensors()}
    for param, sensor in (("camera_topic", "rgb_front"), ("odometry_topic", "odometry"),
                          ("collision_topic", "collision"), ("lane_invasion_topic", "lane_invasion")):
        assert defaults[param].startswith(f"/carla/{{role_name}}/{sensor}"), defaults[param]
        assert sensor in ids
    assert defaults["reset_service"] == fleet.SINGLE_RESET_SERVICE
    assert defaults["role_name"] == fleet.DEFAULT_ROLE


def test_fleet_names_several_cars_hero0_to_heroN_in_the_bridges_ego_list(tmp_path):
    assert fleet.role_names(1) == ["ego_vehicle"]
    assert fleet.role_names("1", "car_a") == ["car_a"]
    roles = fleet.role_names("3")
    assert roles == ["hero0", "hero1", "hero2"]
    for bad in (0, fleet.MAX_VEHICLES + 1, "two", -1):
        with pytest.raises(ValueError):
            fleet.role_names(bad)
    # launch_ros parses the argument as YAML: it becomes the bridge's string-array parameter
    assert yaml.safe_load(fleet.bridge_ego_role_names(roles)) == roles
    assert [fleet.reset_service_name(r, roles) for r in roles] == [
        "/av_td3/hero0/reset_episode", "/av_td3/hero1/reset_episode", "/av_td3/hero2/reset_episode"]
    assert fleet.reset_service_name("ego_vehicle", ["ego_vehicle"]) == "/av_td3/reset_episode"
    path = Path(fleet.write_objects_definition(roles, str(tmp_path)))
    data = json.loads(path.read_text())
    assert [o["id"] for o in data["objects"]] == roles
    assert all(o["sensors"] == fleet.ego_sensors() for o in data["objects"])
    with pytest.raises(ValueError):
        fleet.objects_definition(["hero0", "hero0"])


# --- the launch-time logic, executed against stand-ins of launch / launch_ros -------------------
# The AST checks above see every literal; these run each file's OpaqueFunction (role names,
# namespaces, per-car services, the generated objects file) with minimal stand-ins of the launch
# API, to catch what only shows when the function runs.

class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _stub_modules(share: Path) -> dict:
    import types

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    return {
        "launch": module("launch"),
        "launch.actions": module("launch.actions", DeclareLaunchArgument=_Recorded,
                                 IncludeLaunchDescription=_Recorded, LogInfo=_Recorded,
                                 OpaqueFunction=_Recorded),
        "launch.launch_description": module("launch.launch_description", LaunchDescription=_Recorded),
        "launch.launch_description_sources": module("launch.launch_description_sources",
                                                    PythonLaunchDescriptionSource=_Recorded),
        "launch.substitutions": module("launch.substitutions", LaunchConfiguration=_LaunchConfiguration),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=_Recorded),
        "ament_index_python": module("ament_index_python"),
        "ament_index_python.packages": module(
            "ament_index_python.packages", get_package_share_directory=lambda pkg: str(share / pkg)),
    }


def _run_launch(name: str, monkeypatch, tmp_path, **overrides) -> list:
    import importlib.util

    for key, value in _stub_modules(tmp_path / "share").items():
        monkeypatch.setitem(sys.modules, key, value)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    context = {}
    for entity in entities:
        if "default_value" in entity.kwargs or (entity.args and isinstance(entity.args[0], str)):
            context[entity.args[0]] = entity.kwargs.get("default_value")
    context.update({k: str(v) for k, v in overrides.items()})
    (opaque,) = [e for e in entities if "function" in e.kwargs]
    return opaque.kwargs["function"](context)


def _launched_nodes(actions, executable=None):
    return [a.kwargs for a in actions if "executable" in a.kwargs
            and (executable is None or a.kwargs["executable"] == executable)]


def _params(node_kwargs) -> dict:
    out = {}
    for entry in node_kwargs["parameters"]:
        if isinstance(entry, dict):
            out.update(entry)
    return out


def test_carla_launch_with_three_cars(monkeypatch, tmp_path):
    actions = _run_launch("carla.launch.py", monkeypatch, tmp_path, num_vehicles=3, spawn_seed=5)
    policies = _launched_nodes(actions, "policy_node")
    assert [p["namespace"] for p in policies] == ["hero0", "hero1", "hero2"]
    assert [_params(p)["reset_service"] for p in policies] == [
        f"/av_td3/hero{i}/reset_episode" for i in range(3)]
    assert all(_params(p)["use_sim_time"] is True and _params(p)["mode"] == "train" for p in policies)
    assert all(p["parameters"][0].endswith("config/policy.yaml") for p in policies)
    (manager,) = _launched_nodes(actions, "episode_manager")
    mp = _params(manager)
    assert mp["role_names"] == ["hero0", "hero1", "hero2"] and mp["seed"] == 5
    assert mp["reset_service"] == "/av_td3/{role_name}/reset_episode"
    assert [w["namespace"] for w in _launched_nodes(actions, "carla_waypoint_publisher")] == [
        "hero0", "hero1", "hero2"]
    (spawner,) = _launched_nodes(actions, "carla_spawn_objects")
    objects = json.loads(Path(_params(spawner)["objects_definition_file"]).read_text())
    assert [o["id"] for o in objects["objects"]] == ["hero0", "hero1", "hero2"]
    (include,) = [a for a in actions if "launch_arguments" in a.kwargs]
    args = dict(include.kwargs["launch_arguments"])
    assert yaml.safe_load(args["ego_vehicle_role_name"]) == ["hero0", "hero1", "hero2"]
    assert args["synchronous_mode_wait_for_vehicle_control_command"] == "True"
    assert include.args[0].args[0].endswith("share/carla_ros_bridge/carla_ros_bridge.launch.py")
    assert len(_launched_nodes(actions, "trainer_node")) == 1


def test_carla_launch_with_one_car_uses_the_shipped_objects_file_and_parts_switch_off(monkeypatch, tmp_path):
    actions = _run_launch("carla.launch.py", monkeypatch, tmp_path, trainer="false",
                          checkpoint_dir="/data/checkpoints/x")
    (spawner,) = _launched_nodes(actions, "carla_spawn_objects")
    assert _params(spawner)["objects_definition_file"].endswith("share/av_td3_ros/config/objects.json")
    (policy,) = _launched_nodes(actions, "policy_node")
    assert policy["namespace"] == "ego_vehicle"
    assert _params(policy)["reset_service"] == "/av_td3/reset_episode"
    assert not _launched_nodes(actions, "trainer_node")
    actions = _run_launch("carla.launch.py", monkeypatch, tmp_path, bridge="false", policy="false",
                          episode_manager="false", log_dir="/data/runs/t")
    (trainer,) = _launched_nodes(actions)
    assert trainer["executable"] == "trainer_node"
    assert _params(trainer) == {"log_dir": "/data/runs/t"}  # '' keeps the config file's value
    with pytest.raises(ValueError, match="must be true or false"):
        _run_launch("carla.launch.py", monkeypatch, tmp_path, trainer="maybe")


def test_policy_launch_needs_an_existing_weights_file(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="needs weights:="):
        _run_launch("policy.launch.py", monkeypatch, tmp_path, weights="")
    with pytest.raises(RuntimeError, match="does not exist"):
        _run_launch("policy.launch.py", monkeypatch, tmp_path, weights=str(tmp_path / "none.safetensors"))
    weights = tmp_path / "policy.safetensors"
    weights.write_bytes(b"x")
    actions = _run_launch("policy.launch.py", monkeypatch, tmp_path, weights=str(weights),
                          use_sim_time="false", camera_topic="/cam/image_raw")
    (node,) = _launched_nodes(actions)
    p = _params(node)
    assert (p["mode"], p["weights_file"], p["use_sim_time"], p["weights_topic"]) == (
        "deploy", str(weights), False, "")
    assert p["camera_topic"] == "/cam/image_raw"
    assert p["control_topic"] == "/carla/{role_name}/vehicle_control_cmd"


def test_embedded_launch_shares_the_reset_service_between_sim_and_policy(monkeypatch, tmp_path):
    actions = _run_launch("embedded.launch.py", monkeypatch, tmp_path)
    (sim,) = _launched_nodes(actions, "sim_node")
    (policy,) = _launched_nodes(actions, "policy_node")
    assert _params(sim)["reset_service"] == _params(policy)["reset_service"] == "/av_td3/reset_episode"
    assert _params(sim)["role_name"] == _params(policy)["role_name"] == "ego_vehicle"
