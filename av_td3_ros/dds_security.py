"""DDS Security (SROS2) artifacts for av_td3_ros, made with openssl: a CA, one enclave per node
kind, a governance document and per-enclave permissions.

The Fast DDS in this project's ros-* wheels is built WITHOUT the security plugins (docs/safety.md
gives the check), so these files are for the Docker image (ROS 2 Humble) and any ROS install whose
Fast DDS has them; sros2's CLI is not on the registries, hence openssl. Layout (what rcl expects
under ROS_SECURITY_KEYSTORE):

    public/{ca,identity_ca,permissions_ca}.cert.pem     private/ca.key.pem (0600)
    enclaves/governance.xml, governance.p7s
    enclaves/av_td3/<name>/{cert.pem, key.pem (0600), identity_ca.cert.pem,
                            permissions_ca.cert.pem, governance.p7s, permissions.xml, permissions.p7s}

The policy (ENCLAVES) is the single source of who may publish and subscribe what; the files under
docker/security/ are rendered from it (a test keeps them equal). The rules that matter:
- only the trainer publishes rt/av_td3/policy_weights;
- only policy nodes publish rt/carla/*/vehicle_control_cmd (the bridge, which publishes every other
  rt/carla/* topic, has an explicit deny for it);
- camera frames are readable by policy nodes only (and published by the bridge or sim_node);
- the reset service is served by the simulator / episode manager and called by policy nodes only;
- governance refuses unauthenticated participants and encrypts discovery, liveliness and data.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

__all__ = [
    "ENCLAVES",
    "ENCLAVE_ROOT",
    "EnclavePolicy",
    "KeystoreError",
    "create_keystore",
    "enclave_path",
    "governance_xml",
    "is_allowed",
    "permissions_xml",
    "render_policy_files",
]

ENCLAVE_ROOT = "/av_td3"
DOMAINS = (0, 232)  # every valid ROS_DOMAIN_ID
# Validity of the permissions grants in the shipped files (regenerate with render_policy_files).
VALIDITY = ("2025-01-01T00:00:00", "2035-01-01T00:00:00")

# What every rclpy node needs: rosout, parameter events, /clock, and SERVING its own parameter and
# type-description services (never calling another node's: set_parameters is not a way in).
_SERVICES = ("describe_parameters", "get_parameter_types", "get_parameters", "list_parameters",
             "set_parameters", "set_parameters_atomically", "get_type_description")
PLUMBING_PUBLISH = ("rt/rosout", "rt/parameter_events", *(f"rr/*/{s}Reply" for s in _SERVICES))
PLUMBING_SUBSCRIBE = ("rt/clock", "rt/parameter_events", *(f"rq/*/{s}Request" for s in _SERVICES))

CAMERA = "rt/carla/*/rgb_front/image"
CONTROL = "rt/carla/*/vehicle_control_cmd"
WEIGHTS = "rt/av_td3/policy_weights"
SENSORS = ("rt/carla/*/odometry", "rt/carla/*/waypoints", "rt/carla/*/collision", "rt/carla/*/lane_invasion")
RESET_REQUEST, RESET_REPLY = "rq/av_td3/*reset_episodeRequest", "rr/av_td3/*reset_episodeReply"


@dataclass(frozen=True)
class EnclavePolicy:
    """DDS topic patterns (fnmatch) one enclave may publish and subscribe; `deny_publish` is
    checked first (DDS Security: the first matching rule decides; default DENY)."""

    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()


ENCLAVES: dict[str, EnclavePolicy] = {
    p.name: p
    for p in (
        EnclavePolicy(
            "trainer",
            publish=(WEIGHTS, "rt/av_td3/training_status", "rt/diagnostics"),
            subscribe=("rt/av_td3/transitions", "rt/diagnostics"),  # diagnostics: the container healthcheck
        ),
        EnclavePolicy(
            "policy",
            publish=(CONTROL, "rt/av_td3/transitions", "rt/diagnostics", RESET_REQUEST,
                     "rt/*policy_node/*",  # the rqt scalars ~/steer, ... and the lifecycle transition_event
                     "rr/*policy_node/*Reply"),  # serving its lifecycle services
            subscribe=(CAMERA, *SENSORS, WEIGHTS, RESET_REPLY, "rq/*policy_node/*Request", "rt/diagnostics"),
        ),
        EnclavePolicy(
            "sim",  # the embedded simulator: the bridge's topics and the reset service
            publish=(CAMERA, *SENSORS, "rt/carla/status", "rt/clock", "rt/diagnostics", RESET_REPLY),
            subscribe=(CONTROL, RESET_REQUEST, "rt/diagnostics"),
        ),
        EnclavePolicy(
            "bridge",  # carla_ros_bridge + waypoint publisher + spawn_objects: every rt/carla/* but controls
            # spawn_objects calls the bridge's spawn/destroy services inside the same enclave (rq/rr carla/*).
            publish=("rt/carla/*", "rt/clock", "rt/tf", "rt/tf_static", "rt/diagnostics",
                     "rq/carla/*", "rr/carla/*"),
            subscribe=(CONTROL, "rt/carla/*/goal", "rt/carla/*/vehicle_control_manual_override",
                       "rt/carla/*/enable_autopilot", "rt/carla/*/control/*", "rt/carla/control",
                       "rt/carla/weather_control", "rt/carla/debug_marker", "rt/clock", "rt/tf",
                       "rt/tf_static", "rq/carla/*", "rr/carla/*"),
            deny_publish=(CONTROL,),
        ),
        EnclavePolicy(
            "episode_manager",
            publish=("rt/carla/*/goal", "rt/diagnostics", RESET_REPLY),
            subscribe=(RESET_REQUEST, "rt/carla/*/odometry", "rt/diagnostics"),
        ),
    )
}


def enclave_path(name: str) -> str:
    """The enclave a process is started with (`--ros-args --enclave`, or ROS_SECURITY_ENCLAVE_OVERRIDE)."""
    return f"{ENCLAVE_ROOT}/{name}"


def is_allowed(policy: EnclavePolicy, action: str, topic: str) -> bool:
    """DDS Security's decision for `action` ("publish" | "subscribe") on a DDS topic name."""
    if action == "publish" and any(fnmatch.fnmatchcase(topic, p) for p in policy.deny_publish):
        return False
    patterns = policy.publish if action == "publish" else policy.subscribe
    plumbing = PLUMBING_PUBLISH if action == "publish" else PLUMBING_SUBSCRIBE
    return any(fnmatch.fnmatchcase(topic, p) for p in (*patterns, *plumbing))


# ----------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------

_DOMAINS_XML = f"<domains><id_range><min>{DOMAINS[0]}</min><max>{DOMAINS[1]}</max></id_range></domains>"


def governance_xml() -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_governance.xsd">
  <domain_access_rules>
    <domain_rule>
      {_DOMAINS_XML}
      <allow_unauthenticated_participants>false</allow_unauthenticated_participants>
      <enable_join_access_control>true</enable_join_access_control>
      <discovery_protection_kind>ENCRYPT</discovery_protection_kind>
      <liveliness_protection_kind>ENCRYPT</liveliness_protection_kind>
      <rtps_protection_kind>ENCRYPT</rtps_protection_kind>
      <topic_access_rules>
        <topic_rule>
          <topic_expression>*</topic_expression>
          <enable_discovery_protection>true</enable_discovery_protection>
          <enable_liveliness_protection>true</enable_liveliness_protection>
          <enable_read_access_control>true</enable_read_access_control>
          <enable_write_access_control>true</enable_write_access_control>
          <metadata_protection_kind>ENCRYPT</metadata_protection_kind>
          <data_protection_kind>ENCRYPT</data_protection_kind>
        </topic_rule>
      </topic_access_rules>
    </domain_rule>
  </domain_access_rules>
</dds>
"""


def _topics(kind: str, patterns) -> str:
    items = "".join(f"\n            <topic>{escape(p)}</topic>" for p in patterns)
    return f"\n        <{kind}>\n          <topics>{items}\n          </topics>\n        </{kind}>"


def permissions_xml(policy: EnclavePolicy, validity: tuple[str, str] = VALIDITY) -> str:
    subject = f"CN={enclave_path(policy.name)}"
    publish = _topics("publish", (*policy.publish, *PLUMBING_PUBLISH))
    subscribe = _topics("subscribe", (*policy.subscribe, *PLUMBING_SUBSCRIBE))
    deny = ""
    if policy.deny_publish:
        rules = _topics("publish", policy.deny_publish)
        deny = f"\n      <deny_rule>\n        {_DOMAINS_XML}{rules}\n      </deny_rule>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd">
  <permissions>
    <grant name="{escape(enclave_path(policy.name))}">
      <subject_name>{escape(subject)}</subject_name>
      <validity>
        <not_before>{validity[0]}</not_before>
        <not_after>{validity[1]}</not_after>
      </validity>{deny}
      <allow_rule>
        {_DOMAINS_XML}{publish}{subscribe}
      </allow_rule>
      <default>DENY</default>
    </grant>
  </permissions>
</dds>
"""


def render_policy_files(folder: str | os.PathLike) -> list[Path]:
    """Write governance.xml and permissions/<enclave>.xml (what docker/security/ ships)."""
    from av_td3_ros.atomic_file import write_atomic

    folder = Path(folder)
    written = [write_atomic(folder / "governance.xml", governance_xml().encode())]
    for policy in ENCLAVES.values():
        path = folder / "permissions" / f"{policy.name}.xml"
        written.append(write_atomic(path, permissions_xml(policy).encode()))
    return written


# ----------------------------------------------------------------------------------------------
# The keystore (openssl)
# ----------------------------------------------------------------------------------------------


class KeystoreError(RuntimeError):
    """openssl failed; the message has its stderr."""


def _openssl(*args: str, openssl: str = "openssl") -> None:
    result = subprocess.run([openssl, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise KeystoreError(f"openssl {args[0]} failed: {result.stderr.strip()[-800:]}")


def _smime_sign(source: Path, target: Path, cert: Path, key: Path) -> None:
    # Detached S/MIME with a text/plain part: the format the DDS Security spec (and sros2) use.
    _openssl("smime", "-sign", "-text", "-in", str(source), "-out", str(target), "-signer", str(cert),
             "-inkey", str(key))


def create_keystore(root: str | os.PathLike, enclaves=tuple(ENCLAVES), days: int = 3650) -> list[str]:
    """A new keystore under `root` (refused if it has one): one CA (identity and permissions),
    the governance, and one enclave per name in `enclaves`. Returns the enclave paths."""
    root = Path(root)
    if (root / "private" / "ca.key.pem").exists():
        raise KeystoreError(f"{root} already holds a keystore; refusing to replace its CA")
    if shutil.which("openssl") is None:
        raise KeystoreError("openssl is not installed")
    public, private, enclaves_dir = root / "public", root / "private", root / "enclaves"
    old_umask = os.umask(0o077)  # private keys are never readable by others, not even for an instant
    try:
        for folder in (public, private, enclaves_dir):
            folder.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = private / "ca.key.pem", public / "ca.cert.pem"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
        _openssl("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", str(days),
                 "-subj", "/CN=av_td3_ros keystore CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign", "-out", str(ca_cert))
        for name in ("identity_ca.cert.pem", "permissions_ca.cert.pem"):
            shutil.copyfile(ca_cert, public / name)
        (enclaves_dir / "governance.xml").write_text(governance_xml())
        governance = enclaves_dir / "governance.p7s"
        _smime_sign(enclaves_dir / "governance.xml", governance, ca_cert, ca_key)
        paths = []
        for name in enclaves:
            policy = ENCLAVES[name]
            path = enclave_path(name)
            folder = enclaves_dir / path.lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            key, csr, cert = folder / "key.pem", folder / "request.csr", folder / "cert.pem"
            _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
            subject = "/CN=" + path.replace("/", "\\/")  # openssl -subj: "/" separates fields
            _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-sha256",
                     "-days", str(days), "-set_serial", str(secrets.randbits(63)), "-out", str(cert))
            csr.unlink()
            for ca_name in ("identity_ca.cert.pem", "permissions_ca.cert.pem"):
                shutil.copyfile(ca_cert, folder / ca_name)
            shutil.copyfile(governance, folder / "governance.p7s")
            (folder / "permissions.xml").write_text(permissions_xml(policy))
            _smime_sign(folder / "permissions.xml", folder / "permissions.p7s", ca_cert, ca_key)
            paths.append(path)
    finally:
        os.umask(old_umask)
    # Certificates, governance and permissions are public; only the keys stay 0600.
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else (0o600 if path.name.endswith("key.pem") else 0o644))
    return paths
