"""A gymnasium.Env over the embedded simulator and the policy node's own per-frame object.

So that a peer library (Stable-Baselines3) learns on exactly the task this project learns on:
the same EmbeddedSimulator core, and every frame through `DrivingCore` in `evaluate` mode, as in
`av_td3_ros.demo.evaluation.evaluate`. The core makes the 84x84 gray 4-stack, the 23 kinematics,
the reward and the episode ends (EpisodeTracker: collision and off_route terminate; stuck,
route_finished and the step limit truncate); this module only moves the agent's action in and
the core's results out. Nothing here computes a reward, a stack or an end.

The one ordering difference from a policy node: the core decides on frame t when the frame
arrives, but a gymnasium agent gives its action for frame t only in the following `step()`. The
core's driver therefore hands back a placeholder and records the observation; `step(action)`
then sends the command that the core's evaluate mode makes of that action (clip to [-1, 1],
`driving.command.action_to_control`), and a non-finite action brakes, as the core does for a
non-finite actor output. test/test_gym_env.py checks that a fixed action sequence gives the
same observations, rewards and ends here as through `evaluate`.

    reset(seed=s)  -> sim.reset(s): the start of `evaluate(..., seed=s)`'s first episode
                      (episode i of an evaluation starts from seed + i). seed=None continues the
                      simulator's random stream (the first reset uses SimConfig.seed).
    step(action)   -> observation, reward, terminated, truncated, info (info["end"]: the
                      tracker's reason, e.g. "collision", "off_route", "stuck", "step_limit").
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from av_td3_ros.demo.evaluation import stamp_ns, vehicle_state
from av_td3_ros.driving.command import BRAKE, action_to_control
from av_td3_ros.driving.core import MAX_ABS_KINEMATICS, DrivingCore, FrameDecision
from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.sim.simulator import EmbeddedSimulator, SimConfig, SimState

__all__ = ["DEMO_REWARD", "DrivingEnv", "demo_reward"]

STACK, FRAME_SIDE, KINEMATICS = 4, 84, 23
# Frames of one step the core may brake through (bad frame, no kinematics) before the wrapper
# gives up: the embedded simulator never produces such frames, so this only bounds a bug.
MAX_BRAKE_FRAMES = 100


def demo_reward() -> RewardConfig:
    """The demo's episodes (DemoOptions): 300-step cap, stuck after 25 steps (5 s at 5 Hz)."""
    return RewardConfig(max_episode_steps=300, stuck_steps=25)


DEMO_REWARD = demo_reward()


class _AgentSeat:
    """The DrivingCore's policy when the agent is outside: records what the core would feed an
    actor and answers with a placeholder (the command is decided in `DrivingEnv.step`)."""

    version = 0

    def __init__(self) -> None:
        self.policy = self  # "loaded": the core then acts instead of braking
        self.action_limit = 0.0
        self.frames: np.ndarray | None = None
        self.kinematics: np.ndarray | None = None

    def act(self, frames: np.ndarray, kinematics: np.ndarray, policy=None) -> tuple[np.ndarray, int]:
        self.frames = np.asarray(frames, np.uint8).copy()
        self.kinematics = np.asarray(kinematics, np.float32).copy()
        return np.zeros(2, np.float32), 0


class DrivingEnv(gym.Env):
    """Observation Dict(frames (4, 84, 84) uint8, kinematics (23,) float32), the policy node's;
    action Box(-1, 1, (2,)) = (steer, throttle_brake), as the node's actor outputs.

    sim_config: the simulator (traffic, camera, random_start, ...); reward: the episode's reward
    and ends (default: the demo's). route_length_m / route_spacing_m as sim_node and evaluate.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        sim_config: SimConfig | None = None,
        reward: RewardConfig | None = None,
        *,
        route_length_m: float = 1500.0,
        route_spacing_m: float = 2.0,
    ) -> None:
        super().__init__()
        self.sim_config = sim_config or SimConfig()
        self.reward_config = reward or demo_reward()
        self.route_length_m = float(route_length_m)
        self.route_spacing_m = float(route_spacing_m)
        self.observation_space = gym.spaces.Dict({
            "frames": gym.spaces.Box(0, 255, (STACK, FRAME_SIDE, FRAME_SIDE), np.uint8),
            "kinematics": gym.spaces.Box(-MAX_ABS_KINEMATICS, MAX_ABS_KINEMATICS, (KINEMATICS,), np.float32),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._sim = EmbeddedSimulator(self.sim_config)
        self._seat = _AgentSeat()
        self._core = DrivingCore(mode="evaluate", policy=self._seat, reward=self.reward_config,
                                 stack_size=STACK)
        self._state: SimState | None = None
        self._running = False
        self._closed = False

    # --- gymnasium API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._closed:
            raise RuntimeError("DrivingEnv.reset() after close()")
        self._state = self._sim.reset(seed=seed)
        self._core.set_route(self._sim.route(self.route_length_m, self.route_spacing_m))
        self._core.reset_done()
        decision, reward, _ = self._frame_until_decided(self._state)
        if decision.episode_end or self._seat.frames is None:
            why = decision.episode_end or decision.brake_reason
            raise RuntimeError(f"the episode ended on its start frame ({why})")
        self._running = True
        return self._observation(decision), self._info(decision)

    def step(self, action):
        if not self._running:
            raise RuntimeError("DrivingEnv.step() before reset() or after the episode ended")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (2,):
            raise ValueError(f"action must have 2 values (steer, throttle_brake), got shape {action.shape}")
        # The core's evaluate mode: a non-finite actor output brakes; otherwise clip, then command.
        command = action_to_control(np.clip(action, -1.0, 1.0)) if np.isfinite(action).all() else BRAKE
        state = self._sim.step(command.throttle, command.steer, command.brake)
        decision, reward, state = self._frame_until_decided(state)
        self._state = state
        terminated, truncated = self._end_flags(decision)
        if terminated or truncated:
            self._running = False
        return self._observation(decision), reward, terminated, truncated, self._info(decision)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sim.close()

    # --- what the run reads besides the API -------------------------------------------------------------
    @property
    def sim_state(self) -> SimState | None:
        """The simulator's latest tick (for distance, collisions, speed)."""
        return self._state

    @property
    def fixed_delta_seconds(self) -> float:
        return self.sim_config.fixed_delta_seconds

    # --- internals ------------------------------------------------------------------------------------
    def _on_frame(self, state: SimState) -> FrameDecision:
        """One frame through the core, events first: exactly `evaluate`'s order."""
        stamp = stamp_ns(state)
        for kind in ("collision", "lane_invasion"):
            for _ in range(int(getattr(state, kind))):
                self._core.add_event(kind, stamp)
        return self._core.on_frame(stamp, state.image, "bgra8", vehicle_state(state))

    def _frame_until_decided(self, state: SimState) -> tuple[FrameDecision, float, SimState]:
        """Feed frames until the core acts or ends the episode. A frame the core brakes on
        without deciding (it never happens in this simulator) is driven through with a brake,
        as `evaluate` would, its reward counted into this step's."""
        reward = 0.0
        for _ in range(MAX_BRAKE_FRAMES):
            self._seat.frames = None
            decision = self._on_frame(state)
            reward += float(decision.reward or 0.0)
            if decision.episode_end or self._seat.frames is not None:
                return decision, reward, state
            state = self._sim.step(BRAKE.throttle, BRAKE.steer, BRAKE.brake)
        raise RuntimeError(f"the driving core braked for {MAX_BRAKE_FRAMES} frames: {decision.brake_reason}")

    def _end_flags(self, decision: FrameDecision) -> tuple[bool, bool]:
        if not decision.episode_end:
            return False, False
        last = decision.transitions[-1]  # the episode's final STEP, judged by the tracker
        return bool(last.terminated), bool(last.truncated)

    def _observation(self, decision: FrameDecision) -> dict[str, np.ndarray]:
        """The stack and kinematics the core fed its actor on this frame; at an episode end (no
        actor call) the final stack and the final step's kinematics, as its transition has them."""
        if self._seat.frames is not None:
            return {"frames": self._seat.frames, "kinematics": self._seat.kinematics}
        last = decision.transitions[-1]
        return {"frames": self._core.stack.stack(), "kinematics": np.array(last.kinematics, np.float32)}

    def _info(self, decision: FrameDecision) -> dict[str, Any]:
        state = self._state
        return {
            "end": decision.episode_end,
            "episode_step": self._core.step,
            "episode_return": float(decision.episode_return),
            "collision": bool(state.collision) if state is not None else False,
            "lane_invasion": bool(state.lane_invasion) if state is not None else False,
            "forward_speed": float(vehicle_state(state).forward_speed) if state is not None else 0.0,
        }
