"""Exploration: the executed training action, and the noise schedule it follows."""

import numpy as np
import pytest

from av_td3_ros.learning import ActionLimiter, TD3Config
from av_td3_ros.learning.exploration import Exploration, NoiseSchedule


def rng(seed=0):
    return np.random.default_rng(seed)


def test_the_default_schedule_is_todays_constant_0_1_from_td3config():
    schedule = NoiseSchedule.from_config(TD3Config())
    assert (schedule.kind, schedule.start) == ("constant", 0.1)
    assert [schedule.std(step) for step in (0, 1, 10_000, 10**9)] == [0.1] * 4


def test_linear_schedule_at_start_middle_end_and_after():
    schedule = NoiseSchedule.linear(1.0, 0.1, 1000)  # DrQ-v2's linear(1.0, 0.1, steps)
    assert schedule.std(0) == 1.0
    assert schedule.std(500) == pytest.approx(0.55)
    assert schedule.std(250) == pytest.approx(0.775)
    assert schedule.std(1000) == pytest.approx(0.1)
    assert schedule.std(50_000) == pytest.approx(0.1)  # held at the final std


def test_linear_schedule_from_td3config_fields():
    config = TD3Config(exploration_schedule="linear", exploration_noise=0.5, exploration_noise_final=0.05,
                       exploration_decay_steps=200)
    schedule = NoiseSchedule.from_config(config)
    assert (schedule.std(0), schedule.std(100), schedule.std(200)) == pytest.approx((0.5, 0.275, 0.05))


@pytest.mark.parametrize("kwargs, message", [
    (dict(exploration_schedule="cosine"), "exploration_schedule"),
    (dict(exploration_noise_final=-0.1), "exploration_noise_final"),
    (dict(exploration_decay_steps=0), "exploration_decay_steps"),
])
def test_bad_schedule_fields_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TD3Config(**kwargs)
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule("cosine")
    with pytest.raises(ValueError, match="start"):
        NoiseSchedule.constant(float("nan"))


def test_a_finite_action_gets_gaussian_noise_then_the_clip_in_that_order_of_draws():
    # The numbers a caller can rely on: one rng.normal(0, std, size=2) per action, then the clip.
    exploration = Exploration(NoiseSchedule.constant(0.1), rng=rng(7))
    actor = np.array([0.3, 0.97], np.float32)
    got = exploration.action(actor, step=0)
    expected = np.clip(actor + rng(7).normal(0.0, 0.1, size=2), -1.0, 1.0).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32 and got.shape == (2,)
    np.testing.assert_array_equal(actor, np.array([0.3, 0.97], np.float32))  # the caller's array stays


def test_without_a_policy_or_from_a_non_finite_output_the_action_is_uniform_random():
    exploration = Exploration(NoiseSchedule.constant(0.1), rng=rng(1))
    random = np.array([exploration.action(None, step=0) for _ in range(2000)])
    assert random.shape == (2000, 2) and random.dtype == np.float32
    assert random.min() >= -1.0 and random.max() <= 1.0
    assert random.std(axis=0) == pytest.approx([1 / np.sqrt(3)] * 2, rel=0.05)  # uniform on [-1, 1]
    np.testing.assert_array_equal(exploration.action(np.array([np.nan, 0.2]), step=0),
                                  rng(1).uniform(-1, 1, 2000 * 2 + 2)[-2:].astype(np.float32))
    # In a batch only the broken rows are replaced; the others get their noise.
    out = Exploration(NoiseSchedule.constant(0.0), rng=rng(2)).action(
        np.array([[0.1, 0.2], [np.inf, 0.0], [0.3, -0.4]]), step=0)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[[0, 2]], np.array([[0.1, 0.2], [0.3, -0.4]], np.float32))


def test_the_noise_std_follows_the_schedule_over_env_steps():
    exploration = Exploration(NoiseSchedule.linear(0.3, 0.05, 100), rng=rng(3))
    zeros = np.zeros((20_000, 2))
    assert exploration.action(zeros, step=0).std() == pytest.approx(0.3, rel=0.03)
    assert exploration.action(zeros, step=50).std() == pytest.approx(0.175, rel=0.03)
    assert exploration.action(zeros, step=100).std() == pytest.approx(0.05, rel=0.03)
    # max_action scales the std and the clip
    wide = Exploration(NoiseSchedule.constant(0.1), rng=rng(3), max_action=2.0)
    assert wide.std(0) == pytest.approx(0.2)
    assert np.abs(wide.action(np.full((1000, 2), 1.99), step=0)).max() <= 2.0


def test_the_action_limiter_is_applied_last_and_bounds_noise_and_random_actions():
    limiter = ActionLimiter(limit=0.6)
    exploration = Exploration(NoiseSchedule.constant(0.5), rng=rng(4), limiter=limiter)
    noisy = exploration.action(np.full((500, 2), 0.59), step=0)
    random = np.array([exploration.action(None, step=0) for _ in range(500)])
    assert np.abs(noisy).max() <= 0.6 + 1e-7 and np.abs(random).max() <= 0.6 + 1e-7
    limiter.follow(0.0)  # the trainer lifted the limit
    assert np.abs(exploration.action(np.full((500, 2), 0.59), step=0)).max() > 0.9


def test_a_wrong_action_shape_is_a_clear_error():
    exploration = Exploration(rng=rng())
    with pytest.raises(ValueError, match="policy_action"):
        exploration.action(np.zeros(3), step=0)
    with pytest.raises(ValueError, match="max_action"):
        Exploration(rng=rng(), max_action=0.0)
