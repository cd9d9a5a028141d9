"""Signed policy weights, without DDS: keys, signatures over metadata and tensors, and what
PolicyRuntime.decode accepts under `signed` and `any` (the live node tests are in
test_weights_trust.py)."""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file
from av_td3_ros.learning import signing
from av_td3_ros.learning.signing import KeyFileError, SignatureRejected
from av_td3_ros.learning.weights import (
    WeightsPayload,
    WeightsRejected,
    encode_policy_weights,
    policy_metadata,
)
from av_td3_ros.model import PolicyNetwork


@pytest.fixture(scope="module")
def state_dict():
    torch.manual_seed(0)
    return PolicyNetwork().state_dict()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    trainer = signing.generate_key_pair(folder / "trainer.key")
    stranger = signing.generate_key_pair(folder / "stranger.key")
    return folder, trainer, stranger


def _payload(state_dict, version=3, cnn_norm="layer", **extra):
    meta = policy_metadata(version, 0.6, 100, cnn_norm=cnn_norm, max_action=1.0)
    meta.update(extra)
    return encode_policy_weights(state_dict, meta)


def _rewrite_header(payload: bytes, edit) -> bytes:
    """The payload with its JSON header edited (the tensor bytes untouched), as an attacker would."""
    (n,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + payload[8 + n :]


def _runtime(trusted=(), trust="signed"):
    return PolicyRuntime(trust=trust, trusted_keys={k.key_id: k.public_key for k in trusted})


def _decode(runtime, payload, **claims):
    return runtime.decode(WeightsPayload(payload, hashlib.sha256(payload).hexdigest(), **claims))


# --- keys -------------------------------------------------------------------------------------


def test_a_generated_key_pair_is_private_0600_public_0644_and_never_replaced_silently(tmp_path):
    key = signing.generate_key_pair(tmp_path / "k" / "trainer.key")
    private, public = tmp_path / "k" / "trainer.key", tmp_path / "k" / "trainer.key.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert len(key.key_id) == 16 and int(key.key_id, 16) >= 0
    assert signing.load_signing_key(private).key_id == key.key_id
    assert signing.key_id_of(signing.load_public_key(public)) == key.key_id
    assert "PRIVATE" not in repr(key) and key.key_id in repr(key)
    with pytest.raises(KeyFileError, match="refusing to replace"):
        signing.generate_key_pair(private)
    assert signing.load_signing_key(private).key_id == key.key_id  # untouched


def test_key_files_that_must_not_be_used_are_refused_with_the_reason(tmp_path, keys):
    folder, trainer, _ = keys
    loose = tmp_path / "loose.key"
    loose.write_bytes((folder / "trainer.key").read_bytes())
    loose.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        signing.load_signing_key(loose)
    with pytest.raises(KeyFileError, match="is a private key"):
        signing.load_trusted_keys([folder / "trainer.key"])
    with pytest.raises(KeyFileError, match="cannot read key file"):
        signing.load_trusted_keys([tmp_path / "missing.pub"])
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        signing.load_trusted_keys([garbage])


def test_keys_made_by_openssl_sign_and_verify_like_our_own(tmp_path, state_dict):
    private = tmp_path / "openssl.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(tmp_path / "openssl.pub")],
                   check=True)
    private.chmod(0o600)
    key = signing.load_signing_key(private)
    trusted = signing.load_trusted_keys([tmp_path / "openssl.pub"])
    assert signing.verify_payload(signing.sign_payload(_payload(state_dict), key), trusted) == key.key_id


# --- signatures -------------------------------------------------------------------------------


def test_a_signed_payload_verifies_and_loads_the_same_tensors_and_metadata(state_dict, keys):
    _, trainer, _ = keys
    payload = _payload(state_dict)
    signed = signing.sign_payload(payload, trainer)
    assert not signing.is_signed(payload) and signing.is_signed(signed)
    assert signing.verify_payload(signed, {trainer.key_id: trainer.public_key}) == trainer.key_id
    loaded = safetensors_load(signed)
    assert set(loaded) == set(state_dict) and all(torch.equal(loaded[k], v) for k, v in state_dict.items())
    meta = signing.read_header(signed).metadata
    assert meta["version"] == "3" and meta["cnn_norm"] == "layer" and meta["key_id"] == trainer.key_id
    # Signing again (another key) replaces the signature, never stacks a second one.
    resigned = signing.sign_payload(signed, keys[2])
    assert signing.read_header(resigned).metadata["key_id"] == keys[2].key_id
    assert signing.verify_payload(resigned, {keys[2].key_id: keys[2].public_key}) == keys[2].key_id


def _set_meta(key, value):
    def edit(header):
        header["__metadata__"][key] = value

    return edit


def _flip_tensor_byte(payload: bytes) -> bytes:
    out = bytearray(payload)
    out[-5] ^= 0x01
    return bytes(out)


def _swap_tensor_offsets(header):
    a, b = "actor.l1.bias", "actor.l2.bias"  # same shape: a well-formed header, other values
    first, second = header[a]["data_offsets"], header[b]["data_offsets"]
    header[a]["data_offsets"], header[b]["data_offsets"] = second, first


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(lambda p: p, "unsigned payload", id="unsigned"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("version", "99")), "changed after signing",
                     id="version_changed"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("action_limit", "1.0")), "changed after signing",
                     id="action_limit_changed"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("cnn_norm", "none")), "changed after signing",
                     id="cnn_norm_changed"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("comment", "added")), "changed after signing",
                     id="metadata_added"),
        pytest.param(_flip_tensor_byte, "changed after signing", id="tensor_byte_flipped"),
        pytest.param(lambda p: _rewrite_header(p, _swap_tensor_offsets), "changed after signing",
                     id="tensors_swapped"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("key_id", "0123456789abcdef")), "unknown key",
                     id="key_id_changed"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("signature", "!!")), "malformed signature",
                     id="signature_not_base64"),
        pytest.param(lambda p: _rewrite_header(p, _set_meta("signature_scheme", "rsa")),
                     "unknown signature scheme", id="other_scheme"),
    ],
)
def test_every_change_after_signing_is_refused_with_its_reason(state_dict, keys, tamper, reason):
    _, trainer, _ = keys
    payload = _payload(state_dict)
    signed = signing.sign_payload(payload, trainer) if reason != "unsigned payload" else payload
    with pytest.raises(SignatureRejected, match=reason):
        signing.verify_payload(tamper(signed), {trainer.key_id: trainer.public_key})


def test_a_payload_signed_by_an_unknown_key_is_refused_naming_both_key_ids(state_dict, keys):
    _, trainer, stranger = keys
    forged = signing.sign_payload(_payload(state_dict), stranger)
    with pytest.raises(SignatureRejected) as info:
        signing.verify_payload(forged, {trainer.key_id: trainer.public_key})
    reason = str(info.value)
    assert f"signed by unknown key {stranger.key_id!r}" in reason and trainer.key_id in reason


def test_headers_a_lenient_reader_could_read_two_ways_are_refused(state_dict, keys):
    _, trainer, _ = keys
    signed = signing.sign_payload(_payload(state_dict), trainer)
    (n,) = struct.unpack("<Q", signed[:8])
    text = signed[8 : 8 + n].rstrip()
    duplicated = text[:-1] + b',"__metadata__":{"version":"99"}}'
    duplicated += b" " * (-len(duplicated) % 8)
    with pytest.raises(SignatureRejected, match="duplicate key"):
        signing.verify_payload(struct.pack("<Q", len(duplicated)) + duplicated + signed[8 + n :],
                               {trainer.key_id: trainer.public_key})
    with pytest.raises(SignatureRejected, match="after the last tensor"):
        signing.verify_payload(signed + b"\0" * 8, {trainer.key_id: trainer.public_key})
    with pytest.raises(SignatureRejected, match="too short"):
        signing.verify_payload(b"\x80\x04", {trainer.key_id: trainer.public_key})


# --- PolicyRuntime.decode: trust and architecture ----------------------------------------------


def test_signed_trust_installs_a_trusted_payload_with_the_signed_values_and_key_id(state_dict, keys):
    _, trainer, _ = keys
    runtime = _runtime([trainer])
    decoded = _decode(runtime, signing.sign_payload(_payload(state_dict), trainer), version=3)
    assert (decoded.version, decoded.updates, decoded.cnn_norm) == (3, 100, "layer")
    assert decoded.key_id == trainer.key_id
    assert decoded.action_limit == pytest.approx(0.6)
    policy = runtime.prepare(decoded, "test")
    runtime.install(policy)
    assert runtime.version == 3 and policy.key_id == trainer.key_id


def test_signed_trust_refuses_unsigned_unknown_and_relabelled_payloads(state_dict, keys):
    _, trainer, stranger = keys
    runtime = _runtime([trainer])
    with pytest.raises(WeightsRejected, match="unsigned payload.*weights_trust is signed"):
        _decode(runtime, _payload(state_dict))
    with pytest.raises(WeightsRejected, match="signed by unknown key"):
        _decode(runtime, signing.sign_payload(_payload(state_dict), stranger))
    signed = signing.sign_payload(_payload(state_dict, version=3), trainer)
    # A replay under a new version number: the message says 7, the signature says 3.
    with pytest.raises(WeightsRejected, match="message's version 7 differs from the signed version 3"):
        _decode(runtime, signed, version=7)
    with pytest.raises(WeightsRejected, match="message's action_limit 1.0 differs"):
        _decode(runtime, signed, action_limit=1.0)
    # float32 on the wire is the same value, not a relabelling.
    assert _decode(runtime, signed, action_limit=float(np.float32(0.6))).version == 3
    with pytest.raises(WeightsRejected, match="no trusted keys|trusted: none"):
        _decode(_runtime([]), signed)


def test_a_replayed_signed_version_is_refused_once_a_newer_one_runs(state_dict, keys):
    _, trainer, _ = keys
    runtime = _runtime([trainer])
    old = signing.sign_payload(_payload(state_dict, version=4), trainer)
    new = signing.sign_payload(_payload(state_dict, version=5), trainer)
    runtime.install(runtime.prepare(_decode(runtime, new), "test"))
    for replay in (old, new):
        with pytest.raises(WeightsRejected, match="is not newer than the running version 5"):
            runtime.prepare(_decode(runtime, replay), "test")


def test_the_network_is_built_from_the_cnn_norm_in_the_metadata_not_the_runtime_default(keys):
    _, trainer, _ = keys
    torch.manual_seed(3)
    plain = PolicyNetwork(norm="none").state_dict()
    runtime = _runtime([trainer])  # its legacy default is "layer"
    decoded = _decode(runtime, signing.sign_payload(_payload(plain, cnn_norm="none"), trainer))
    policy = runtime.prepare(decoded, "test")
    assert policy.cnn_norm == "none" and not any("norm" in name for name in policy.module.state_dict())
    runtime.install(policy)
    action, _ = runtime.act(np.full((4, 84, 84), 100, np.uint8), np.zeros(23, np.float32))
    reference = PolicyNetwork(norm="none")
    reference.load_state_dict(plain)
    with torch.inference_mode():
        frames = torch.full((1, 4, 84, 84), 100, dtype=torch.uint8)
        expected = reference(frames, torch.zeros(1, 23))[0].numpy()
    np.testing.assert_allclose(action, expected, atol=1e-6)


def test_tensors_that_do_not_fit_the_metadata_cnn_norm_are_refused_with_the_reason(state_dict, keys):
    _, trainer, _ = keys
    runtime = _runtime([trainer])
    lying = signing.sign_payload(_payload(state_dict, cnn_norm="none"), trainer)  # LayerNorm tensors
    with pytest.raises(WeightsRejected, match="do not fit the metadata's cnn_norm 'none'.*unexpected"):
        _decode(runtime, lying)
    with pytest.raises(WeightsRejected, match="cnn_norm 'batch' is not one of"):
        _decode(runtime, signing.sign_payload(_payload(state_dict, cnn_norm="batch"), trainer))
    no_norm = encode_policy_weights(state_dict, {"version": "3"})
    with pytest.raises(WeightsRejected, match="does not state its cnn_norm"):
        _decode(runtime, signing.sign_payload(no_norm, trainer))


def test_any_trust_installs_unsigned_payloads_and_legacy_ones_use_the_runtime_norm(state_dict, keys):
    torch.manual_seed(4)
    plain = PolicyNetwork(norm="none").state_dict()
    runtime = _runtime(trust="any")
    assert _decode(runtime, _payload(plain, cnn_norm="none")).cnn_norm == "none"
    legacy = encode_policy_weights(state_dict, {"version": 2})
    decoded = _decode(runtime, legacy)
    assert (decoded.cnn_norm, decoded.key_id, decoded.version) == ("layer", "", 2)
    assert _decode(runtime, signing.sign_payload(legacy, keys[1])).key_id == ""  # not verified under any
    with pytest.raises(WeightsRejected, match="wrong architecture"):
        _decode(PolicyRuntime(norm="none"), legacy)


def test_a_signed_weights_file_is_checked_at_load(tmp_path, state_dict, keys):
    folder, trainer, stranger = keys
    runtime = _runtime([trainer])
    good, forged = tmp_path / "good.safetensors", tmp_path / "forged.safetensors"
    good.write_bytes(signing.sign_payload(_payload(state_dict, version=9), trainer))
    forged.write_bytes(signing.sign_payload(_payload(state_dict, version=9), stranger))
    decoded = load_weights_file(good, runtime)
    assert decoded.version == 9 and decoded.key_id == trainer.key_id
    with pytest.raises(WeightsRejected, match="signed by unknown key"):
        load_weights_file(forged, runtime)
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(_rewrite_header(good.read_bytes(), _set_meta("version", "10")))
    with pytest.raises(WeightsRejected, match="changed after signing"):
        load_weights_file(tampered, runtime)


# --- the command line -------------------------------------------------------------------------


def _cli(*argv) -> int:
    from av_td3_ros import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    return exit_info.value.code


def test_av_td3_keys_and_sign_make_a_file_a_signed_deploy_node_loads(tmp_path, state_dict, capsys):
    assert _cli("keys", "--out", str(tmp_path / "keys")) == 0
    assert "key id" in capsys.readouterr().out
    assert _cli("keys", "--out", str(tmp_path / "keys")) == 2  # never replaces a key
    key = str(tmp_path / "keys" / "trainer.key")
    legacy = tmp_path / "legacy.safetensors"
    legacy.write_bytes(encode_policy_weights(state_dict, {"version": 4}))
    assert _cli("sign", str(legacy), "--key", key) == 2
    assert "does not state its cnn_norm; pass --cnn-norm" in capsys.readouterr().err
    assert _cli("sign", str(legacy), "--key", key, "--cnn-norm", "none") == 2  # the tensors say layer
    assert "do not fit the metadata's cnn_norm 'none'" in capsys.readouterr().err
    signed = tmp_path / "signed.safetensors"
    assert _cli("sign", str(legacy), "--key", key, "--cnn-norm", "layer", "--out", str(signed)) == 0
    assert _cli("sign", str(signed), "--key", key, "--version", "5") == 2  # never rewrites a stated field
    assert "refusing to change it" in capsys.readouterr().err
    runtime = PolicyRuntime(trust="signed", trusted_keys=signing.load_trusted_keys([key + ".pub"]))
    decoded = load_weights_file(signed, runtime)
    assert (decoded.version, decoded.cnn_norm) == (4, "layer")
    pickled = tmp_path / "policy.pt"
    torch.save(state_dict, pickled)
    assert _cli("sign", str(pickled), "--key", key, "--cnn-norm", "layer") == 2
    assert _cli("sign", str(signed), "--key", key + ".pub") == 2
    assert "is a public key" in capsys.readouterr().err


def test_the_digest_of_a_payload_never_changes_so_what_was_signed_earlier_still_verifies():
    # A fixed payload's digest, computed when the scheme was introduced: an implementation change
    # (e.g. how the fields are fed to sha256) must not change the bytes that are hashed.
    payload = safetensors_save({"a": torch.arange(3, dtype=torch.float32), "b": torch.ones(2000)},
                               metadata={"version": "1", "cnn_norm": "layer"})
    assert signing.payload_digest(payload).hex() == (
        "9696bd7b893fdaadb55167f8f5550ab8a24b4f6762bb6f5286d775ab4dafe597")
