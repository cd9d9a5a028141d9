"""docker/compose.yaml is consistent with the image, the launch files and CARLA (no Docker engine
here: the file is parsed and cross-checked). Plus the container healthcheck tool, run for real
against rclpy, and the build context (.dockerignore) containing everything the Dockerfile copies.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import yaml
from launch_static import (
    REPO,
    dockerfile_args,
    dockerfile_instructions,
    evaluate_constraints,
    installed_by_data_files,
    parse_launch_file,
    parse_setup_py,
    pinned_version,
)

COMPOSE_FILE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
INSTRUCTIONS = dockerfile_instructions(DOCKERFILE)
RAW = yaml.safe_load(COMPOSE_FILE.read_text())  # SafeLoader resolves the `<<:` merge keys
SERVICES: dict = RAW["services"]
ROS_SERVICES = sorted(name for name in SERVICES if name != "carla")
_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value):
    """Compose interpolation with every variable unset: ${X:-default} -> default, ${X} -> ''."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def env(service: str) -> dict[str, str]:
    e = SERVICES[service].get("environment", {})
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in interpolate(e).items()}


def profiles(service: str) -> set[str]:
    return set(SERVICES[service].get("profiles", []))


def active(profile: str) -> set[str]:
    """Services `docker compose --profile <profile> up` starts."""
    return {name for name in SERVICES if not profiles(name) or profile in profiles(name)}


def command(service: str) -> list[str]:
    cmd = interpolate(SERVICES[service].get("command", []))
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def image_env() -> dict[str, str]:
    out = {}
    for ins in INSTRUCTIONS:
        if ins.keyword == "ENV" and ins.stage == "nodes":
            for item in shlex.split(ins.text):
                if "=" in item:
                    k, v = item.split("=", 1)
                    out[k] = v
    return out


def test_the_services_and_their_profiles():
    assert {"carla", "bridge", "episode_manager", "policy", "trainer", "sim"} <= set(SERVICES)
    assert active("carla") >= {"carla", "bridge", "episode_manager", "policy", "trainer"}
    assert "sim" not in active("carla")
    assert active("embedded") >= {"sim", "policy", "trainer"}
    assert not {"carla", "bridge", "episode_manager"} & active("embedded")
    assert {"policy", "trainer"} <= active("no-profile")  # join a simulator that runs elsewhere


def _gpu_devices(service: str) -> list[dict]:
    deploy = SERVICES[service].get("deploy", {})
    return deploy.get("resources", {}).get("reservations", {}).get("devices", [])


def test_carla_runs_offscreen_on_a_reserved_gpu_and_the_embedded_profile_needs_none():
    carla = SERVICES["carla"]
    assert carla["image"].startswith("carlasim/carla:")
    assert "-RenderOffScreen" in command("carla")
    (device,) = _gpu_devices("carla")
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert env("carla")["NVIDIA_DRIVER_CAPABILITIES"] in ("all", "graphics,compute,utility")  # Vulkan
    for name in active("embedded"):
        assert not _gpu_devices(name), f"{name} reserves a GPU in the embedded profile"
        assert "carla" not in SERVICES[name].get("depends_on", {}), name


def test_the_carla_client_in_the_image_equals_the_server_image_tag():
    server = SERVICES["carla"]["image"].split(":", 1)[1]
    args = dockerfile_args(INSTRUCTIONS)
    assert args["CARLA_VERSION"] == server  # the server image the bridge stage copies agents from
    from_lines = [i.text for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert "carlasim/carla:${CARLA_VERSION} AS carla-pythonapi" in from_lines
    # the image runs Python 3.10: its carla pin is the python_version < "3.11" line
    assert pinned_version(evaluate_constraints("3.10")["carla"]) == server
    # and the bridge's own client check reads the same version from the file the image writes
    assert bridge_reads_carla_version(server) == server


def _stage_runs(stage: str) -> str:
    return " ".join(i.text for i in INSTRUCTIONS if i.stage == stage and i.keyword == "RUN")


def bridge_reads_carla_version(version: str) -> str:
    """What carla_ros_bridge compares with the client's version: it reads its CARLA_VERSION file
    with `f.read()[:-1]` (the file its own build writes ends with a newline)."""
    match = re.search(r"printf '([^']*)' \"\$\{CARLA_VERSION\}\" > (\S+)", _stage_runs("bridge"))
    assert match, "the bridge stage writes no CARLA_VERSION file with printf"
    assert match.group(2).endswith("carla_ros_bridge/src/carla_ros_bridge/CARLA_VERSION")
    written = match.group(1).replace("%s", version, 1).replace("\\n", "\n")
    return written[:-1]


def test_the_carla_version_file_is_written_with_the_newline_the_bridge_strips():
    assert bridge_reads_carla_version("0.9.15") == "0.9.15"  # not "0.9.1": the bridge would exit(1)


def test_the_image_builds_the_real_carla_msgs_once_and_checks_every_copied_package():
    args = dockerfile_args(INSTRUCTIONS)
    copy = ET.parse(REPO / "interfaces" / "carla_msgs" / "package.xml").getroot()
    # the real package at the release our copy transcribes, from its own repository's tag
    assert args["CARLA_MSGS_REPO"] == "https://github.com/carla-simulator/ros-carla-msgs.git"
    assert args["CARLA_MSGS_REF"] == copy.findtext("version") == "1.3.0"
    nodes, bridge = _stage_runs("nodes"), _stage_runs("bridge")
    clone = r'git clone .*--branch "\$\{CARLA_MSGS_REF\}" "\$\{CARLA_MSGS_REPO\}" src/carla_msgs'
    assert re.search(clone, nodes)
    assert "touch src/interfaces/carla_msgs/COLCON_IGNORE" in nodes  # ours is never built in the image
    # the other copies follow the venv's rule (ours only where the ROS install lacks the real one)
    assert 'python3 src/tools/copied_interfaces.py state "${pkg}"' in nodes
    assert nodes.index("copied_interfaces.py state") < nodes.index('colcon)" build')
    # after each build: every copied package imports and matches, carla_msgs is the real one
    for runs in (nodes, bridge):
        checks = [m.start() for m in re.finditer(r'copied_interfaces\.py"? check --real carla_msgs', runs)]
        assert checks and checks[-1] > runs.index('colcon)" build')
    # the fork's carla_msgs submodule is never cloned, rosdep never installs another carla_msgs
    # and the bridge workspace builds none
    assert "--recurse-submodules" not in bridge and "submodule update" not in bridge
    assert "--skip-keys carla_msgs" in bridge and "[ ! -e install/carla_msgs ]" in bridge
    copied = {shlex.split(i.text)[0] for i in INSTRUCTIONS if i.keyword == "COPY" and i.stage == "nodes"}
    assert "tools/copied_interfaces.py" in copied


def test_the_bridge_build_fails_unless_its_waypoint_publisher_takes_a_goal_topic_the_launch_file_remaps():
    match = re.search(r'grep -Eq "((?:[^"\\]|\\.)+)" "\$\{waypoint_publisher\}"', _stage_runs("bridge"))
    assert match, "the bridge stage does not check the waypoint publisher's goal topic"
    # bash double quotes: only \" and \\ lose their backslash (ERE and Python agree on the rest)
    pattern = re.compile(re.sub(r'\\(["\\])', r"\1", match.group(1)))
    upstream = 'self.create_subscriber(PoseStamped, "/carla/{}/goal".format(self.role_name), self.on_goal)'
    fork = "self.new_subscription(PoseStamped, f'/carla/{self.role_name}/goal_pose', self.on_goal, 10)"
    assert pattern.search(upstream) and pattern.search(fork)
    assert not pattern.search('self.new_subscription(PoseStamped, "/move_base_simple/goal", self.on_goal)')


def test_one_ros_domain_id_everywhere_and_the_same_middleware():
    ids = {name: env(name).get("ROS_DOMAIN_ID") for name in ROS_SERVICES}
    assert None not in ids.values(), ids
    assert len(set(ids.values())) == 1, ids
    domain = int(next(iter(ids.values())))
    assert 0 <= domain <= 101  # valid on Linux with the default ephemeral port range
    assert {env(name)["RMW_IMPLEMENTATION"] for name in ROS_SERVICES} == {"rmw_fastrtps_cpp"}


def test_the_shared_memory_dds_profile_exists_in_the_image_and_every_ros_container_can_use_it():
    workspace = image_env()["AV_TD3_WS"]
    setup = parse_setup_py()
    for name in ROS_SERVICES:
        e = env(name)
        path = e["FASTRTPS_DEFAULT_PROFILES_FILE"]
        assert e.get("FASTDDS_DEFAULT_PROFILES_FILE") == path  # Fast DDS 2 and 3 names
        prefix = f"{workspace}/install/av_td3_ros/share/av_td3_ros/config/"
        assert path.startswith(prefix), path
        source = f"config/{path[len(prefix):]}"
        assert (REPO / source).is_file(), f"{source} does not exist"
        assert installed_by_data_files(source, setup) == "share/av_td3_ros/config"
        # shared memory across containers: one network namespace (Fast DDS decides "same host"
        # from the network interfaces), one IPC namespace (/dev/shm), one PID namespace (GUIDs
        # use the PID), and one uid (segments are created by one container, opened by another)
        s = SERVICES[name]
        assert (s.get("network_mode"), s.get("ipc"), s.get("pid")) == ("host", "host", "host"), name
        assert s.get("user") == "1000:1000", name
    profile = ET.parse(REPO / "config" / "fastdds_shm.xml").getroot()
    types = {el.text for el in profile.iter() if el.tag.endswith("type")}
    assert {"SHM", "UDPv4"} <= types  # SHM for big frames + UDP to talk to default participants
    participants = [el for el in profile.iter() if el.tag.endswith("participant")]
    assert any(el.get("is_default_profile") == "true" for el in participants)
    users = [i.text for i in INSTRUCTIONS if i.keyword == "USER"]
    assert users[-1] == "1000:1000"


def test_each_service_restarts_and_the_bridge_also_after_a_clean_exit():
    for name, service in SERVICES.items():
        assert service.get("restart") in ("on-failure", "unless-stopped", "always"), name
    # the bridge exits 0 after failing to connect while CARLA still loads: on-failure would not restart it
    assert SERVICES["bridge"]["restart"] in ("unless-stopped", "always")
    for name in ("bridge", "episode_manager"):
        assert SERVICES[name]["depends_on"]["carla"]["condition"] == "service_healthy"


def test_every_service_has_a_healthcheck_the_image_can_run():
    copied = {shlex.split(i.text)[-1] for i in INSTRUCTIONS if i.keyword == "COPY"}
    sys.path.insert(0, str(HEALTHCHECK.parent))
    from healthcheck import message_class

    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        test = [str(t) for t in check["test"]]
        assert test[0] == "CMD", name
        if "av-td3-healthcheck" in test:
            assert test[1] == "/usr/local/bin/av-td3-entrypoint" and test[1] in copied
            assert "/usr/local/bin/av-td3-healthcheck" in copied
            args = dict(zip(test[3::2], test[4::2], strict=False))
            message_class(args["--type"])  # the message type exists
            wait = float(args.get("--timeout", 10))
            assert _seconds(check["timeout"]) > wait + 5, f"{name}: docker would kill the check first"


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert match, text
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_trainer_runs_and_checkpoints_live_in_named_volumes_the_image_lets_it_write():
    trainer = SERVICES["trainer"]
    mounts = dict(v.split(":", 1) for v in interpolate(trainer["volumes"]))
    assert mounts == {"runs": "/data/runs", "checkpoints": "/data/checkpoints"}
    assert {"runs", "checkpoints"} <= set(RAW.get("volumes", {}))
    args = dict(a.split(":=", 1) for a in command("trainer") if ":=" in a)
    assert args["log_dir"].startswith("/data/runs/")
    assert args["checkpoint_dir"].startswith("/data/checkpoints/")
    runs = " ".join(i.text for i in INSTRUCTIONS if i.keyword == "RUN" and i.stage == "nodes")
    assert "mkdir -p /data/runs /data/checkpoints" in runs and "chown -R av:av /data" in runs


def test_compose_commands_launch_existing_files_with_declared_arguments():
    for name in ROS_SERVICES:
        cmd = command(name)
        if cmd[:2] != ["ros2", "launch"]:
            continue
        assert cmd[2] == "av_td3_ros", name
        launch = REPO / "launch" / cmd[3]
        assert launch.is_file(), f"{name}: {cmd[3]} does not exist"
        declared = parse_launch_file(launch).declared
        for arg in cmd[4:]:
            key = arg.split(":=", 1)[0]
            assert key in declared, f"{name}: {cmd[3]} declares no argument {key}"
    # each part runs once: the ROS services split carla.launch.py's parts between them
    started = {}
    for name in ROS_SERVICES:
        cmd = command(name)
        if cmd[:4] == ["ros2", "launch", "av_td3_ros", "carla.launch.py"]:
            off = {a.split(":=")[0] for a in cmd[4:] if a.endswith(":=false")}
            for part in {"bridge", "episode_manager", "policy", "trainer"} - off:
                started.setdefault(part, []).append(name)
    assert started == {"bridge": ["bridge"], "episode_manager": ["episode_manager"],
                       "policy": ["policy"], "trainer": ["trainer"]}


def test_images_are_built_from_this_dockerfile_with_cpu_torch_by_default():
    stages = {i.text.split()[-1] for i in INSTRUCTIONS if i.keyword == "FROM" and " AS " in i.text}
    for name in ROS_SERVICES:
        build = SERVICES[name]["build"]
        assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO
        assert (REPO / build["dockerfile"]) == DOCKERFILE
        assert build["target"] in stages
        assert interpolate(build["args"]["TORCH_INDEX_URL"]) == "https://download.pytorch.org/whl/cpu"
    assert SERVICES["bridge"]["build"]["target"] == "bridge"
    assert SERVICES["policy"]["build"]["target"] == "nodes"


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "*/")) or
               (pat.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], pat[3:])) for p in prefixes):
            excluded = not negate
    return excluded


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for ins in INSTRUCTIONS:
        if ins.keyword == "COPY" and "--from" not in ins.text:
            for source in shlex.split(ins.text)[:-1]:
                assert (REPO / source).exists(), source
                assert not _dockerignore_excludes(source, patterns), f"{source} is excluded from the context"
    for heavy in (".venv", "build", ".git", "runs", "test", "bench", "av_td3_ros/__pycache__"):
        assert _dockerignore_excludes(heavy, patterns), heavy


# --- the healthcheck tool, for real ---------------------------------------------------------------

@pytest.mark.timeout(120)
def test_healthcheck_is_healthy_only_when_a_matching_message_arrives(rclpy_context, spawn):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("pretend_policy", context=rclpy_context)
    pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)

    def publish():
        msg = DiagnosticArray()
        msg.status = [DiagnosticStatus(name="policy_node: inputs", message="ok")]
        pub.publish(msg)

    node.create_timer(0.1, publish)
    args = [str(HEALTHCHECK), "--topic", "/diagnostics", "--type", "diagnostic_msgs/msg/DiagnosticArray"]
    try:
        good = spawn(args + ["--contains", "policy_node", "--timeout", "20"])
        bad = spawn(args + ["--contains", "trainer", "--timeout", "3"])
        deadline = time.monotonic() + 60
        while (good.poll() is None or bad.poll() is None) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert good.wait(timeout=5) == 0, good.stderr_path.read_text()
        assert "healthy: a message on /diagnostics containing 'policy_node'" in good.stdout.read()
        assert bad.wait(timeout=5) == 1, bad.stderr_path.read_text()
        assert bad.stdout.read().startswith("unhealthy")
    finally:
        executor.shutdown()
        node.destroy_node()
