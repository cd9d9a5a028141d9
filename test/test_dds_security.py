"""DDS Security: what this machine's middleware can do, and the files shipped for the Docker image.

The Fast DDS in the venv's ros-* wheels has no security plugins (the first two tests prove it, and
fail the day a wheel brings them: then the live test of issue 15 becomes possible here). So the
keystore, governance and permissions are checked statically: well-formed XML rendered from one
policy, the rules that matter (only the trainer publishes weights, only policy nodes publish
controls, only policy nodes read the camera), and an openssl-made keystore whose certificates and
signed documents verify with openssl.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from av_td3_ros import dds_security
from av_td3_ros.dds_security import CAMERA, CONTROL, ENCLAVES, WEIGHTS, is_allowed

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "docker" / "security"


@pytest.fixture(scope="module")
def keystore(tmp_path_factory):
    root = tmp_path_factory.mktemp("dds") / "keystore"
    return root, dds_security.create_keystore(root)


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


# --- what the venv's Fast DDS can do ------------------------------------------------------------


def test_the_venv_fast_dds_library_is_built_without_the_security_plugins():
    libraries = sorted(Path(sys.prefix, "lib").glob("libfastdds.so.*")) + sorted(
        Path(sys.prefix, "lib").glob("libfastrtps.so.*"))
    assert libraries, "no Fast DDS library in the venv"
    binary = libraries[-1].read_bytes()
    # Fast DDS compiles this warning only in the `#else` of `#if HAVE_SECURITY`
    # (ParticipantProxyData.cpp); a security build has the builtin plugins' names instead.
    assert b"Received PID_IDENTITY_TOKEN but security is disabled" in binary
    assert b"builtin.PKI-DH" not in binary and b"builtin.Access-Permissions" not in binary


def test_a_node_asked_to_enforce_security_refuses_to_start_instead_of_running_unsecured(ros_env, keystore):
    root, _ = keystore
    env = {**ros_env, "ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce",
           "ROS_SECURITY_KEYSTORE": str(root)}
    code = "import sys, rclpy; rclpy.init(args=sys.argv); rclpy.create_node('secure_probe'); print('CREATED')"
    result = subprocess.run([sys.executable, "-c", code, "--ros-args", "--enclave", "/av_td3/trainer"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert "CREATED" not in result.stdout and result.returncode != 0
    assert "This Fast DDS version doesn't have the security libraries" in result.stderr, result.stderr[-2000:]


# --- the shipped policy files ---------------------------------------------------------------------


def test_the_shipped_governance_and_permissions_are_well_formed_and_rendered_from_the_policy(tmp_path):
    dds_security.render_policy_files(tmp_path)
    shipped = sorted(p.relative_to(SHIPPED) for p in SHIPPED.rglob("*.xml"))
    assert shipped == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.xml"))
    assert {p.stem for p in (SHIPPED / "permissions").glob("*.xml")} == set(ENCLAVES)
    for path in shipped:
        assert (SHIPPED / path).read_text() == (tmp_path / path).read_text(), f"{path}: regenerate"
        ET.parse(SHIPPED / path)  # well-formed
    rule = ET.parse(SHIPPED / "governance.xml").getroot().find("domain_access_rules/domain_rule")
    assert rule.findtext("allow_unauthenticated_participants") == "false"
    assert rule.findtext("enable_join_access_control") == "true"
    topic_rule = rule.find("topic_access_rules/topic_rule")
    assert topic_rule.findtext("enable_read_access_control") == "true"
    assert topic_rule.findtext("enable_write_access_control") == "true"
    assert topic_rule.findtext("data_protection_kind") == "ENCRYPT"


def _rules(name: str) -> dict:
    grant = ET.parse(SHIPPED / "permissions" / f"{name}.xml").getroot().find("permissions/grant")
    out = {"subject": grant.findtext("subject_name"), "default": grant.findtext("default")}
    for kind in ("allow_rule", "deny_rule"):
        rule = grant.find(kind)
        for action in ("publish", "subscribe"):
            found = rule.findall(f"{action}/topics/topic") if rule is not None else []
            out[(kind, action)] = [t.text for t in found]
    return out


@pytest.mark.parametrize("name", sorted(ENCLAVES))
def test_every_enclave_names_its_topics_and_denies_everything_else(name):
    rules, policy = _rules(name), ENCLAVES[name]
    assert rules["subject"] == f"CN=/av_td3/{name}" and rules["default"] == "DENY"
    assert set(policy.publish) <= set(rules[("allow_rule", "publish")])
    assert set(policy.subscribe) <= set(rules[("allow_rule", "subscribe")])
    assert rules[("deny_rule", "publish")] == list(policy.deny_publish)
    assert "rt/rosout" in rules[("allow_rule", "publish")]


def _who(action: str, topic: str) -> set[str]:
    return {name for name, policy in ENCLAVES.items() if is_allowed(policy, action, topic)}


def test_only_the_trainer_publishes_weights_and_only_policy_nodes_install_them():
    assert _who("publish", "rt/av_td3/policy_weights") == {"trainer"}
    assert _who("subscribe", WEIGHTS.replace("*", "x")) == {"policy"}


@pytest.mark.parametrize("role", ["ego_vehicle", "hero0"])
def test_only_policy_nodes_publish_controls_and_read_the_camera(role):
    control, camera = CONTROL.replace("*", role), CAMERA.replace("*", role)
    assert _who("publish", control) == {"policy"}  # the bridge's rt/carla/* has a deny for it
    assert _who("subscribe", control) == {"bridge", "sim"}
    assert _who("publish", camera) == {"bridge", "sim"}
    assert _who("subscribe", camera) == {"policy"}


def test_only_policy_nodes_call_the_reset_service_and_only_simulators_answer_it():
    for request in ("rq/av_td3/reset_episodeRequest", "rq/av_td3/hero1/reset_episodeRequest"):
        assert _who("publish", request) == {"policy"}
        assert _who("subscribe", request) == {"sim", "episode_manager"}
    assert _who("publish", "rr/av_td3/reset_episodeReply") == {"sim", "episode_manager"}
    # Nobody may call another node's parameter services (set_parameters is not a way in).
    assert _who("publish", "rq/policy_node/set_parametersRequest") == set()


# --- the keystore ---------------------------------------------------------------------------------


def test_the_keystore_has_the_sros2_layout_and_private_keys_are_0600(keystore):
    root, enclaves = keystore
    assert enclaves == [f"/av_td3/{name}" for name in ENCLAVES]
    for name in ("identity_ca.cert.pem", "permissions_ca.cert.pem"):
        assert (root / "public" / name).is_file()
    assert (root / "private" / "ca.key.pem").stat().st_mode & 0o777 == 0o600
    for enclave in enclaves:
        folder = root / "enclaves" / enclave.lstrip("/")
        for name in ("cert.pem", "key.pem", "identity_ca.cert.pem", "permissions_ca.cert.pem",
                     "governance.p7s", "permissions.xml", "permissions.p7s"):
            assert (folder / name).is_file(), folder / name
        assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(dds_security.KeystoreError, match="already holds a keystore"):
        dds_security.create_keystore(root)


def test_certificates_and_signed_documents_verify_with_openssl_and_a_tampered_one_does_not(keystore,
                                                                                           tmp_path):
    root, enclaves = keystore
    ca = root / "public" / "ca.cert.pem"
    for enclave in enclaves:
        folder = root / "enclaves" / enclave.lstrip("/")
        ca_file = str(folder / "identity_ca.cert.pem")
        verified = _openssl("verify", "-CAfile", ca_file, str(folder / "cert.pem"))
        assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stderr
        subject = _openssl("x509", "-in", str(folder / "cert.pem"), "-noout", "-subject",
                           "-nameopt", "RFC2253")
        assert subject.stdout.strip() == f"subject=CN={enclave}"
        for document in ("permissions", "governance"):
            out = tmp_path / f"{document}.xml"
            signed = _openssl("smime", "-verify", "-in", str(folder / f"{document}.p7s"), "-CAfile",
                              str(folder / "permissions_ca.cert.pem"), "-text", "-out", str(out))
            assert signed.returncode == 0, signed.stderr
            source = (folder / "permissions.xml" if document == "permissions"
                      else root / "enclaves" / "governance.xml")
            assert out.read_text().replace("\r\n", "\n") == source.read_text()
    tampered = tmp_path / "tampered.p7s"
    tampered.write_text((root / "enclaves" / "av_td3" / "policy" / "permissions.p7s").read_text()
                        .replace("rt/carla/*/vehicle_control_cmd", "rt/carla/*/vehicle_control_cmX"))
    assert _openssl("smime", "-verify", "-in", str(tampered), "-CAfile", str(ca), "-text").returncode != 0
    stranger = tmp_path / "stranger.cert.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             str(tmp_path / "stranger.key"), "-subj", "/CN=stranger", "-days", "1", "-out", str(stranger))
    assert _openssl("verify", "-CAfile", str(ca), str(stranger)).returncode != 0


def test_the_compose_overlay_puts_every_ros_container_in_its_enclave_with_the_keystore_read_only():
    overlay = yaml.safe_load((REPO / "docker" / "compose.security.yaml").read_text())["services"]
    base = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]
    ros_containers = {name for name, s in base.items() if s.get("image", "").startswith("av_td3_ros")
                      and name != "tensorboard"}
    assert set(overlay) == ros_containers
    for name, service in overlay.items():
        environment = service["environment"]
        assert environment["ROS_SECURITY_ENABLE"] == "true"
        assert environment["ROS_SECURITY_STRATEGY"] == "Enforce"
        assert environment["ROS_SECURITY_ENCLAVE_OVERRIDE"] == f"/av_td3/{name}"
        assert environment["ROS_SECURITY_KEYSTORE"] == "/keystore"
        assert any(v.endswith(":/keystore:ro") for v in service["volumes"])
