"""TD3Learner: optimizers, clipping, the update's numbers, acting, both encoder_grad modes."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from av_td3_ros.learning import MetricsWriter, TD3Config, TD3Learner
from av_td3_ros.learning.config import ENCODER_GRAD_MODES

torch.set_num_threads(1)
BATCH = 8


def make_batch(seed=0, batch=BATCH, reward_scale=1.0, terminated=None):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        frames=rng.integers(0, 256, (batch, 4, 84, 84), dtype=np.uint8),
        kinematics=rng.normal(size=(batch, 23)).astype(np.float32),
        actions=rng.uniform(-1, 1, (batch, 2)).astype(np.float32),
        rewards=(reward_scale * rng.normal(size=batch)).astype(np.float32),
        next_frames=rng.integers(0, 256, (batch, 4, 84, 84), dtype=np.uint8),
        next_kinematics=rng.normal(size=(batch, 23)).astype(np.float32),
        terminated=(rng.random(batch) < 0.2 if terminated is None else np.full(batch, terminated)).astype(
            np.float32
        ),
    )


def learner(**overrides):
    return TD3Learner(TD3Config(seed=0, batch_size=BATCH, **overrides))


def grad_norm(params):
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))


def test_config_defaults_are_td3s_and_the_designs():
    c = TD3Config()
    assert (c.gamma, c.tau, c.policy_noise, c.noise_clip, c.policy_delay, c.batch_size) == (
        0.99, 0.005, 0.2, 0.5, 2, 256
    )
    assert (c.exploration_noise, c.max_action, c.grad_clip, c.encoder_grad, c.cnn_norm, c.device) == (
        0.1, 1.0, 10.0, "separate", "layer", "auto"
    )
    with pytest.raises(ValueError, match="encoder_grad"):
        TD3Config(encoder_grad="both")
    with pytest.raises(ValueError, match=r"TD3Config.tau = 0.*\(0, 1\]"):
        TD3Config(tau=0)
    u = TD3Config.unstabilized()
    assert (u.cnn_norm, u.cnn_weight_decay, u.grad_clip, u.adaptive_lr, u.action_limiter) == (
        "none", 0.0, None, False, False
    )


@pytest.mark.parametrize("encoder_grad", ENCODER_GRAD_MODES)
def test_weight_decay_only_on_the_two_cnn_optimizers_and_their_learning_rates(encoder_grad):
    agent = learner(encoder_grad=encoder_grad)
    assert agent.device.type == "cpu"  # device "auto" on a machine without CUDA
    groups = {
        "actor": agent.actor_optimizer, "actor_cnn": agent.actor_cnn_optimizer,
        "critic": agent.critic_optimizer, "critic_cnn": agent.critic_cnn_optimizer,
    }
    expected = {"actor": (3e-4, 0.0), "actor_cnn": (1e-4, 1e-4),
                "critic": (3e-4, 0.0), "critic_cnn": (1e-4, 1e-4)}
    if encoder_grad == "critic_only":
        assert groups.pop("actor_cnn") is None  # one CNN, trained by the critic loss only
        expected.pop("actor_cnn")
    for name, opt in groups.items():
        assert isinstance(opt, torch.optim.Adam)
        (group,) = opt.param_groups
        assert (group["lr"], group["weight_decay"]) == expected[name], name
    # Every trainable parameter is in exactly one optimizer, and each CNN optimizer holds a CNN.
    owned = [id(p) for opt in groups.values() for p in opt.param_groups[0]["params"]]
    modules = (agent.actor, agent.critic, agent.actor_encoder, agent.critic_encoder)
    trainable = {id(p) for m in modules for p in m.parameters()}
    assert len(owned) == len(set(owned)) and set(owned) == trainable
    assert {id(p) for p in agent.critic_cnn_optimizer.param_groups[0]["params"]} == {
        id(p) for p in agent.critic_encoder.parameters()
    }
    # Targets are frozen copies.
    for target in (agent.actor_target, agent.critic_target,
                   agent.actor_encoder_target, agent.critic_encoder_target):
        assert not any(p.requires_grad for p in target.parameters())


def test_clipping_caps_a_huge_critic_gradient_at_10_and_returns_the_pre_clip_norm():
    agent = learner()
    info = agent.update(make_batch(reward_scale=1e6))  # update 1: critic only
    assert "actor_loss" not in info
    assert info["grad_norm_critic"] > 1e4 and info["grad_norm_critic_cnn"] > 1e4
    # The gradients the optimizers stepped with were clipped to exactly 10.
    assert grad_norm(agent.critic.parameters()) == pytest.approx(10.0, rel=1e-4)
    assert grad_norm(agent.critic_encoder.parameters()) == pytest.approx(10.0, rel=1e-4)


def test_clipping_caps_a_huge_actor_gradient_at_10():
    agent = learner()
    with torch.no_grad():
        agent.critic.l3.weight.mul_(1e6)  # dQ/da huge -> huge actor gradients
    agent.updates = 1  # the next update is an actor update
    info = agent.update(make_batch())
    assert info["actor_updated"] == 1.0
    assert info["grad_norm_actor"] > 100 and info["grad_norm_actor_cnn"] > 100
    assert grad_norm(agent.actor.parameters()) == pytest.approx(10.0, rel=1e-4)
    assert grad_norm(agent.actor_encoder.parameters()) == pytest.approx(10.0, rel=1e-4)


def test_without_clipping_the_gradient_is_left_alone():
    agent = learner(grad_clip=None)
    info = agent.update(make_batch(reward_scale=1e6))
    assert grad_norm(agent.critic.parameters()) == pytest.approx(info["grad_norm_critic"], rel=1e-4)
    assert info["grad_norm_critic"] > 1e4


UPDATE_KEYS = {
    "critic_loss", "q_mean", "target_q_mean", "td_error", "grad_norm_actor", "grad_norm_actor_cnn",
    "grad_norm_critic", "grad_norm_critic_cnn", "cnn_l2", "actor_cnn_l2", "critic_cnn_l2",
    "cnn_features_mean", "cnn_features_std", "lr_actor", "lr_actor_cnn", "lr_critic", "lr_critic_cnn",
    "saturated_share", "action_limit_active", "action_limit", "actor_updated", "lr_cut",
}


@pytest.mark.parametrize("encoder_grad", ENCODER_GRAD_MODES)
def test_update_returns_every_number_and_updates_the_actor_every_second_time(encoder_grad):
    agent = learner(encoder_grad=encoder_grad)
    infos = [agent.update(make_batch(seed=i)) for i in range(4)]
    assert agent.updates == 4
    for i, info in enumerate(infos, start=1):
        assert UPDATE_KEYS <= set(info)
        assert all(isinstance(v, float) and math.isfinite(v) for v in info.values())
        assert ("actor_loss" in info) == (i % 2 == 0) == (info["actor_updated"] == 1.0)
    last = infos[-1]
    assert 10 < last["cnn_l2"] < 30 and last["cnn_l2"] == max(last["actor_cnn_l2"], last["critic_cnn_l2"])
    assert (last["lr_actor"], last["lr_critic"], last["lr_critic_cnn"]) == (3e-4, 3e-4, 1e-4)
    assert last["lr_actor_cnn"] == (1e-4 if encoder_grad == "separate" else 0.0)
    assert last["action_limit_active"] == 1.0 and last["action_limit"] == 0.6
    assert 0.0 <= last["saturated_share"] <= 1.0


def test_terminated_transitions_do_not_bootstrap():
    agent = learner()
    batch = make_batch(terminated=1.0)
    info = agent.update(batch)
    assert info["target_q_mean"] == pytest.approx(float(batch.rewards.mean()), abs=1e-6)
    batch = make_batch(terminated=0.0)
    info = agent.update(batch)
    assert info["target_q_mean"] != pytest.approx(float(batch.rewards.mean()), abs=1e-6)


def test_targets_move_by_tau_only_on_actor_updates():
    agent = learner()
    before = agent.critic_target.l1.weight.clone()
    agent.update(make_batch(0))
    assert torch.equal(agent.critic_target.l1.weight, before)  # update 1: no actor step, no soft update
    online_before_step2 = agent.critic.l1.weight.detach().clone()
    agent.update(make_batch(1))
    # target = (1 - tau) * target + tau * online(after this update's critic step)
    expected = 0.995 * before + 0.005 * agent.critic.l1.weight.detach()
    torch.testing.assert_close(agent.critic_target.l1.weight, expected)
    assert not torch.equal(online_before_step2, agent.critic.l1.weight)


def test_critic_only_trains_one_encoder_with_the_critic_loss_alone():
    def backward_passes(encoder_grad):
        agent = learner(encoder_grad=encoder_grad)
        calls = {"actor": 0, "critic": 0}

        def count_backward_into(encoder, name):
            def on_output(module, inputs, output):
                if output.requires_grad:
                    output.register_hook(lambda grad: calls.__setitem__(name, calls[name] + 1))
            encoder.register_forward_hook(on_output)

        count_backward_into(agent.actor_encoder, "actor")
        if agent.critic_encoder is not agent.actor_encoder:
            count_backward_into(agent.critic_encoder, "critic")
        agent.update(make_batch(0))
        agent.update(make_batch(1))  # one actor update
        return agent, calls

    shared, calls = backward_passes("critic_only")
    assert shared.critic_encoder is shared.actor_encoder is shared.policy.encoder
    assert calls == {"actor": 2, "critic": 0}  # = the shared encoder: two critic backward passes only
    _, calls = backward_passes("separate")
    assert calls == {"actor": 1, "critic": 2}


def test_act_single_and_batch_with_the_limit_and_exploration():
    agent = learner()
    batch = make_batch()
    single = agent.act(batch.frames[0], batch.kinematics[0], explore=False)
    assert single.shape == (2,) and single.dtype == np.float32
    many = agent.act(batch.frames, batch.kinematics, explore=False)
    assert many.shape == (BATCH, 2)
    np.testing.assert_allclose(many[0], single, rtol=1e-5, atol=1e-6)
    noisy = agent.act(batch.frames, batch.kinematics, explore=True)
    assert not np.allclose(noisy, many)

    with torch.no_grad():  # push the raw actor into saturation: the limit still holds
        agent.actor.l3.weight.mul_(1000)
    assert np.abs(agent.act(batch.frames, batch.kinematics, explore=True)).max() <= 0.6 + 1e-7
    assert agent.action_limit == 0.6

    free = learner(action_limiter=False)
    with torch.no_grad():
        free.actor.l3.weight.mul_(1000)
    out = free.act(batch.frames, batch.kinematics, explore=False)
    assert np.abs(out).max() > 0.9 and free.action_limit == 0.0


def test_the_update_feeds_the_monitor_and_the_limiter():
    agent = learner(l2_healthy=1.0, l2_warning=2.0, l2_failure=1000.0)  # any real feature norm is "too big"
    info = agent.update(make_batch())
    assert info["lr_cut"] == 1.0
    assert (info["lr_actor_cnn"], info["lr_critic_cnn"]) == (5e-5, 5e-5)
    assert (info["lr_actor"], info["lr_critic"]) == (3e-4, 3e-4)  # the MLPs are not touched

    # The plumbing, not the numbers (tested elsewhere).
    agent = learner(limiter_l2_updates=2, limiter_l2_env_steps=0, limiter_action_window=BATCH,
                    limiter_episode_window=1, limiter_min_action_std=0.0, limiter_lift_env_steps=0)
    agent.record_episode_length(150)
    agent.update(make_batch(0))
    assert agent.limiter.active  # no actions seen yet
    info = agent.update(make_batch(1))
    assert info["action_limit_active"] == 0.0 and agent.action_limit == 0.0
    assert len(agent.limiter.recent_actions()) == BATCH


def test_weight_norms_of_every_cnn_layer_come_with_the_update_when_due():
    agent = learner(weight_norms_every=2)
    assert not any(k.startswith("weight_norm/") for k in agent.update(make_batch(0)))
    info = agent.update(make_batch(1))
    norms = {k for k in info if k.startswith("weight_norm/")}
    assert len(norms) == 16 and "weight_norm/actor_cnn/conv1.weight" in norms
    assert "weight_norm/critic_cnn/fc_norm.weight" in norms


def test_metrics_writer_uses_the_designs_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = learner(weight_norms_every=2)
    with MetricsWriter(tmp_path) as writer:
        for _ in range(2):
            writer.write_update(agent.update(make_batch(agent.updates)), agent.updates)
        writer.write_scalars({"episode/return": 3.0}, 2)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "debug/cnn_features_l2_norm", "debug/cnn_features_mean", "debug/cnn_features_std",
        "loss/critic", "loss/actor", "q/mean", "q/td_error", "grad_norm/actor", "grad_norm/actor_cnn",
        "grad_norm/critic", "grad_norm/critic_cnn", "lr/actor", "lr/actor_cnn", "lr/critic", "lr/critic_cnn",
        "actions/saturated_share", "limiter/active", "limiter/limit", "weight_norm/actor_cnn/conv1.weight",
        "episode/return",
    ):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("debug/cnn_features_l2_norm")] == [1, 2]


def _greedy_batch(rng, batch, limit):
    """Data a limited car produces: actions only inside +-limit, reward growing with the action
    (so the critic's extrapolation says 'more is better' beyond the data)."""
    actions = rng.uniform(-limit, limit, (batch, 2)).astype(np.float32)
    return SimpleNamespace(
        frames=rng.integers(0, 256, (batch, 4, 84, 84), dtype=np.uint8),
        kinematics=rng.normal(size=(batch, 23)).astype(np.float32),
        actions=actions,
        rewards=actions.sum(axis=1).astype(np.float32),
        next_frames=rng.integers(0, 256, (batch, 4, 84, 84), dtype=np.uint8),
        next_kinematics=rng.normal(size=(batch, 23)).astype(np.float32),
        terminated=np.zeros(batch, np.float32),
    )


def test_while_the_limit_is_active_the_actor_learns_the_executed_action_and_does_not_saturate():
    # The design's failure: the tanh locked at 0.994 / 1.000. With the limiter on, the car executes
    # clip(a, +-0.6); an actor scored by the critic at its raw output is pushed by extrapolation
    # to +-1 (measured before the fix: every output at exactly 1.000 after these 300 updates).
    lrn = learner(encoder_grad="critic_only", actor_lr=1e-3, critic_lr=1e-3)
    assert lrn.limiter.active and lrn.action_limit == pytest.approx(0.6)
    rng = np.random.default_rng(0)
    for _ in range(300):
        info = lrn.update(_greedy_batch(rng, BATCH, 0.6))
    probe = _greedy_batch(rng, 64, 0.6)
    raw = lrn.act(probe.frames, probe.kinematics, explore=False)  # the limit clips this one...
    with torch.no_grad():  # ...so read the actor's own output
        features = lrn.actor_encoder(torch.from_numpy(probe.frames))  # = the critic's in critic_only
        out = lrn.actor(features, torch.from_numpy(probe.kinematics)).numpy()
    assert raw.max() <= 0.6 + 1e-6
    assert out.mean() > 0.4, "it still learned that larger actions pay"
    assert np.abs(out).max() < 0.75, f"the actor left the data's support: max |a| {np.abs(out).max():.3f}"
    assert info.get("saturated_share", 0.0) == 0.0


# ----------------------------------------------------------------------------------------------
# Recipe options (issue 14): random shift on, the rest off by default; n-step targets; exploration.
# ----------------------------------------------------------------------------------------------


def test_random_shift_is_the_only_recipe_option_on_by_default_and_all_are_validated():
    c = TD3Config()
    assert (c.augment_pad, c.n_step, c.exploration_schedule) == (4, 1, "constant")
    for bad, message in ((dict(augment_pad=-1), "augment_pad"), (dict(augment_pad=43), "augment_pad"),
                         (dict(n_step=0), "n_step"), (dict(n_step=2.5), "n_step")):
        with pytest.raises(ValueError, match=rf"TD3Config.{message} = "):
            TD3Config(**bad)
    assert TD3Config.from_dict(TD3Config(n_step=3, augment_pad=4).to_dict()).n_step == 3


def test_an_n_step_learner_refuses_one_step_batches_without_counting_an_update():
    agent = learner(n_step=3)
    with pytest.raises(ValueError, match=r"n_step = 3 needs n-step batches"):
        agent.update(make_batch())
    assert agent.updates == 0


def with_discounts(batch, discounts):
    return SimpleNamespace(**vars(batch), discounts=np.full(len(batch.rewards), discounts, np.float32))


def test_the_batchs_n_step_discount_replaces_gamma_in_the_target():
    plain = learner().update(make_batch(terminated=0.0))
    # gamma^1 given by the batch: the very same update, bit for bit
    assert learner().update(with_discounts(make_batch(terminated=0.0), np.float32(0.99))) == plain
    rewards = float(make_batch(terminated=0.0).rewards.mean())
    three = learner().update(with_discounts(make_batch(terminated=0.0), 0.99**3))
    # the same min Q' (same weights, same noise), bootstrapped with gamma^3 instead of gamma
    bootstrapped = plain["target_q_mean"] - rewards
    assert three["target_q_mean"] - rewards == pytest.approx(0.99**2 * bootstrapped, rel=1e-4)
    # a termination inside the window still cuts the bootstrap
    cut = learner(n_step=3).update(with_discounts(make_batch(terminated=1.0), 0.99**2))
    assert cut["target_q_mean"] == pytest.approx(float(make_batch(terminated=1.0).rewards.mean()), abs=1e-6)


def test_the_learner_trains_on_n_step_batches_from_the_frame_replay():
    from av_td3_ros.learning import FrameReplayBuffer

    rng = np.random.default_rng(0)
    buffer = FrameReplayBuffer(200, seed=0)
    buffer.start_episode("car", rng.integers(0, 256, (84, 84), dtype=np.uint8), np.zeros(23, np.float32))
    for step in range(1, 41):
        buffer.add_step("car", rng.uniform(-1, 1, 2), 1.0, rng.integers(0, 256, (84, 84), dtype=np.uint8),
                        rng.normal(size=23).astype(np.float32), terminated=step == 40, truncated=False)
    agent = learner(n_step=3)
    for _ in range(2):
        info = agent.update(buffer.sample(BATCH, n_step=3, gamma=agent.config.gamma))
    assert agent.updates == 2 and math.isfinite(info["critic_loss"]) and "actor_loss" in info


def test_the_training_service_samples_what_the_n_step_learner_needs():
    from test_training_service import TINY_TD3, feed, service_config, stream

    from av_td3_ros.learning.training_service import TrainingService

    service = TrainingService(service_config(td3=TD3Config(**{**TINY_TD3, "n_step": 3})))
    feed(service, stream(episodes=2, length=9))
    assert service.learner.updates == int((18 - 8 + 1) * 0.5)  # none skipped by an error


def test_act_explores_with_the_configured_schedule():
    batch = make_batch()
    decaying = learner(exploration_schedule="linear", exploration_noise=0.5, exploration_noise_final=0.0,
                       exploration_decay_steps=100, action_limiter=False)
    deterministic = decaying.act(batch.frames, batch.kinematics, explore=False)
    early = decaying.act(batch.frames, batch.kinematics, explore=True, env_step=0)
    late = decaying.act(batch.frames, batch.kinematics, explore=True, env_step=100)
    assert np.abs(early - deterministic).mean() > 0.2  # std 0.5 at the start
    np.testing.assert_array_equal(late, deterministic)  # std 0 once decayed
    assert decaying.exploration.std(50) == pytest.approx(0.25)


# --- CNN compute precision ---------------------------------------------------------------------


def _output_dtypes(modules: dict) -> tuple[dict, list]:
    """Record the output dtype of each named module on every forward pass."""
    seen: dict[str, set] = {name: set() for name in modules}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: seen[name].add(out.dtype))
               for name, m in modules.items()]
    return seen, handles


def test_bfloat16_cnn_passes_leave_heads_weights_gradients_and_acting_in_float32():
    lrn = learner(cnn_precision="bfloat16")
    assert lrn.cnn_dtype == torch.bfloat16
    convs = {f"{name}.conv1": cnn.conv1 for name, cnn in {
        "actor": lrn.actor_encoder, "critic": lrn.critic_encoder, "actor_target": lrn.actor_encoder_target,
        "critic_target": lrn.critic_encoder_target}.items()}
    heads = {"critic.l1": lrn.critic.l1, "actor.l1": lrn.actor.l1, "critic_target.l1": lrn.critic_target.l1}
    seen, handles = _output_dtypes({**convs, **heads})
    for seed in range(2):  # the second update is an actor update
        metrics = lrn.update(make_batch(seed))
    assert all(seen[name] == {torch.bfloat16} for name in convs), seen
    assert all(seen[name] == {torch.float32} for name in heads), seen
    assert all(math.isfinite(v) for v in metrics.values())
    for module in (lrn.actor_encoder, lrn.critic_encoder, lrn.actor, lrn.critic):
        for p in module.parameters():
            assert p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
    for name in seen:
        seen[name].clear()
    batch = make_batch(5)
    lrn.act(batch.frames[:2], batch.kinematics[:2], explore=False)  # what a policy node runs: float32
    assert seen["actor.conv1"] == {torch.float32}
    for h in handles:
        h.remove()


def test_bfloat16_cnn_passes_learn_like_float32_ones_on_the_same_batches():
    bf16, fp32 = learner(cnn_precision="bfloat16"), learner(cnn_precision="float32")
    assert fp32.cnn_dtype == torch.float32
    start = [p.detach().clone() for p in fp32.critic_encoder.parameters()]  # the same init in both
    for seed in range(12):
        batch = make_batch(seed, reward_scale=5.0)
        m16, m32 = bf16.update(batch), fp32.update(batch)
    # bfloat16 keeps 8 bits of mantissa: the numbers agree to a few percent, not bit for bit.
    for key in ("critic_loss", "q_mean", "critic_cnn_l2", "actor_cnn_l2", "grad_norm_critic_cnn"):
        assert m16[key] == pytest.approx(m32[key], rel=0.05, abs=1e-3), key
    # Adam moves every weight by ~lr whatever its gradient's size, so where a gradient is near 0
    # its sign, and the step, can flip: compare where the CNN as a whole went, not each weight.
    def moved(lrn):
        pairs = zip(lrn.critic_encoder.parameters(), start, strict=True)
        return torch.cat([(p - p0).flatten() for p, p0 in pairs])

    assert float(F.cosine_similarity(moved(bf16), moved(fp32), dim=0)) > 0.9


def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it_natively():
    from av_td3_ros.learning.td3 import resolve_cnn_precision
    cpu = torch.device("cpu")
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert resolve_cnn_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert resolve_cnn_precision("float32", cpu) == torch.float32
    assert resolve_cnn_precision("bfloat16", cpu) == torch.bfloat16
    assert TD3Config().cnn_precision == "auto"
    with pytest.raises(ValueError, match="cnn_precision"):
        TD3Config(cnn_precision="float16")
