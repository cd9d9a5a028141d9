"""FeatureNormMonitor (per-sample norms, LR cuts with cooldown and floor) and ActionLimiter."""

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3_ros.learning import ActionLimiter, FeatureNormMonitor, batch_summed_l2, per_sample_l2
from av_td3_ros.model import NatureCNN

torch.set_num_threads(1)


# --- per-sample vs batch-summed --------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 16, 256])
def test_batch_summed_norm_is_per_sample_norm_times_sqrt_batch(batch):
    # Rows of equal norm r: the design's whole-batch norm is exactly r * sqrt(B).
    g = torch.Generator().manual_seed(batch)
    rows = torch.randn(batch, 512, generator=g)
    features = 65.0 * rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    assert per_sample_l2(features) == pytest.approx(65.0, rel=1e-5)
    assert batch_summed_l2(features) == pytest.approx(65.0 * math.sqrt(batch), rel=1e-5)


def test_the_designs_1242_explosion_was_mostly_the_batch_size():
    # ~65 per sample at batch 256 reads ~1,040 when summed over the batch: most of the "1,242".
    assert 65.0 * math.sqrt(256) == pytest.approx(1040.0)
    # Real CNN features at init (per sample ~16) read ~16 * sqrt(B) batch-summed.
    with torch.no_grad():
        features = NatureCNN()(torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8))
    ratio = batch_summed_l2(features) / per_sample_l2(features)
    assert ratio == pytest.approx(math.sqrt(64), rel=0.02)
    assert per_sample_l2(features) < 30 < batch_summed_l2(features)  # healthy, yet "exploded"


# --- thresholds and LR cuts ------------------------------------------------------------------
def cnn_optimizers(lr=1e-4):
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))]
    return {
        "actor_cnn": torch.optim.Adam([params[0]], lr=lr, weight_decay=1e-4),
        "critic_cnn": torch.optim.Adam([params[1]], lr=lr, weight_decay=1e-4),
    }


def lrs(optimizers):
    return {name: opt.param_groups[0]["lr"] for name, opt in optimizers.items()}


def test_thresholds_are_the_designs():
    monitor = FeatureNormMonitor()
    assert [monitor.classify(x) for x in (15.8, 29.9, 30.0, 50.0, 50.1, 100.0, 100.1, 1242)] == [
        "healthy", "healthy", "elevated", "elevated", "warning", "warning", "failure", "failure"
    ]
    assert (monitor.cooldown, monitor.lr_floor, monitor.lr_factor) == (1000, 1e-6, 0.5)
    assert (monitor.stats_every, monitor.weight_norms_every) == (100, 1000)


def test_norms_above_warning_halve_the_lr_once_per_cooldown_and_never_below_the_floor(caplog):
    optimizers = cnn_optimizers()
    monitor = FeatureNormMonitor(optimizers)
    cut_at = []
    with caplog.at_level(logging.WARNING, logger="av_td3_ros.learning.monitor"):
        for update in range(1, 12_001):
            if monitor.observe(60.0, update):
                cut_at.append(update)
    # 1e-4 -> 5e-5 -> 2.5e-5 -> 1.25e-5 -> 6.25e-6 -> 3.125e-6 -> 1.5625e-6 -> 1e-6 (floor), then none
    assert cut_at == [1, 1001, 2001, 3001, 4001, 5001, 6001]
    assert lrs(optimizers) == {"actor_cnn": 1e-6, "critic_cnn": 1e-6}
    cuts = [r for r in caplog.records if "learning rate cut" in r.getMessage()]
    assert len(cuts) == 7 and all(r.levelno == logging.WARNING for r in cuts)
    assert "actor_cnn 0.0001 -> 5e-05" in cuts[0].getMessage()
    assert "critic_cnn 0.0001 -> 5e-05" in cuts[0].getMessage()
    assert "1.56e-06 -> 1e-06" in cuts[-1].getMessage()


def test_healthy_and_elevated_norms_never_cut_and_the_switch_turns_cuts_off():
    optimizers = cnn_optimizers()
    monitor = FeatureNormMonitor(optimizers)
    for update, l2 in enumerate([16.0, 29.0, 45.0, 50.0] * 1000, start=1):
        assert monitor.observe(l2, update) == []
    assert lrs(optimizers) == {"actor_cnn": 1e-4, "critic_cnn": 1e-4}
    off = FeatureNormMonitor(optimizers, adaptive_lr=False)
    assert off.observe(500.0, 1) == []
    assert lrs(optimizers) == {"actor_cnn": 1e-4, "critic_cnn": 1e-4}


def test_a_streak_of_bad_batches_waits_for_the_cooldown(caplog):
    optimizers = cnn_optimizers()
    monitor = FeatureNormMonitor(optimizers, cooldown=1000)
    assert monitor.observe(80.0, 10)
    assert all(monitor.observe(80.0, u) == [] for u in range(11, 1010))
    assert monitor.observe(80.0, 1010)
    assert lrs(optimizers)["critic_cnn"] == pytest.approx(2.5e-5)
    with caplog.at_level(logging.ERROR, logger="av_td3_ros.learning.monitor"):
        monitor.observe(150.0, 1011)
    assert any(r.levelno == logging.ERROR and "150.0 > 100" in r.getMessage() for r in caplog.records)


def test_monitor_reports_every_cnn_layer_weight_norm_and_restores_its_state(caplog):
    monitor = FeatureNormMonitor(cnn_optimizers())
    assert monitor.stats_due(100) and not monitor.stats_due(150)
    assert monitor.weight_norms_due(2000) and not monitor.weight_norms_due(1500)
    cnn = NatureCNN()
    with caplog.at_level(logging.INFO, logger="av_td3_ros.learning.monitor"):
        norms = monitor.report_weight_norms(1000, {"critic_cnn": cnn})
    layers = ["conv1", "norm1", "conv2", "norm2", "conv3", "norm3", "fc", "fc_norm"]
    assert list(norms) == [f"weight_norm/critic_cnn/{name}.weight" for name in layers]
    assert norms["weight_norm/critic_cnn/norm1.weight"] == pytest.approx(math.sqrt(32 * 20 * 20))
    assert "critic_cnn weight norms: conv1" in caplog.text

    monitor.observe(70.0, 5)
    restored = FeatureNormMonitor(cnn_optimizers())
    restored.load_state_dict(monitor.state_dict())
    assert restored.observe(70.0, 6) == []  # the cooldown survived
    assert restored.observe(70.0, 1005) != []


# --- ActionLimiter ----------------------------------------------------------------------------
def healthy_actions(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.8, 0.8, size=(n, 2)).astype(np.float32)


def drive_limiter(limiter, *, l2=20.0, updates=5000, actions=None, episode_lengths=(150,) * 10,
                  steps_per_update=1.0):
    """Feed the episodes, then `updates` updates of per-sample L2 `l2` (with 1,000 actions on the
    way), each after the env steps that came in since the previous one (`steps_per_update` is
    the inverse update-to-data ratio); returns whether the limit is still active."""
    actions = healthy_actions(1000) if actions is None else actions
    for length in episode_lengths:
        limiter.record_episode(length)
    for i in range(updates):
        limiter.observe_env_steps(int((i + 1) * steps_per_update) - int(i * steps_per_update))
        chunk = actions[(i * 250) % 1000:(i * 250) % 1000 + 250] if i < 4 else None
        limiter.observe_update(l2, chunk)
    return limiter.active


def with_dimension(actions, dim, value, jitter=0.005):
    """`actions` with dimension `dim` pinned at `value` (+- a little noise)."""
    out = actions.copy()
    out[:, dim] = value + jitter * np.random.default_rng(1).standard_normal(len(out))
    return out


def updates_until_lifted(limiter, steps_per_update, most=100_000):
    drive_limiter(limiter, updates=4)  # the action window and the episodes, 4 updates
    for i in range(most):
        limiter.observe_env_steps(int((i + 1) * steps_per_update) - int(i * steps_per_update))
        if limiter.observe_update(20.0):
            return limiter.l2_streak
    raise AssertionError("never lifted")


def test_limiter_clips_to_60_percent_and_warns_once_per_episode(caplog):
    limiter = ActionLimiter(lift_env_steps=0)
    assert limiter.active and limiter.current_limit == 0.6
    with caplog.at_level(logging.WARNING, logger="av_td3_ros.learning.action_limiter"):
        for _ in range(5):
            out = limiter.apply(np.array([0.994, -1.0], np.float32))
        limiter.record_episode(40)
        limiter.apply(np.array([0.1, 0.2], np.float32))
    np.testing.assert_allclose(out, [0.6, -0.6])
    messages = [r for r in caplog.records if r.getMessage() == "Action limit active (60%)"]
    assert len(messages) == 2 and all(r.levelno == logging.WARNING for r in messages)


def test_limiter_switched_off_never_limits(caplog):
    limiter = ActionLimiter(enabled=False)
    with caplog.at_level(logging.WARNING):
        out = limiter.apply(np.array([0.994, -1.0]))
    np.testing.assert_array_equal(out, [0.994, -1.0])
    assert not limiter.active and limiter.current_limit == 0.0 and caplog.records == []


def test_limiter_lifts_when_all_criteria_hold_and_says_which(caplog):
    limiter = ActionLimiter(lift_env_steps=0)
    with caplog.at_level(logging.WARNING, logger="av_td3_ros.learning.action_limiter"):
        # One update per env step, as in the design: the streak's first update starts its span,
        # so 5,000 healthy updates span 4,999 env steps, not enough...
        assert drive_limiter(limiter, updates=5000)
        assert limiter.l2_streak_env_steps == 4999
        # ...the next step and update are.
        limiter.observe_env_steps(1)
        limiter.observe_update(20.0)
    assert not limiter.active and limiter.current_limit == 0.0
    np.testing.assert_array_equal(limiter.apply(np.array([0.9, -0.9])), [0.9, -0.9])
    (lifted,) = [r.getMessage() for r in caplog.records if "lifted" in r.getMessage()]
    for criterion in ("cnn_l2 = 5001", "cnn_l2_env_steps = 5000", "saturated_share = 0", "action_std",
                      "episode_length = 150"):
        assert criterion in lifted
    assert lifted.count(": held") == 5


@pytest.mark.parametrize("pinned", [0.6, 0.59, 0.62, -0.6])
def test_a_dimension_held_at_the_limit_is_not_a_locked_actor(caplog, pinned):
    # The actor asks for more throttle than the limit gives and the limit penalty keeps it at the
    # edge: std ~0 there, which only lifting can change. Steering still varies, so it lifts.
    limiter, actions = ActionLimiter(lift_env_steps=0), with_dimension(healthy_actions(1000), 1, pinned)
    with caplog.at_level(logging.WARNING, logger="av_td3_ros.learning.action_limiter"):
        assert not drive_limiter(limiter, updates=5001, actions=actions)
    (lifted,) = [r.getMessage() for r in caplog.records if "lifted" in r.getMessage()]
    assert "held at the limit: dimension [1]" in lifted and lifted.count(": held") == 5
    assert f"{pinned:+.2f}" in lifted.split("per dimension: ")[1]  # the log shows where it sat


def test_the_held_at_the_limit_exemption_needs_the_mean_at_the_limit_and_a_small_std():
    limiter = ActionLimiter(lift_env_steps=0)
    drive_limiter(limiter, updates=4, actions=with_dimension(healthy_actions(1000), 1, 0.54))
    crit = limiter.criteria()["action_std"]  # 0.06 from the limit: frozen inside, not held
    assert not crit["held"] and "held at the limit: dimension" not in crit["threshold"]
    limiter = ActionLimiter(lift_env_steps=0)
    drive_limiter(limiter, updates=4, actions=with_dimension(healthy_actions(1000), 1, 0.56, jitter=0.02))
    assert limiter.criteria()["action_std"]["held"]  # within 0.05 of the limit, std 0.02
    limiter = ActionLimiter(limit=1.0, lift_env_steps=0)  # a limit at max_action holds nothing at its edge
    drive_limiter(limiter, updates=4, actions=with_dimension(healthy_actions(1000), 1, 0.99))
    assert not limiter.criteria()["action_std"]["held"]


def test_the_healthy_span_is_5000_env_steps_at_any_update_to_data_ratio():
    # The design's 5K steps at one update per step: ~5,000 updates.
    assert updates_until_lifted(ActionLimiter(lift_env_steps=0), steps_per_update=1.0) == 5001
    # The demo's ~0.06 updates per step: the same 5,000 env steps are ~300 updates, where counting
    # 5,000 updates would have waited ~80,000 env steps.
    at_demo_ratio = updates_until_lifted(ActionLimiter(lift_env_steps=0), steps_per_update=1 / 0.06)
    assert at_demo_ratio == pytest.approx(300, abs=5)
    # At 0.01 the span is there after 51 updates, but it takes at least 100 healthy updates.
    limiter = ActionLimiter(lift_env_steps=0)
    assert updates_until_lifted(limiter, steps_per_update=100.0) == 100
    assert limiter.l2_streak_env_steps > 9000  # the span had long held: the floor decided


def test_the_updates_only_criterion_is_one_setting_away():
    # l2_env_steps 0: the streak counts updates alone (l2_updates 5000 is the literal design).
    limiter = ActionLimiter(l2_env_steps=0, l2_updates=5000, lift_env_steps=0)
    assert drive_limiter(limiter, updates=4999, steps_per_update=0.0)
    limiter.observe_update(20.0)
    assert not limiter.active


def test_env_steps_before_a_healthy_streak_do_not_count_towards_it():
    limiter = ActionLimiter(lift_env_steps=0)
    limiter.observe_env_steps(100_000)  # learning_starts, or steps before any update
    assert limiter.l2_streak_env_steps == 0
    drive_limiter(limiter, updates=200, steps_per_update=10.0)
    assert limiter.l2_streak_env_steps == 1990
    limiter.observe_update(30.0)  # not below 30: the streak and its span start over
    assert (limiter.l2_streak, limiter.l2_streak_env_steps) == (0, 0)
    limiter.observe_env_steps(50)
    assert limiter.l2_streak_env_steps == 0


@pytest.mark.parametrize(
    "failing",
    ["l2_above_30", "l2_streak_broken", "saturated_actions", "locked_actions", "one_dimension_frozen_inside",
     "locked_at_the_limit_in_every_dimension", "short_episodes", "too_few_episodes"],
)
def test_limiter_stays_when_any_single_criterion_fails(failing):
    limiter = ActionLimiter(lift_env_steps=0)
    kwargs = {}
    if failing == "l2_above_30":
        kwargs["l2"] = 31.0
    elif failing == "saturated_actions":  # 10% of the components at |a| > 0.99
        actions = healthy_actions(1000)
        actions[:100, 0] = 0.995
        kwargs["actions"] = actions
    elif failing == "locked_actions":  # unsaturated but frozen: the std criterion catches it
        kwargs["actions"] = np.tile(np.array([[0.5, -0.3]], np.float32), (1000, 1)) + np.float32(0.01) * (
            healthy_actions(1000) / 0.8)
    elif failing == "one_dimension_frozen_inside":  # throttle still at 0.3, well inside the limit
        kwargs["actions"] = with_dimension(healthy_actions(1000), 1, 0.3)
    elif failing == "locked_at_the_limit_in_every_dimension":  # the design's lock, seen through the limit
        kwargs["actions"] = with_dimension(with_dimension(healthy_actions(1000), 0, 0.6), 1, -0.6)
    elif failing == "short_episodes":  # mean of the last 10 = 100, not > 100
        kwargs["episode_lengths"] = (300,) * 5 + (100,) * 10
    elif failing == "too_few_episodes":
        kwargs["episode_lengths"] = (500,) * 9
    if failing == "l2_streak_broken":
        drive_limiter(limiter, updates=4000)
        limiter.observe_update(35.0)
        assert drive_limiter(limiter, updates=5000, episode_lengths=())
        limiter.observe_env_steps(1)
        limiter.observe_update(20.0)
        assert not limiter.active  # 5,000 env steps of healthy updates after the break: lifts
        return
    assert drive_limiter(limiter, **kwargs)
    assert drive_limiter(limiter, **{**kwargs, "episode_lengths": ()})  # still after 10,000 updates
    held = {name: c["held"] for name, c in limiter.criteria().items()}
    assert list(held.values()).count(False) >= 1


def test_limiter_state_round_trips_and_follows_the_trainer():
    limiter = ActionLimiter(lift_env_steps=0)
    drive_limiter(limiter, updates=3000, episode_lengths=(120, 130))
    copy = ActionLimiter(lift_env_steps=0)
    copy.load_state_dict(limiter.state_dict())
    assert copy.l2_streak == 3000 and copy.l2_streak_env_steps == 2999
    assert list(copy.episode_lengths) == [120, 130]
    np.testing.assert_array_equal(copy.recent_actions(), limiter.recent_actions())
    assert copy.criteria() == limiter.criteria()

    before_env_steps = {k: v for k, v in limiter.state_dict().items() if k != "l2_streak_env_steps"}
    old = ActionLimiter(lift_env_steps=0)
    old.load_state_dict(before_env_steps)  # a checkpoint from before the env-step span: starts it over
    assert old.l2_streak == 3000 and old.l2_streak_env_steps == 0

    node_side = ActionLimiter(lift_env_steps=0)
    node_side.follow(0.0)
    assert not node_side.active
    node_side.follow(0.6)
    assert node_side.active and node_side.current_limit == 0.6


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=30), st.integers(min_value=1, max_value=25))
def test_the_limiters_action_window_is_the_last_n_actions(chunk_sizes, window):
    limiter = ActionLimiter(action_window=window)
    seen = np.zeros((0, 2), np.float32)
    counter = 0
    for size in chunk_sizes:
        chunk = np.arange(counter, counter + 2 * size, dtype=np.float32).reshape(size, 2)
        counter += 2 * size
        limiter.observe_actions(chunk)
        seen = np.concatenate([seen, chunk])
        np.testing.assert_array_equal(limiter.recent_actions(), seen[-window:] if len(seen) else seen)


# --- the lift's ramp ----------------------------------------------------------------------------
def test_the_lift_is_a_ramp_from_the_limit_to_max_action_over_env_steps(caplog):
    limiter = ActionLimiter(lift_env_steps=2000)
    with caplog.at_level(logging.WARNING, logger="av_td3_ros.learning.action_limiter"):
        assert drive_limiter(limiter, updates=5000)
        limiter.observe_env_steps(1)
        assert limiter.observe_update(20.0)  # every criterion held: the ramp begins at the limit
        assert limiter.lifting and limiter.current_limit == 0.6
        limiter.observe_env_steps(500)
        assert limiter.current_limit == pytest.approx(0.7)
        np.testing.assert_allclose(limiter.apply(np.array([0.9, -0.65])), [0.7, -0.65], rtol=1e-6)
        assert not limiter.observe_update(40.0)  # on the ramp, criteria are not re-judged
        limiter.observe_env_steps(1000)
        assert limiter.current_limit == pytest.approx(0.9)
        limiter.observe_env_steps(499)
        assert limiter.active and limiter.current_limit == pytest.approx(1.0, abs=1e-3)
        limiter.observe_env_steps(1)
    assert not limiter.active and limiter.current_limit == 0.0  # gone: PolicyWeights.action_limit 0
    messages = [r.getMessage() for r in caplog.records if "lift" in r.getMessage()]
    assert messages[0].startswith("Action limit lifting: all criteria held, the limit rises to 1 over 2000")
    assert messages[-1] == "Action limit lifted: the ramp to 1 reached it after 2000 env steps"


def test_the_ramp_survives_a_checkpoint_and_the_policy_node_follows_each_step_of_it():
    limiter = ActionLimiter(lift_env_steps=1000)
    drive_limiter(limiter, updates=5001)
    limiter.observe_env_steps(250)
    copy = ActionLimiter(lift_env_steps=1000)
    copy.load_state_dict(limiter.state_dict())
    assert copy.lifting and copy.current_limit == pytest.approx(0.7)
    old = {k: v for k, v in limiter.state_dict().items() if k != "lift_progress"}
    copy.load_state_dict(old)  # a checkpoint from before the ramp: not lifting yet
    assert not copy.lifting and copy.current_limit == 0.6
    node_side = ActionLimiter()
    node_side.follow(limiter.current_limit)  # what PolicyWeights.action_limit carries
    np.testing.assert_allclose(node_side.apply(np.array([0.95, 0.1])), [0.7, 0.1], rtol=1e-6)
    node_side.follow(0.0)
    assert not node_side.active
