"""DrivingCore: one car's decision for one camera frame, the object the policy node and the
evaluation both drive (no ROS here: numpy and torch only)."""

from __future__ import annotations

import numpy as np
import pytest

from av_td3_ros.driving.command import BRAKE
from av_td3_ros.driving.core import STAMP_TOLERANCE_NS, DrivingCore
from av_td3_ros.driving.stamp_gate import StampGate
from av_td3_ros.driving.state import VehicleState
from av_td3_ros.learning.ingest import KIND_START, KIND_STEP
from av_td3_ros.perception.reward import RewardConfig

T0, DT = 1_000_000_000_000, 50_000_000  # frame stamps: 1000 s + i * 50 ms
ROUTE = np.stack([np.linspace(0.0, 500.0, 251), np.zeros(251)], axis=1)  # straight, along +x
IMAGE = np.full((300, 400, 4), 90, np.uint8)


def on_route(i: int, speed: float = 8.0, y: float = 0.0) -> VehicleState:
    return VehicleState(x=10.0 + i * 0.4, y=y, yaw=0.0, speed=speed, forward_speed=speed)


@pytest.fixture(scope="module")
def policy_state_dict():
    import torch

    from av_td3_ros.model import PolicyNetwork

    torch.manual_seed(0)
    return PolicyNetwork().state_dict()


def decoded(state_dict, version, action_limit=0.0):
    from av_td3_ros.ros.conversions import DecodedWeights

    return DecodedWeights(dict(state_dict), version, 0, "", "sha", action_limit, 0)


def train_core(runtime=None, limiter=None, **kwargs) -> DrivingCore:
    from av_td3_ros.driving.runtime import PolicyRuntime

    core = DrivingCore(mode="train", policy=runtime or PolicyRuntime(), limiter=limiter, seed=0,
                       reward=RewardConfig(), **kwargs)
    core.set_route(ROUTE)
    return core


def frame(core, i, state=None):
    return core.on_frame(T0 + i * DT, IMAGE, "bgra8", state or on_route(i))


def test_train_mode_emits_start_then_steps_and_brakes_through_resets(policy_state_dict):
    from av_td3_ros.driving.runtime import PolicyRuntime
    from av_td3_ros.learning.action_limiter import ActionLimiter

    runtime = PolicyRuntime()
    limiter = ActionLimiter(limit=0.6)
    core = train_core(runtime, limiter)
    out = frame(core, 0)
    assert [t.kind for t in out.transitions] == [KIND_START] and out.transitions[0].seq == 0
    assert np.abs(out.action).max() <= 0.6 + 1e-6 and out.policy_version == 0  # random, limited
    first_action = out.action
    out = frame(core, 1)
    assert out.transitions == [] and core.holding  # the step waits for its tick's late events
    assert out.reward > 0  # on the route at about target speed
    out = frame(core, 2)
    (step,) = out.transitions  # released by the next frame
    assert (step.kind, step.seq, step.step) == (KIND_STEP, 1, 1) and step.reward > 0
    np.testing.assert_array_equal(step.action, first_action)  # the action that led here
    # The first weights bring the trainer's limit (0 = none) and the version.
    runtime.install(runtime.prepare(decoded(policy_state_dict, 4, 0.0), "t"))
    out = frame(core, 3)
    assert out.policy_version == 4 and not limiter.active
    core.add_event("collision", T0 + 4 * DT)
    out = frame(core, 4)
    assert out.command == BRAKE and out.request_reset and out.episode_end == "collision"
    assert [(t.step, t.terminated) for t in out.transitions] == [(3, False), (4, True)]
    assert out.transitions[1].policy_version == 4 and out.transitions[1].reward <= -10 + 1.0
    assert frame(core, 5).brake_reason == "waiting for the episode reset"
    assert frame(core, 6).transitions == []
    core.reset_done()
    assert frame(core, 7).brake_reason == "waiting for the route after the reset"
    core.set_route(ROUTE)
    (start,) = frame(core, 8).transitions
    assert (start.kind, start.episode, start.step, start.seq) == (KIND_START, 2, 0, 5)


def test_a_collision_published_after_its_frame_amends_that_step_and_ends_the_episode():
    """The bridge publishes a tick's camera before its collision: the event is charged to the
    step of its own stamp, not to the next one."""
    core = train_core()
    frame(core, 0)
    frame(core, 1)
    core.add_event("collision", T0 + 1 * DT - 1)  # float-derived stamps: 1 ns early is the same tick
    settled = core.settle()
    (step,) = settled.transitions
    assert step.step == 1 and step.terminated and step.reward <= -10 + 1.0
    assert settled.episode_end == "collision" and settled.request_reset
    out = frame(core, 2)
    assert out.command == BRAKE and out.brake_reason == "waiting for the episode reset"


def test_events_are_charged_by_stamp_not_by_arrival():
    core = train_core()
    frame(core, 0)
    core.add_event("lane_invasion", T0 + 2 * DT)  # early: belongs to frame 2
    out1 = frame(core, 1)
    out2 = frame(core, 2)
    step1 = out2.transitions[0]
    out3 = frame(core, 3)
    step2 = out3.transitions[0]
    penalty = RewardConfig().lane_invasion_penalty
    assert step1.step == 1 and step1.reward == pytest.approx(out1.reward)
    assert step2.step == 2 and out2.reward < out1.reward - penalty / 2
    # Events of an episode's past (before its START frame) are the reset's, not this episode's.
    core2 = train_core()
    core2.add_event("collision", T0 - DT)
    frame(core2, 0)
    assert not frame(core2, 1).episode_end
    assert not core2.settle().episode_end


def test_an_event_older_than_the_released_step_is_dropped_and_counted():
    core = train_core()
    frame(core, 0)
    frame(core, 1)
    frame(core, 2)  # releases step 1
    core.add_event("collision", T0 + 1 * DT)
    frame(core, 3)  # releases step 2: the step-1 collision cannot be charged any more
    assert core.late_events == 1 and core.phase == "run"


def test_after_a_reset_the_episode_waits_for_a_newer_route_or_gives_up_on_request():
    core = train_core()
    frame(core, 0)
    core.add_event("collision", T0 + DT)
    assert frame(core, 1).episode_end == "collision"
    core.reset_done()
    assert core.phase == "route"
    assert frame(core, 2).command == BRAKE
    core.route_wait_over()
    (start,) = frame(core, 3).transitions
    assert start.kind == KIND_START and start.episode == 2
    # A route that arrived between the end and the reset's answer counts as the new one.
    core.add_event("collision", T0 + 4 * DT)
    assert frame(core, 4).episode_end == "collision"
    core.set_route(ROUTE)
    core.reset_done()
    assert core.phase == "start"
    # Without a reset service nobody moves the car: no route to wait for.
    core.add_event("collision", T0 + 6 * DT)
    frame(core, 5)
    assert frame(core, 6).episode_end == "collision"
    core.reset_done(expect_route=False)
    assert core.phase == "start"


def test_kinematic_ends_brake_on_the_frame_itself():
    core = train_core()
    frame(core, 0)
    out = frame(core, 1, on_route(1, y=RewardConfig().max_lateral_offset + 1.0))
    assert out.episode_end == "off_route" and out.command == BRAKE and out.transitions[0].terminated


def test_deploy_mode_brakes_without_weights_and_is_deterministic(policy_state_dict):
    from av_td3_ros.driving.runtime import PolicyRuntime

    runtime = PolicyRuntime()
    core = DrivingCore(mode="deploy", policy=runtime)
    core.set_route(ROUTE)
    out = frame(core, 0)
    assert out.command == BRAKE and "without valid weights" in out.brake_reason and not out.transitions
    runtime.install(runtime.prepare(decoded(policy_state_dict, 1, 0.3), "t"))
    a = frame(core, 1, on_route(1)).action
    b = frame(core, 2, on_route(1)).action
    assert a is not None
    np.testing.assert_array_equal(a, b)  # no noise
    from av_td3_ros.perception.image import to_gray84

    expected, _ = runtime.act(np.stack([to_gray84(IMAGE, "bgra8")] * 4), _kinematics(core, 1))
    np.testing.assert_allclose(a, np.clip(expected, -1, 1))  # no limiter in deploy
    core.add_event("collision", T0 + 3 * DT)
    out = frame(core, 3)
    assert not out.episode_end and out.action is not None  # deploy episodes never end


def _kinematics(core, i):
    from av_td3_ros.perception.kinematics import KinematicsEncoder, Route

    encoder = KinematicsEncoder(num_waypoints=10)
    s = on_route(i)
    return encoder.encode(Route.deduplicated(ROUTE), s.x, s.y, s.yaw, s.forward_speed)


def test_bad_inputs_brake_with_a_reason():
    core = train_core()
    assert "bad camera frame" in core.on_frame(T0, IMAGE[:, :, :3], "bgra8", on_route(0)).brake_reason
    far = VehicleState(x=1e9, y=1e9, yaw=0.0, speed=1e6, forward_speed=1e6)
    assert "out of range" in core.on_frame(T0, IMAGE, "bgra8", far).brake_reason
    core.set_route(None)
    assert core.on_frame(T0, IMAGE, "bgra8", on_route(0)).brake_reason == "no valid route"


def test_stamp_tolerance_is_far_below_a_tick():
    assert STAMP_TOLERANCE_NS <= DT / 10


def test_stamp_gate_answers_each_stamp_once():
    gate = StampGate(memory=3)
    assert [gate.admit(s) for s in (1, 2, 2, 3, 1, 4)] == [True, True, False, True, False, True]
