"""Policy-weights codec: a safetensors round trip, and every bad payload refused with its reason."""

import hashlib
import io
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from av_td3_ros.learning import (
    TD3Config,
    TD3Learner,
    WeightsRejected,
    architecture_fingerprint,
    count_non_finite,
    decode_policy_weights,
    encode_policy_weights,
)
from av_td3_ros.model import PolicyNetwork

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference():
    return PolicyNetwork().state_dict()


@pytest.fixture(scope="module")
def exported():
    return TD3Learner(TD3Config(seed=1)).actor_state_dict()


def sha(payload):
    return hashlib.sha256(payload).hexdigest()


def decode(payload, reference, fingerprint=None, max_bytes=32 << 20, digest=None):
    return decode_policy_weights(
        payload,
        sha(payload) if digest is None else digest,
        architecture_fingerprint(reference) if fingerprint is None else fingerprint,
        reference,
        max_bytes,
    )


def test_round_trip_into_a_policy_network(reference, exported):
    payload = encode_policy_weights(exported, metadata={"version": 3})
    decoded = decode(payload, reference)
    assert decoded.keys() == exported.keys()
    assert all(torch.equal(decoded[k], exported[k]) for k in exported)
    policy = PolicyNetwork()
    policy.load_state_dict(decoded)
    assert len(payload) < 8 << 20  # ~7.7 MB of float32


def test_fingerprint_is_names_shapes_dtypes_only(reference, exported):
    fp = architecture_fingerprint(reference)
    assert fp == architecture_fingerprint(exported)  # other values, same architecture
    assert fp == architecture_fingerprint({k: v.contiguous() for k, v in reference.items()})  # layout
    assert fp != architecture_fingerprint(PolicyNetwork(norm="none").state_dict())
    assert fp != architecture_fingerprint({**reference, "actor.l3.bias": torch.zeros(3)})
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fp)


def reason(payload, reference, **kwargs):
    with pytest.raises(WeightsRejected) as exc:
        decode(payload, reference, **kwargs)
    return str(exc.value)


def test_pickles_are_refused_unread(reference, exported):
    buffer = io.BytesIO()
    torch.save(exported, buffer)  # written here only to prove it is refused; never loaded
    assert "pickle" in reason(buffer.getvalue(), reference)
    assert "pickle" in reason(pickle.dumps({"actor.l1.weight": [0.0]}), reference)


def test_wrong_architecture_is_refused(reference, exported):
    other = PolicyNetwork(norm="none").state_dict()
    payload = encode_policy_weights(other)
    message = reason(payload, reference, fingerprint=architecture_fingerprint(other))
    assert "wrong architecture: fingerprint" in message
    # A payload lying about its fingerprint is caught by the tensor names.
    message = reason(payload, reference)
    assert "wrong architecture: tensors missing" in message and "encoder.norm1.weight" in message


def test_wrong_dtype_and_shape_are_refused(reference, exported):
    as_double = dict(exported, **{"actor.l3.weight": exported["actor.l3.weight"].double()})
    assert "wrong dtype: actor.l3.weight is float64[2, 256], expected float32[2, 256]" in reason(
        encode_policy_weights(as_double), reference
    )
    reshaped = dict(exported, **{"actor.l3.bias": torch.zeros(3)})
    assert "wrong shape: actor.l3.bias is float32[3], expected float32[2]" in reason(
        encode_policy_weights(reshaped), reference
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(reference, exported, bad):
    poisoned = {k: v.clone() for k, v in exported.items()}
    poisoned["encoder.fc.weight"][3, 7] = bad
    message = reason(encode_policy_weights(poisoned), reference)
    assert "non-finite values: encoder.fc.weight has 1 NaN/inf" in message


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_fast_finite_check_finds_one_bad_value_anywhere(dtype):
    # aminmax must propagate NaN from every position (vectorized loops have heads and tails).
    for size in (1, 7, 67, 1024 + 3):
        for position in range(size):
            for bad in (math.nan, math.inf, -math.inf):
                t = torch.zeros(size, dtype=dtype)
                t[position] = bad
                assert count_non_finite(t) == 1, (dtype, size, position, bad)
    big = torch.randn(512, 3136).to(dtype)  # the FC weight's shape
    assert count_non_finite(big) == 0
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 512, (50,), generator=generator)
    cols = torch.randint(0, 3136, (50,), generator=generator)
    for i, (row, col) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        poisoned = big.clone()
        poisoned[row, col] = (math.nan, math.inf, -math.inf)[i % 3]
        assert count_non_finite(poisoned) == 1
    assert count_non_finite(torch.arange(10)) == 0  # integers are always finite
    assert count_non_finite(torch.empty(0)) == 0


def test_decoding_pauses_once_after_hashing_before_the_gil_holding_steps_and_decodes_the_same(
        reference, exported):
    payload = encode_policy_weights(exported)
    calls = []
    fingerprint = architecture_fingerprint(reference)
    paused = decode_policy_weights(
        memoryview(payload), sha(payload), fingerprint, reference, 32 << 20, lambda: calls.append(1)
    )
    # Each pause can wait a whole camera frame period in a policy node: one, and only after the
    # hash (which releases the GIL, so it needs none), i.e. a bad hash is refused without one.
    assert len(calls) == 1
    with pytest.raises(WeightsRejected, match="sha256 mismatch"):
        decode_policy_weights(payload, sha(payload + b"x"), fingerprint, reference, 32 << 20,
                              lambda: calls.append(2))
    assert calls == [1]
    plain = decode(payload, reference)
    assert all(torch.equal(paused[k], plain[k]) for k in plain)


def test_sha256_mismatch_and_oversize_and_garbage_are_refused(reference, exported):
    payload = encode_policy_weights(exported)
    assert "sha256 mismatch" in reason(payload, reference, digest=sha(payload + b"x"))
    flipped = bytearray(payload)
    flipped[-1] ^= 1
    assert "sha256 mismatch" in reason(bytes(flipped), reference, digest=sha(payload))
    assert "exceeds the limit of 1000000 bytes" in reason(payload, reference, max_bytes=1_000_000)
    assert "too short" in reason(b"abc", reference)
    assert "header length" in reason(b"\xff" * 64, reference)
    assert "bad header" in reason(b"\x04\x00\x00\x00\x00\x00\x00\x00nope", reference)
    truncated = safetensors_save({"x": torch.zeros(4)})[:-8]
    assert "not a valid safetensors payload" in reason(truncated, reference)


def test_no_code_in_this_package_unpickles_anything():
    offenders = []
    for path in (REPO / "av_td3_ros").rglob("*.py"):
        text = path.read_text()
        if re.search(r"torch\.load\(|pickle\.loads?\(|weights_only\s*=\s*False", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
