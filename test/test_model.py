"""The networks: exact architecture, init, widths, and frames normalized exactly once."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from av_td3_ros.learning import TD3Config, TD3Learner
from av_td3_ros.model import (
    ACTOR_INPUT_DIM,
    Actor,
    ConvLayerNorm,
    NatureCNN,
    PolicyNetwork,
    TwinCritic,
)

torch.set_num_threads(1)


def random_frames(batch, seed=0, extremes=True):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=g)
    if extremes:  # make sure 0 and 255 are present: they map to exactly -1 and +1
        frames[0, 0, 0, 0], frames[0, 0, 0, 1] = 0, 255
    return frames


def random_kinematics(batch, seed=0):
    return torch.randn(batch, 23, generator=torch.Generator().manual_seed(seed))


def test_nature_cnn_is_the_designs_architecture():
    cnn = NatureCNN()
    convs = [(cnn.conv1, 4, 32, 8, 4), (cnn.conv2, 32, 64, 4, 2), (cnn.conv3, 64, 64, 3, 1)]
    for conv, cin, cout, k, s in convs:
        assert (conv.in_channels, conv.out_channels) == (cin, cout)
        assert (conv.kernel_size, conv.stride) == ((k, k), (s, s))
    norms = [cnn.norm1, cnn.norm2, cnn.norm3, cnn.fc_norm]
    assert [tuple(n.normalized_shape) for n in norms] == [(32, 20, 20), (64, 9, 9), (64, 7, 7), (512,)]
    assert all(isinstance(n, nn.LayerNorm) for n in norms)
    assert (cnn.fc.in_features, cnn.fc.out_features) == (3136, 512)

    # The activations really have those shapes, and each LayerNorm is followed by LeakyReLU(0.01).
    seen = {}
    for name in ("conv1", "conv2", "conv3", "fc", "norm1", "fc_norm"):
        getattr(cnn, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    out = cnn(random_frames(2))
    assert [tuple(seen[n].shape[1:]) for n in ("conv1", "conv2", "conv3", "fc")] == [
        (32, 20, 20), (64, 9, 9), (64, 7, 7), (512,)
    ]
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(seen["fc_norm"], 0.01))
    assert out.shape == (2, 512)

    bare = NatureCNN(norm="none")
    assert not any(isinstance(m, nn.LayerNorm) for m in bare.modules())
    with pytest.raises(ValueError, match="norm"):
        NatureCNN(norm="batch")


def test_cnn_init_is_kaiming_normal_with_zero_bias():
    cnn = NatureCNN()
    for layer in (cnn.conv1, cnn.conv2, cnn.conv3, cnn.fc):
        assert torch.count_nonzero(layer.bias) == 0
        fan_in = layer.weight[0].numel()
        expected_std = math.sqrt(2.0 / (1 + 0.01**2) / fan_in)  # gain of LeakyReLU(0.01)
        weight = layer.weight.detach()
        assert float(weight.std()) == pytest.approx(expected_std, rel=0.1)
        assert abs(float(weight.mean())) < 0.1 * expected_std  # normal around 0, not uniform(0, x)
    for norm in (cnn.norm1, cnn.norm2, cnn.norm3, cnn.fc_norm):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_actor_and_critic_widths_and_default_init():
    assert ACTOR_INPUT_DIM == 535  # 512 features + 23 kinematics (the design's code had 542)
    actor, critic = Actor(), TwinCritic()
    assert (actor.l1.in_features, actor.l1.out_features, actor.l2.out_features, actor.l3.out_features) == (
        535, 256, 256, 2
    )
    for first in (critic.l1, critic.l4):
        assert first.in_features == 535 + 2
    assert critic.l3.out_features == critic.l6.out_features == 1

    # PyTorch's default init: uniform(+-1/sqrt(fan_in)), i.e. +-0.0625 for the output layer. The
    # rejected uniform(-3e-3, 3e-3) output init would keep every weight below 3e-3.
    bound = 1 / math.sqrt(256)
    largest = float(actor.l3.weight.detach().abs().max())
    assert 0.5 * bound < largest <= bound
    assert largest > 10 * 3e-3

    features, kinematics = torch.randn(5, 512), torch.randn(5, 23)
    with torch.no_grad():
        a = Actor(max_action=2.0)(features, kinematics)
    assert a.shape == (5, 2) and float(a.abs().max()) <= 2.0
    q1, q2 = critic(features, kinematics, torch.zeros(5, 2))
    assert q1.shape == q2.shape == (5, 1) and not torch.equal(q1, q2)
    torch.testing.assert_close(critic.q1(features, kinematics, torch.zeros(5, 2)), q1)


def test_the_535_width_is_asserted_not_assumed():
    with pytest.raises(ValueError, match="535"):
        Actor()(torch.randn(2, 512), torch.randn(2, 30))  # 542 wide, as in the design's bug
    with pytest.raises(ValueError, match="535"):
        TwinCritic()(torch.randn(2, 512), torch.randn(2, 30), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        Actor(kinematics_dim=30)


def test_conv_layer_norm_equals_nn_layer_norm_in_both_memory_layouts():
    reference = nn.LayerNorm((32, 20, 20))
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    ours = ConvLayerNorm((32, 20, 20))
    ours.load_state_dict(reference.state_dict())  # same names and shapes
    x = torch.randn(3, 32, 20, 20) * 5 + 2
    torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours(x.contiguous(memory_format=torch.channels_last)), reference(x))


def test_uint8_and_equivalent_float_frames_give_identical_actions():
    policy = PolicyNetwork()
    frames, kinematics = random_frames(6), random_kinematics(6)
    with torch.no_grad():
        from_uint8 = policy(frames, kinematics)
        from_float = policy(frames.float(), kinematics)
        from_double = policy(frames.double(), kinematics)
    assert torch.equal(from_uint8, from_float)
    assert torch.equal(from_uint8, from_double)


def capture_conv1_inputs(*encoders):
    captured = []
    for encoder in encoders:
        encoder.conv1.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach().clone()))
    return captured


def test_frames_are_normalized_exactly_once_on_the_way_in():
    policy = PolicyNetwork()
    frames = random_frames(3)
    captured = capture_conv1_inputs(policy.encoder)
    with torch.no_grad():
        policy(frames, random_kinematics(3))
    (x,) = captured
    # pixel p -> p / 127.5 - 1: 0 -> -1, 255 -> +1. Normalizing twice would give ~-1.008..-0.992.
    torch.testing.assert_close(x, frames.float() / 127.5 - 1.0, rtol=0, atol=1e-6)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    # the caller's float tensor is never modified in place
    as_float = frames.float()
    with torch.no_grad():
        policy(as_float, random_kinematics(3))
    assert torch.equal(as_float, frames.float())
    # A learner prepares a batch once for several CNNs: same features, not normalized again.
    with torch.no_grad():
        prepared = NatureCNN.prepare(frames)
        assert torch.equal(policy.encoder(prepared, prepared=True), policy.encoder(frames))
    torch.testing.assert_close(captured[-1], x, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="prepared"):
        policy.encoder(frames, prepared=True)  # raw pixels claimed to be prepared


@pytest.mark.parametrize("encoder_grad", ["separate", "critic_only"])
def test_the_learner_normalizes_once_too(encoder_grad):
    learner = TD3Learner(TD3Config(encoder_grad=encoder_grad, seed=0, batch_size=4))
    encoders = {learner.actor_encoder, learner.critic_encoder, learner.actor_encoder_target,
                learner.critic_encoder_target}
    captured = capture_conv1_inputs(*encoders)
    frames = random_frames(4).numpy()
    learner.act(frames[0], np.zeros(23, np.float32), explore=False)
    batch = type("Batch", (), dict(
        frames=frames, kinematics=np.zeros((4, 23), np.float32), actions=np.zeros((4, 2), np.float32),
        rewards=np.zeros(4, np.float32), next_frames=frames, next_kinematics=np.zeros((4, 23), np.float32),
        terminated=np.zeros(4, np.float32)))
    learner.update(batch)
    learner.update(batch)
    assert len(captured) >= 5
    for x in captured:
        assert float(x.min()) == -1.0 and float(x.max()) == 1.0


def test_per_sample_feature_l2_at_init_is_about_16():
    """Why ~16: the last LayerNorm(512) leaves each sample's 512 values with mean 0 and variance 1
    (gain 1, bias 0 at init), so their squared sum is exactly 512 (norm sqrt(512) = 22.6).
    LeakyReLU(0.01) keeps the positive half and scales the negative half by 0.01, so about half
    the energy survives: sqrt(512 * ~0.5) = sqrt(256) ~= 16 - the design's healthy baseline 15.8.
    """
    torch.manual_seed(0)
    cnn = NatureCNN(norm="layer")
    pre_activation = []
    cnn.fc_norm.register_forward_hook(lambda m, i, o: pre_activation.append(o))
    with torch.no_grad():
        features = cnn(random_frames(64, seed=1))
    pre_norms = torch.linalg.vector_norm(pre_activation[0], dim=1)
    torch.testing.assert_close(pre_norms, torch.full_like(pre_norms, math.sqrt(512)), rtol=1e-3, atol=0)
    kept_energy = float((features**2).sum(1).mean() / 512)
    assert 0.4 < kept_energy < 0.6
    per_sample = float(torch.linalg.vector_norm(features, dim=1).mean())
    assert 15.0 < per_sample < 17.5, per_sample


def test_policy_network_state_dict_is_what_the_learner_exports():
    policy = PolicyNetwork()
    keys = list(policy.state_dict())
    assert all(k.startswith(("encoder.", "actor.")) for k in keys)
    for encoder_grad in ("separate", "critic_only"):
        learner = TD3Learner(TD3Config(encoder_grad=encoder_grad, seed=3, action_limiter=False))
        exported = learner.actor_state_dict()
        assert list(exported) == keys
        assert all(t.is_contiguous() and t.device.type == "cpu" for t in exported.values())
        fresh = PolicyNetwork()
        fresh.load_state_dict(exported)
        frames, kinematics = random_frames(2), random_kinematics(2)
        with torch.no_grad():
            expected = fresh(frames, kinematics).numpy()
        actions = learner.act(frames.numpy(), kinematics.numpy(), explore=False)
        np.testing.assert_array_equal(actions, expected)
        if encoder_grad == "critic_only":
            assert learner.policy.encoder is learner.critic_encoder


def test_model_and_learning_core_never_import_rclpy():
    code = (
        "import sys\n"
        "import av_td3_ros.model, av_td3_ros.learning.td3, av_td3_ros.learning.checkpoint\n"
        "import av_td3_ros.learning.weights, av_td3_ros.learning.metrics\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'carla')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
