"""DrivingEnv, the gymnasium wrapper SB3 learns on, is the evaluation's task: the same simulator,
observation, reward and episode ends. A fixed action sequence driven through the wrapper and
through `demo.evaluation.evaluate` (the policy node's DrivingCore, in process) from the same
starts gives the same observations, rewards and ends, step for step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from av_td3_ros.demo.evaluation import evaluate
from av_td3_ros.perception.reward import EndReason, RewardConfig
from av_td3_ros.sim.gym_env import DrivingEnv
from av_td3_ros.sim.simulator import SimConfig

SEED = 21
# Random actions leave the road within a few steps (off_route, terminated); steering along the
# route while braking stands still (stuck, truncated); steering along it with some throttle runs
# into the short step limit (truncated).
REWARD = RewardConfig(max_episode_steps=40, stuck_steps=10)


def driver_action(episode: int, step: int, kinematics: np.ndarray) -> np.ndarray:
    kind = episode % 3
    if kind == 0:
        return np.random.default_rng(1000 * episode + step).uniform(-1.0, 1.0, 2).astype(np.float32)
    # Steer towards the 4th route point ahead (its angle > 0 is left; steer > 0 is right).
    steer = float(np.clip(-1.5 * np.arctan2(kinematics[10], kinematics[9]), -1.0, 1.0))
    return np.array([steer, -1.0 if kind == 1 else 0.3], np.float32)


def through_evaluation(episodes: int, sim_config: SimConfig):
    """Per episode the observations, actions, rewards and end, as evaluate() drives them."""
    runs: list[dict] = []

    def driver(frames, kinematics):
        run = runs[-1]
        run["obs"].append((frames.copy(), kinematics.copy()))
        run["actions"].append(driver_action(len(runs) - 1, len(run["obs"]) - 1, kinematics))
        return run["actions"][-1]

    def on_frame(state):
        if state.episode_step == 0:
            runs.append({"obs": [], "actions": [], "rewards": [], "end": ""})

    def on_decision(state, decision):
        run = runs[-1]
        if state.episode_step > 0:
            run["rewards"].append(decision.reward)
        if decision.episode_end:
            run["end"] = decision.episode_end
            run["final"] = state.episode_step

    result = evaluate(driver, "fixed", episodes=episodes, seed=SEED, reward=REWARD, sim_config=sim_config,
                      on_frame=on_frame, on_decision=on_decision)
    return runs, result


def through_wrapper(actions: list[list[np.ndarray]], sim_config: SimConfig):
    """The same per-episode record from the wrapper, replaying the given action sequences."""
    runs = []
    env = DrivingEnv(sim_config, REWARD)
    try:
        for i, sequence in enumerate(actions):
            obs, _ = env.reset(seed=SEED + i)
            run = {"obs": [], "rewards": [], "flags": []}
            while True:
                run["obs"].append((obs["frames"], obs["kinematics"]))
                obs, reward, terminated, truncated, info = env.step(sequence[len(run["obs"]) - 1])
                run["rewards"].append(reward)
                run["flags"].append((terminated, truncated))
                if terminated or truncated:
                    run["end"], run["final"], run["last_obs"] = info["end"], info["episode_step"], obs
                    break
            runs.append(run)
    finally:
        env.close()
    return runs


@pytest.mark.parametrize("traffic", [0, 6])
def test_a_fixed_action_sequence_gives_the_evaluations_observations_rewards_and_ends(traffic):
    sim_config = SimConfig(traffic=traffic)
    episodes = 3
    expected, evaluation = through_evaluation(episodes, sim_config)
    got = through_wrapper([run["actions"] for run in expected], sim_config)
    assert len(expected) == len(got) == episodes
    ends = set()
    for e, g, stats in zip(expected, got, evaluation.episodes, strict=True):
        assert len(g["obs"]) == len(e["obs"]) == stats.length
        for (ef, ek), (gf, gk) in zip(e["obs"], g["obs"], strict=True):
            np.testing.assert_array_equal(gf, ef)
            np.testing.assert_array_equal(gk, ek)
            assert gf.dtype == np.uint8 and gf.shape == (4, 84, 84) and gk.dtype == np.float32
        assert g["rewards"] == pytest.approx(e["rewards"], abs=0.0)
        assert sum(g["rewards"]) == pytest.approx(stats.ret)
        assert g["end"] == e["end"] == stats.end and g["final"] == e["final"]
        terminated = EndReason(g["end"]) in (EndReason.COLLISION, EndReason.OFF_ROUTE)
        assert g["flags"][-1] == (terminated, not terminated)
        assert not any(any(f) for f in g["flags"][:-1])
        ends.add(g["end"])
    assert len(ends) >= 2, f"the sequence should end episodes in different ways, got {ends}"


def test_the_final_observation_is_the_last_stack_and_the_episode_cannot_run_past_its_end():
    env = DrivingEnv(SimConfig(), REWARD)
    try:
        obs, _ = env.reset(seed=SEED)
        frames = [obs["frames"]]
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(np.array([0.0, -1.0], np.float32))
            frames.append(obs["frames"])
            done = terminated or truncated
        assert truncated and not terminated  # stuck: braked to a standstill
        # The stack shifts by one frame per step, also into the final observation.
        np.testing.assert_array_equal(frames[-1][:3], frames[-2][1:])
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step(np.zeros(2, np.float32))
        with pytest.raises(ValueError, match="2 values"):
            env.reset(seed=SEED)
            env.step(np.zeros(3, np.float32))
    finally:
        env.close()


def test_a_non_finite_action_brakes_instead_of_crashing():
    env = DrivingEnv(SimConfig(), REWARD)
    try:
        env.reset(seed=SEED)
        speeds = []
        for _ in range(3):
            _, _, terminated, truncated, info = env.step(np.array([np.nan, np.inf], np.float32))
            speeds.append(info["forward_speed"])
        assert speeds == sorted(speeds, reverse=True) and speeds[-1] < 10.0 - 2.0
    finally:
        env.close()


def test_gymnasiums_env_checker_passes_without_warnings():
    env = DrivingEnv(SimConfig(), REWARD)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
        assert [str(w.message) for w in caught] == []
    finally:
        env.close()
