"""The kinematics divisor: with `scale_kinematics` the actor and critics divide the 23 kinematic
inputs (metres, m/s, rad) by their typical size; off (the default) it is ones. The divisor travels
in the weights, and weights or checkpoints saved before it existed (raw metres) keep working as
they did."""

import hashlib
import json

import numpy as np
import pytest
import torch

from av_td3_ros.driving.runtime import SCALE_TENSOR, PolicyRuntime, load_weights_file
from av_td3_ros.learning import (
    ArchitectureMismatch,
    TD3Config,
    TD3Learner,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from av_td3_ros.learning.weights import WeightsPayload, architecture_fingerprint, encode_policy_weights
from av_td3_ros.model import Actor, PolicyNetwork, TwinCritic
from av_td3_ros.model.networks import KINEMATICS_SCALE

torch.set_num_threads(1)

# Kinematics as the route encoder produces them on the embedded track: up to ~17 m ahead.
ROUTE_KINEMATICS = torch.tensor(
    [[7.0, 2.0, 0.3] + [v for i in range(10) for v in (1.9 * (i + 1), 0.4 * i)]], dtype=torch.float32
)


def test_the_networks_divide_the_kinematics_by_their_typical_size():
    scale = torch.tensor(KINEMATICS_SCALE)
    assert scale.shape == (23,) and scale[0] == 10.0 and scale[2] == 1.0  # m/s, rad
    features = torch.randn(1, 512)
    torch.manual_seed(0)
    scaled = Actor(scale_kinematics=True)
    torch.manual_seed(0)
    raw = Actor()
    assert torch.equal(raw.kinematics_scale, torch.ones(23))
    with torch.no_grad():
        torch.testing.assert_close(scaled(features, ROUTE_KINEMATICS),
                                   raw(features, ROUTE_KINEMATICS / scale))
    # Scaled, the route's kinematics enter the first layer at the size of the LayerNorm'd features'
    # values (about 1 each), not at up to 17.
    assert float((ROUTE_KINEMATICS / scale).abs().max()) < 2.0 < float(ROUTE_KINEMATICS.abs().max())

    critic, raw_critic = TwinCritic(scale_kinematics=True), TwinCritic()
    raw_critic.load_state_dict({**critic.state_dict(), "kinematics_scale": torch.ones(23)})
    action = torch.zeros(1, 2)
    with torch.no_grad():
        for got, want in zip(critic(features, ROUTE_KINEMATICS, action),
                             raw_critic(features, ROUTE_KINEMATICS / scale, action), strict=True):
            torch.testing.assert_close(got, want)


def test_the_divisor_is_in_the_published_weights_and_not_learned():
    learner = TD3Learner(TD3Config(seed=0, scale_kinematics=True))
    assert torch.equal(learner.actor_state_dict()[SCALE_TENSOR], torch.tensor(KINEMATICS_SCALE))
    assert not any(p is learner.actor.kinematics_scale for p in learner.actor.parameters())
    raw = TD3Learner(TD3Config(seed=0))
    assert torch.equal(raw.actor_state_dict()[SCALE_TENSOR], torch.ones(23))
    assert torch.equal(raw.critic_target.kinematics_scale, torch.ones(23))


def _legacy_payload(network: PolicyNetwork) -> bytes:
    """A policy file as trainers wrote it before the divisor: no actor.kinematics_scale tensor."""
    legacy = {k: v for k, v in network.state_dict().items() if k != SCALE_TENSOR}
    return encode_policy_weights(legacy, {"version": "4", "action_limit": "1.0", "updates": "10",
                                          "cnn_norm": "layer"})


def test_a_policy_saved_before_the_divisor_still_drives_on_raw_metres(tmp_path):
    torch.manual_seed(1)
    raw = PolicyNetwork().eval()
    path = tmp_path / "old.safetensors"
    path.write_bytes(_legacy_payload(raw))
    runtime = PolicyRuntime()
    decoded = load_weights_file(path, runtime)
    assert torch.equal(decoded.state_dict[SCALE_TENSOR], torch.ones(23))
    runtime.install(runtime.prepare(decoded, "file"))

    frames = np.random.default_rng(0).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    kinematics = ROUTE_KINEMATICS[0].numpy()
    action, version = runtime.act(frames, kinematics)
    with torch.no_grad():
        want = raw(torch.as_tensor(frames)[None], torch.as_tensor(kinematics)[None])[0].numpy()
    assert version == 4
    np.testing.assert_allclose(action, want, atol=1e-5)

    # The same over a message: its architecture fingerprint is the legacy one.
    payload = _legacy_payload(raw)
    legacy_fingerprint = architecture_fingerprint(
        {k: v for k, v in raw.state_dict().items() if k != SCALE_TENSOR})
    message = WeightsPayload(payload, hashlib.sha256(payload).hexdigest(), 5, 1.0, 10, legacy_fingerprint)
    assert torch.equal(PolicyRuntime().decode(message).state_dict[SCALE_TENSOR], torch.ones(23))


def test_a_payload_with_a_divisor_drives_with_that_divisor():
    torch.manual_seed(2)
    network = PolicyNetwork(scale_kinematics=True).eval()
    payload = encode_policy_weights(network.state_dict(), {"version": "1", "cnn_norm": "layer"})
    runtime = PolicyRuntime()
    decoded = runtime.decode(WeightsPayload(payload, hashlib.sha256(payload).hexdigest()))
    runtime.install(runtime.prepare(decoded, "msg"))
    frames = np.full((4, 84, 84), 90, np.uint8)
    kinematics = ROUTE_KINEMATICS[0].numpy()
    with torch.no_grad():
        want = network(torch.as_tensor(frames)[None], torch.as_tensor(kinematics)[None])[0].numpy()
    np.testing.assert_allclose(runtime.act(frames, kinematics)[0], want, atol=1e-5)


def _strip_the_divisor(directory):
    """Rewrite a checkpoint as one saved before the setting existed: no config key, no buffers."""
    from safetensors.torch import load_file, save_file

    record_path = directory / "checkpoint.json"
    record = json.loads(record_path.read_text())
    del record["learner"]["config"]["scale_kinematics"]
    for module in record["learner"]["modules"].values():
        module.pop("kinematics_scale", None)
    tensors_path = directory / record["tensors_file"]
    tensors = {k: v for k, v in load_file(tensors_path).items() if not k.endswith("/kinematics_scale")}
    save_file(tensors, tensors_path)
    record["tensors_sha256"] = hashlib.sha256(tensors_path.read_bytes()).hexdigest()
    assert "kinematics_scale" not in json.dumps(record)
    record_path.write_text(json.dumps(record))


def test_a_checkpoint_saved_before_the_divisor_resumes_only_as_raw_metres(tmp_path):
    old = TD3Learner(TD3Config(seed=0))
    save_checkpoint(old, tmp_path)
    _strip_the_divisor(tmp_path)

    assert read_checkpoint_config(tmp_path).scale_kinematics is False
    resumed = TD3Learner(TD3Config(seed=3))
    load_checkpoint(tmp_path, resumed)
    for name in ("actor", "critic", "actor_target", "critic_target"):
        assert torch.equal(getattr(resumed, name).kinematics_scale, torch.ones(23))
    torch.testing.assert_close(resumed.actor.l1.weight, old.actor.l1.weight)

    with pytest.raises(ArchitectureMismatch, match="scale_kinematics: checkpoint False, learner True"):
        load_checkpoint(tmp_path, TD3Learner(TD3Config(seed=0, scale_kinematics=True)))
