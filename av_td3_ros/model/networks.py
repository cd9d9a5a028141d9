"""The networks of the stabilized TD3 driver: a NatureCNN encoder, a TD3 actor and twin critics.

Written in the spirit of sfujim/TD3 and DrQ-v2: small modules, the maths in plain sight.

Layout and speed (CPU, measured on this project's 2-core machines): convolutions run in
channels_last (NHWC) memory, where oneDNN's backward pass is ~3x faster than in NCHW. The
LayerNorm over [C, H, W] is computed on the NHWC view of the same memory, so it neither copies
nor changes the maths: it normalizes all C*H*W values of a sample (like GroupNorm(1, C)) and
its gain and bias keep nn.LayerNorm's (C, H, W) shape and state-dict names.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FRAME_SIZE = 84
FEATURE_DIM = 512
KINEMATICS_DIM = 23
ACTION_DIM = 2
# 512 image features + 23 kinematic values. The design's code produced 542 by mistake.
ACTOR_INPUT_DIM = FEATURE_DIM + KINEMATICS_DIM
assert ACTOR_INPUT_DIM == 535

LEAKY_SLOPE = 0.01
CNN_NORMS = ("layer", "none")

# Typical magnitude of each of the 23 kinematic inputs (perception/kinematics.py's order): speed
# 10 m/s, distance to the next waypoint 10 m, its angle 1 rad, the 10 waypoints' (x, y) 10 m. With
# TD3Config.scale_kinematics the actor and critics divide by it. In raw metres (|x9| ~17 m; a
# per-sample L2 of ~37 against ~23 for the 512 LayerNorm'd features) the kinematic columns of the
# critic's first layers take 55-80 % of its squared gradient norm (bench/critic_gradient.py);
# divided, the car did not learn the empty lap (docs/benchmarks.md 11i), so it is off by default.
KINEMATICS_SCALE = (10.0, 10.0, 1.0) + (10.0,) * (KINEMATICS_DIM - 3)


def kinematics_scale(scaled: bool) -> torch.Tensor:
    """The divisor of the kinematic inputs: KINEMATICS_SCALE, or ones (raw units, as before)."""
    return torch.tensor(KINEMATICS_SCALE if scaled else (1.0,) * KINEMATICS_DIM, dtype=torch.float32)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Pixels 0..255 (uint8, or float of the same scale) -> float32 in [-1, 1].

    The ONLY place frames are normalized; every caller hands in raw pixel values.
    """
    # copy=True: never modify the caller's tensor; in place after that (a fresh 29 MB tensor per
    # op at batch 256 costs more in page faults than the arithmetic).
    return frames.to(torch.float32, copy=True).div_(127.5).sub_(1.0)


class ConvLayerNorm(nn.LayerNorm):
    """nn.LayerNorm([C, H, W]) for a (B, C, H, W) tensor stored channels_last.

    Same parameters, same result as nn.LayerNorm; it normalizes the contiguous (B, H, W, C)
    view, so a channels_last activation is never copied back to NCHW (a copy that costs more
    than the normalization itself).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.normalized_shape
        weight, bias = self.weight.permute(1, 2, 0), self.bias.permute(1, 2, 0)  # (H, W, C) views
        y = F.layer_norm(x.permute(0, 2, 3, 1), (h, w, c), weight, bias, self.eps)
        return y.permute(0, 3, 1, 2)


class NatureCNN(nn.Module):
    """DQN's Nature CNN with a LayerNorm after every conv and the FC layer.

    (B, in_frames, 84, 84) pixels -> (B, feature_dim). norm="none" is the unstabilized variant
    (the design measured feature L2 norms of 7.36e12 without normalization); it exists so the
    failure can be reproduced next to the cure.
    """

    def __init__(self, in_frames: int = 4, feature_dim: int = FEATURE_DIM, norm: str = "layer"):
        super().__init__()
        if norm not in CNN_NORMS:
            raise ValueError(f"norm must be one of {CNN_NORMS}, got {norm!r}")
        self.norm = norm
        self.in_frames = in_frames
        self.feature_dim = feature_dim

        def norm_layer(shape: tuple[int, ...]) -> nn.Module:
            if norm == "none":
                return nn.Identity()
            return ConvLayerNorm(shape) if len(shape) == 3 else nn.LayerNorm(shape)

        # 84 -> 20 -> 9 -> 7 spatially.
        self.conv1 = nn.Conv2d(in_frames, 32, kernel_size=8, stride=4)
        self.norm1 = norm_layer((32, 20, 20))
        self.conv2 = nn.Conv2d(32, 64, kernel_size=4, stride=2)
        self.norm2 = norm_layer((64, 9, 9))
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3, stride=1)
        self.norm3 = norm_layer((64, 7, 7))
        self.fc = nn.Linear(64 * 7 * 7, feature_dim)  # 3136 -> 512
        self.fc_norm = norm_layer((feature_dim,))

        # Kaiming normal for the LeakyReLU that follows every layer, zero bias. The LayerNorms
        # keep PyTorch's gain 1 / bias 0.
        for layer in (self.conv1, self.conv2, self.conv3, self.fc):
            nn.init.kaiming_normal_(layer.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(layer.bias)
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def prepare(frames: torch.Tensor) -> torch.Tensor:
        """Pixels -> the normalized channels_last float input of conv1 (what forward does first).

        A learner that runs several CNNs on one batch prepares it once and passes
        `prepared=True`; the frames are still normalized exactly once."""
        # Reorder the (cheap, uint8) input to channels_last before it becomes float.
        return normalize_frames(frames.contiguous(memory_format=torch.channels_last))

    def forward(self, frames: torch.Tensor, prepared: bool = False) -> torch.Tensor:
        if frames.dim() != 4 or frames.shape[1:] != (self.in_frames, FRAME_SIZE, FRAME_SIZE):
            raise ValueError(
                f"frames must be (B, {self.in_frames}, {FRAME_SIZE}, {FRAME_SIZE}), got {tuple(frames.shape)}"
            )
        if prepared and frames.dtype != torch.float32:
            raise ValueError(f"prepared frames must be float32 from NatureCNN.prepare, got {frames.dtype}")
        x = frames if prepared else self.prepare(frames)
        x = F.leaky_relu(self.norm1(self.conv1(x)), LEAKY_SLOPE)
        x = F.leaky_relu(self.norm2(self.conv2(x)), LEAKY_SLOPE)
        # Back to NCHW before the activation: flatten then runs in (C, H, W) order, whatever the
        # layout, and the activation's backward sees one layout (mixed layouts are 3x slower).
        x = F.leaky_relu(self.norm3(self.conv3(x)).contiguous(), LEAKY_SLOPE)
        return F.leaky_relu(self.fc_norm(self.fc(x.flatten(1))), LEAKY_SLOPE)


def _policy_input(features: torch.Tensor, kinematics: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if features.shape[1] != FEATURE_DIM or kinematics.shape[1] != KINEMATICS_DIM:
        raise ValueError(
            f"actor/critic input must be {FEATURE_DIM} features + {KINEMATICS_DIM} kinematics = "
            f"{ACTOR_INPUT_DIM} wide, got {features.shape[1]} + {kinematics.shape[1]} = "
            f"{features.shape[1] + kinematics.shape[1]}"
        )
    return torch.cat([features, (kinematics / scale).to(features.dtype)], dim=1)


class Actor(nn.Module):
    """TD3 actor: 535 -> 256 -> 256 -> 2, ReLU, max_action * tanh.

    PyTorch's default init on every layer, as sfujim/TD3. The design rejected a
    uniform(-3e-3, 3e-3) output init; none is added here. `kinematics_scale` is a buffer, so the
    divisor travels in the weights (a payload states what its inputs were divided by).
    """

    def __init__(
        self,
        feature_dim: int = FEATURE_DIM,
        kinematics_dim: int = KINEMATICS_DIM,
        hidden: int = 256,
        action_dim: int = ACTION_DIM,
        max_action: float = 1.0,
        scale_kinematics: bool = False,
    ):
        super().__init__()
        if feature_dim + kinematics_dim != ACTOR_INPUT_DIM:
            raise ValueError(f"feature_dim + kinematics_dim must be {ACTOR_INPUT_DIM}")
        self.register_buffer("kinematics_scale", kinematics_scale(scale_kinematics))
        self.l1 = nn.Linear(feature_dim + kinematics_dim, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, action_dim)
        self.max_action = float(max_action)

    def forward(self, features: torch.Tensor, kinematics: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.l1(_policy_input(features, kinematics, self.kinematics_scale)))
        a = F.relu(self.l2(a))
        return self.max_action * torch.tanh(self.l3(a))


class TwinCritic(nn.Module):
    """TD3's clipped double-Q: two independent heads, (535 + 2) -> 256 -> 256 -> 1 each."""

    def __init__(
        self,
        feature_dim: int = FEATURE_DIM,
        kinematics_dim: int = KINEMATICS_DIM,
        hidden: int = 256,
        action_dim: int = ACTION_DIM,
        scale_kinematics: bool = False,
    ):
        super().__init__()
        if feature_dim + kinematics_dim != ACTOR_INPUT_DIM:
            raise ValueError(f"feature_dim + kinematics_dim must be {ACTOR_INPUT_DIM}")
        self.register_buffer("kinematics_scale", kinematics_scale(scale_kinematics))
        width = feature_dim + kinematics_dim + action_dim
        # Q1
        self.l1 = nn.Linear(width, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 1)
        # Q2
        self.l4 = nn.Linear(width, hidden)
        self.l5 = nn.Linear(hidden, hidden)
        self.l6 = nn.Linear(hidden, 1)

    def forward(
        self, features: torch.Tensor, kinematics: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([_policy_input(features, kinematics, self.kinematics_scale), action], dim=1)
        q1 = self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))
        q2 = self.l6(F.relu(self.l5(F.relu(self.l4(sa)))))
        return q1, q2

    def q1(self, features: torch.Tensor, kinematics: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Only the first head: the actor maximizes Q1, as in TD3."""
        sa = torch.cat([_policy_input(features, kinematics, self.kinematics_scale), action], dim=1)
        return self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))


class PolicyNetwork(nn.Module):
    """What a policy node runs: frames + kinematics -> actions.

    state_dict() keys are `encoder.*` and `actor.*`, equal to TD3Learner.actor_state_dict().
    """

    def __init__(self, norm: str = "layer", max_action: float = 1.0, in_frames: int = 4,
                 scale_kinematics: bool = False):
        super().__init__()
        self.encoder = NatureCNN(in_frames=in_frames, norm=norm)
        self.actor = Actor(max_action=max_action, scale_kinematics=scale_kinematics)

    def forward(self, frames: torch.Tensor, kinematics: torch.Tensor) -> torch.Tensor:
        return self.actor(self.encoder(frames), kinematics)
