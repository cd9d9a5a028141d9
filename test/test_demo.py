"""`av-td3 demo` closes the loop through the real nodes (sim_node, policy_node, trainer_node as OS
processes over DDS), and its report judges what it measured — it cannot be passed by a car that
learned to stand still."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from av_td3_ros.demo.evaluation import EpisodeStats, Evaluation, evaluate, random_driver
from av_td3_ros.demo.report import L2_TAGS, stability_checks
from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file
from av_td3_ros.perception.reward import RewardConfig


def test_smoke_200_steps_transitions_reach_the_trainer_and_its_weights_drive_the_car(ros_env, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "av_td3_ros.cli", "demo", "--steps", "200", "--minutes", "4",
         "--learning-starts", "30", "--batch-size", "16", "--publish-every", "10", "--eval-episodes", "1",
         "--progress-every", "2", "--run-dir", str(run),
         # At its default value: a sim parameter is for sim_node, not for the monitor's rcl (which
         # read the demo's own arguments as legacy remap rules).
         "--sim-param", "initial_speed:=10.0"],
        env=ros_env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "remap rule" not in out + proc.stderr
    # Progress, the evaluation table next to the random policy, the stability report.
    assert "updates" in out and "limiter" in out and "upd/step" in out
    # The effective update-to-data ratio: the trainer's updates per env step after learning_starts.
    import json

    summary = json.loads((run / "summary.json").read_text())
    steps_after_start = summary["env_steps_after_learning_starts"]
    assert summary["trainer_updates"] > 0 and steps_after_start >= summary["env_steps"] - 30 > 0
    assert summary["effective_update_to_data_ratio"] == summary["trainer_updates"] / steps_after_start
    assert summary["hold_ratio"] == 0.0 and "update-to-data ratio:" in out
    assert "TD3 v" in out and "random" in out and "stability report" in out
    assert out.count("PASS") + out.count("FAIL") >= 5
    # Transitions reached the trainer and weights came back to the policy node: the policy node
    # stamps every transition with the version of the weights that chose its action.
    with open(run / "episodes.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, "no episode was driven"
    assert max(int(r["policy_version"]) for r in rows) > 0, "the policy node never used trainer weights"
    decoded = load_weights_file(run / "weights" / "policy.safetensors", PolicyRuntime())
    assert decoded.version > 0
    # Signed out of the box: the run's own key signed what the policy node installed and saved.
    from av_td3_ros.learning.signing import load_trusted_keys, verify_payload

    trusted = load_trusted_keys([run / "keys" / "trainer.key.pub"])
    assert verify_payload((run / "weights" / "policy.safetensors").read_bytes(), trusted) in trusted
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "learning_curve.png").stat().st_size > 10_000
    assert (run / "config.json").exists() and (run / "report.md").exists()
    # A control answered every tick (the bridge-style timeout was never logged), nothing at ERROR.
    logs = {p.name: p.read_text() for p in (run / "logs").glob("*.log")}
    assert set(logs) == {"sim_node.log", "policy_node.log", "trainer_node.log"}
    assert "Timeout (" not in logs["sim_node.log"]
    for name, text in logs.items():
        assert "[ERROR]" not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"


def _evaluation(length: int, speed: float, actions: np.ndarray, collisions: int = 0) -> Evaluation:
    e = Evaluation("x", [EpisodeStats(length, 1.0, collisions, 0, speed, "step_limit")] * 3)
    e.actions = list(actions)
    return e


def _scalars(l2_peak: float, grads: np.ndarray) -> dict:
    steps = np.arange(len(grads), dtype=float)
    l2 = np.full(len(grads), 16.0)
    l2[-1] = l2_peak
    out = {tag: np.stack([steps, l2], axis=1) for tag in L2_TAGS}
    out["grad_norm/critic"] = np.stack([steps, grads], axis=1)
    return out


def test_a_healthy_driving_run_passes_every_criterion():
    rng = np.random.default_rng(0)
    checks = stability_checks(_scalars(25.0, rng.uniform(0, 8, 100)),
                              _evaluation(300, 7.5, rng.uniform(-0.8, 0.8, (500, 2))))
    assert all(c.passed for c in checks), [(c.name, c.measured) for c in checks]


@pytest.mark.parametrize("failure", ["l2", "grads", "saturated", "short", "standing", "crash"])
def test_each_criterion_fails_on_its_own_failure(failure):
    rng = np.random.default_rng(1)
    actions = rng.uniform(-0.8, 0.8, (500, 2))
    l2, grads, length, speed, collisions = 25.0, rng.uniform(0, 8, 100), 300, 7.5, 0
    if failure == "l2":
        l2 = 31.0  # one logged update above 30 is enough: "throughout"
    elif failure == "grads":
        grads = np.r_[grads[:80], np.full(20, 50.0)]
    elif failure == "saturated":
        actions[:, 1] = -1.0  # the design's failure: a tanh locked at one end
    elif failure == "short":
        length = 40
    elif failure == "standing":
        speed = 0.3  # a car that learned to stop "survives" without driving
    elif failure == "crash":
        collisions = 1
    checks = stability_checks(_scalars(l2, grads), _evaluation(length, speed, actions, collisions))
    failed = [c.name for c in checks if not c.passed]
    assert len(failed) == 1, failed


def test_without_logged_updates_the_training_criteria_are_not_measured_rather_than_passed():
    checks = stability_checks({}, _evaluation(300, 7.5, np.zeros((10, 2))))
    assert [c.verdict for c in checks[:2]] == ["N/A", "N/A"]


def test_random_policy_leaves_the_road_within_a_few_steps_and_evaluation_is_reproducible():
    reward = RewardConfig(max_episode_steps=300, stuck_steps=25)
    first = evaluate(random_driver(3), "random", episodes=3, seed=100, reward=reward)
    again = evaluate(random_driver(3), "random", episodes=3, seed=100, reward=reward)
    assert [e.length for e in first.episodes] == [e.length for e in again.episodes]
    assert first.mean_length < 30  # FACTS: ~7-9 steps
    assert {e.end for e in first.episodes} <= {"off_route", "collision", "stuck"}


@pytest.mark.parametrize("stabilized", [True, False])
def test_the_policy_node_of_each_variant_accepts_the_weights_its_trainer_publishes(stabilized, tmp_path):
    # Found in the first 30-minute unstabilized run: the policy node kept a LayerNorm encoder, so
    # it refused every published version as another architecture and drove randomly for 30 min.
    from av_td3_ros.demo.run import DemoOptions, node_parameters
    from av_td3_ros.learning import TD3Config, TD3Learner
    from av_td3_ros.ros.conversions import policy_weights_from_message, policy_weights_to_message

    trainer, policy, _ = node_parameters(DemoOptions(stabilized=stabilized), tmp_path)
    td3 = {k.removeprefix("td3."): v for k, v in trainer.items() if k.startswith("td3.")}
    td3["grad_clip"] = td3.get("grad_clip") or None  # the trainer node's 0 = no clipping
    published = TD3Learner(TD3Config(**td3)).actor_state_dict()
    runtime = PolicyRuntime(norm=policy["encoder_norm"])
    message = policy_weights_to_message(published, 1)
    decoded = policy_weights_from_message(message, runtime.reference_state_dict, runtime.max_weights_bytes)
    runtime.install(runtime.prepare(decoded, "trainer"))
    assert runtime.version == 1
    assert (policy.get("initial_action_limit", 0.6) == 0.0) == (not stabilized)


def test_a_held_ratio_sets_the_simulators_hold_the_trainers_headroom_and_the_policys_patience(tmp_path):
    from av_td3_ros.demo.run import DemoOptions, node_parameters
    from av_td3_ros.ros.parameters import POLICY_NODE_PARAMETERS, SIM_NODE_PARAMETERS, validate_value

    trainer, policy, sim = node_parameters(DemoOptions(hold_ratio=0.75, learning_starts=500), tmp_path)
    assert (sim["hold_update_ratio"], sim["hold_learning_starts"]) == (0.75, 500)
    assert trainer["update_to_data_ratio"] == 1.5  # never short of what the simulator waits for
    assert policy["sensor_timeout"] == policy["route_timeout"] == 12.0  # hold_timeout 10 s + 2 s
    specs = {s.name: s for s in (*SIM_NODE_PARAMETERS, *POLICY_NODE_PARAMETERS)}
    for key, value in (*sim.items(), ("sensor_timeout", 12.0), ("route_timeout", 12.0)):
        validate_value(specs[key], value)  # values the nodes accept
    # Explicit parameters win, and 0 is off: nothing of the hold is set.
    trainer, policy, sim = node_parameters(
        DemoOptions(hold_ratio=0.75, trainer={"update_to_data_ratio": 0.75}, policy={"sensor_timeout": 3.0}),
        tmp_path)
    assert trainer["update_to_data_ratio"] == 0.75 and policy["sensor_timeout"] == 3.0
    trainer, policy, sim = node_parameters(DemoOptions(), tmp_path)
    assert "hold_update_ratio" not in sim and "sensor_timeout" not in policy
    assert trainer["update_to_data_ratio"] == 1.0


def test_the_evaluation_drives_in_the_world_the_run_trained_in():
    # A run with traffic evaluated on the empty track would report collision-free driving on a
    # task it never faced: every world setting the sim node was given reaches the evaluation.
    from av_td3_ros.demo.run import DemoOptions, evaluation_world
    from av_td3_ros.sim.simulator import NODE_SETTINGS, SimConfig

    given = {"traffic": "6", "traffic_speed": "[3.0, 5.0]", "random_start": "true", "camera_view": "top",
             "image_width": "400", "image_height": "300", "fixed_delta_seconds": "0.4",
             "initial_speed": "4.0", "view_width_m": "30", "seed": "7", "hold_update_ratio": "0.5"}
    world = evaluation_world(DemoOptions(sim=given))
    assert (world.traffic, world.random_start, world.camera_view) == (6, True, "top")
    assert world.traffic_speed == (3.0, 5.0)
    assert (world.image_width, world.image_height) == (400, 300)
    assert (world.fixed_delta_seconds, world.initial_speed, world.view_width_m) == (0.4, 4.0, 30.0)
    assert world.seed == SimConfig().seed  # the evaluation picks its own starts
    assert set(given) - {"seed", "hold_update_ratio"} == set(NODE_SETTINGS) - {"seed"}
    assert evaluation_world(DemoOptions()) == SimConfig()


def test_the_traffic_task_reaches_sim_node_trainer_and_evaluation_and_a_param_still_wins(tmp_path):
    # `--task traffic` reaches the sim node, the trainer and the evaluation alike; a --sim-param or
    # --trainer-param on top of it changes only its own key.
    from av_td3_ros.cli import _parser, demo_options
    from av_td3_ros.demo.run import evaluation_world, node_parameters
    from av_td3_ros.sim.simulator import SimConfig

    lap = demo_options(_parser().parse_args(["demo"]))
    assert evaluation_world(lap) == SimConfig()
    opts = demo_options(_parser().parse_args(["demo", "--task", "traffic", "--sim-param", "traffic:=3"]))
    world = evaluation_world(opts)
    assert (world.traffic, world.traffic_speed, world.random_start) == (3, (3.0, 5.0), True)
    trainer, _, sim = node_parameters(opts, tmp_path)
    assert (sim["traffic"], sim["traffic_speed"], sim["random_start"]) == ("3", "[3.0, 5.0]", "true")
    assert trainer["td3.augment_pad"] == "0"  # the task's recipe (demo/tasks.py)
    assert trainer["td3.cnn_precision"] == "float32"
    assert "td3.augment_pad" not in node_parameters(lap, tmp_path)[0]  # the lap keeps the default
    shifted = demo_options(_parser().parse_args(["demo", "--task", "traffic", "--trainer-param",
                                                 "td3.augment_pad:=4"]))
    assert node_parameters(shifted, tmp_path)[0]["td3.augment_pad"] == "4"


@pytest.mark.slow
def test_a_demo_with_hold_ratio_1_keeps_at_least_one_update_per_env_step(ros_env, tmp_path):
    # Through the real chain (trainer -> /av_td3/update_count -> sim_node's hold): ~70 s here.
    import json

    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "av_td3_ros.cli", "demo", "--steps", "400", "--minutes", "4",
         "--hold-ratio", "1", "--learning-starts", "100", "--batch-size", "16", "--publish-every", "20",
         "--eval-episodes", "1", "--run-dir", str(run)],
        env=ros_env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hold_ratio"] == 1.0 and summary["update_to_data_ratio_cap"] == 2.0
    # The hold is a floor (less a few steps run free while the trainer's first updates came > 10 s
    # apart, if they did), the trainer's cap the ceiling.
    assert 0.9 <= summary["effective_update_to_data_ratio"] <= 2.0
    assert "held at 1" in proc.stdout
