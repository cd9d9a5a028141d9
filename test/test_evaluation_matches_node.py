"""The evaluation and the policy node share one per-frame object (DrivingCore): driven with the
same weights from the same start, sim_node + policy_node over real DDS produce the commands,
rewards and episode end that the in-process evaluation produces."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from av_td3_msgs.msg import Transition
from carla_msgs.msg import CarlaEgoVehicleControl
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from av_td3_ros.demo.evaluation import evaluate
from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file
from av_td3_ros.learning.weights import encode_policy_weights
from av_td3_ros.model import PolicyNetwork
from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.ros import qos
from av_td3_ros.ros.conversions import stamp_to_ns

SEED, MAX_STEPS, ROLE = 11, 40, "twin"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "policy.safetensors"
    path.write_bytes(encode_policy_weights(PolicyNetwork().state_dict(), metadata={"version": 1}))
    return path


def evaluation_decisions(weights_file):
    runtime = PolicyRuntime()
    runtime.install(runtime.prepare(load_weights_file(weights_file, runtime), "file"))
    decisions = []
    result = evaluate(lambda frames, kin: runtime.act(frames, kin)[0], "twin", episodes=1, seed=SEED,
                      reward=RewardConfig(max_episode_steps=MAX_STEPS),
                      on_decision=lambda state, d: decisions.append((state.frame, d)))
    return result.episodes[0], decisions


class Recorder:
    def __init__(self, context):
        self.node = Node("evaluation_twin_recorder", context=context)
        self.lock = threading.Lock()
        self.controls: dict[int, tuple[float, float, float]] = {}
        self.transitions: list[Transition] = []
        self.node.create_subscription(CarlaEgoVehicleControl, f"/carla/{ROLE}/vehicle_control_cmd",
                                      self._on_control, qos.CONTROL_QOS)
        self.node.create_subscription(Transition, f"/{ROLE}/transitions", self._on_transition,
                                      qos.TRANSITIONS_QOS)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._run = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self._run:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_control(self, msg):
        with self.lock:
            self.controls.setdefault(stamp_to_ns(msg.header.stamp), (msg.steer, msg.throttle, msg.brake))

    def _on_transition(self, msg):
        with self.lock:
            self.transitions.append(msg)

    def first_episode(self):
        with self.lock:
            episode = [t for t in self.transitions if t.episode == 1]
        return episode if episode and (episode[-1].terminated or episode[-1].truncated) else None

    def close(self):
        self._run = False
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()


# odometry_sync_timeout 1 s: a frame is answered with the odometry of its own tick even on a loaded
# machine (the default 50 ms then falls back to the previous tick's pose, a real but different input).
def test_sim_node_and_policy_node_drive_exactly_like_the_evaluation(spawn, rclpy_context, weights_file):
    stats, decisions = evaluation_decisions(weights_file)
    assert stats.length >= 5, "the twin episode should be long enough to compare"
    recorder = Recorder(rclpy_context)
    try:
        spawn(["-m", "av_td3_ros.nodes.sim_node", "--ros-args", "-p", f"role_name:={ROLE}",
               "-p", f"seed:={SEED}", "-p", f"reset_service:=/{ROLE}/reset",
               # The first route before the first frame, as the evaluation has it (the late-route
               # start of the real bridge is the driving core's own test).
               "-p", "route_delay_ticks:=0"])
        spawn(["-m", "av_td3_ros.nodes.policy_node", "--ros-args", "-r", "__node:=policy_twin",
               "-p", f"role_name:={ROLE}", "-p", "mode:=train", "-p", "exploration_noise:=0.0",
               "-p", "initial_action_limit:=0.0", "-p", f"weights_file:={weights_file}",
               "-p", "weights_topic:=''", "-p", f"transitions_topic:=/{ROLE}/transitions",
               "-p", f"reset_service:=/{ROLE}/reset", "-p", f"reward.max_episode_steps:={MAX_STEPS}",
               "-p", "sensor_timeout:=5.0", "-p", "odometry_sync_timeout:=1.0"])
        deadline = time.monotonic() + 90
        while recorder.first_episode() is None:
            assert time.monotonic() < deadline, (
                f"the first episode did not end: {len(recorder.controls)} controls, "
                f"{len(recorder.transitions)} transitions")
            time.sleep(0.1)
        episode = recorder.first_episode()
        with recorder.lock:
            controls = dict(recorder.controls)
    finally:
        recorder.close()

    steps = [t for t in episode if t.kind == Transition.KIND_STEP]
    assert len(steps) == stats.length
    assert (steps[-1].terminated, steps[-1].truncated) == (stats.end in ("collision", "off_route"),
                                                           stats.end not in ("collision", "off_route"))
    want_rewards = [d.reward for _, d in decisions[1:]]
    assert sum(want_rewards) == pytest.approx(stats.ret)
    assert [t.reward for t in steps] == pytest.approx(want_rewards, abs=1e-4)
    # The commands, frame by frame (float32 on the wire).
    fixed_delta = 0.2  # sim_node's and SimConfig's default
    compared = 0
    for frame, decision in decisions:
        stamp = int(round(frame * fixed_delta * 1e9))
        got = controls.get(stamp)
        assert got is not None, f"no control for frame {frame}"
        want = (decision.command.steer, decision.command.throttle, decision.command.brake)
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"frame {frame}")
        compared += 1
    assert compared == stats.length + 1  # every frame of the episode, the braked last one included
