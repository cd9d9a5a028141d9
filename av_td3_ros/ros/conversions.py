"""Message <-> numpy conversions. Every function either returns clean, finite values or raises
`ConversionError` with a message that says what was wrong (never garbage, never a crash deeper
in the pipeline).

Speed rules (FACTS.md): read message buffers with np.frombuffer / cv_bridge (a zero-copy view),
and fill uint8[] fields with `bytes` (`arr.tobytes()`, ~2.6 ms for 1.9 MB) — never assign a numpy
array to `msg.data` (~242 ms).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from av_td3_ros.driving.command import ControlCommand, clamp_control
from av_td3_ros.driving.state import VehicleState

__all__ = [
    "ConversionError",
    "DecodedWeights",
    "SUPPORTED_ENCODINGS",
    "array_to_image",
    "control_to_message",
    "image_to_array",
    "image_to_gray",
    "odometry_to_state",
    "path_to_route",
    "policy_weights_from_message",
    "policy_weights_payload",
    "policy_weights_to_message",
    "stamp_to_ns",
    "transition_from_message",
    "transition_to_message",
]


class ConversionError(ValueError):
    """A message that cannot be turned into valid values; the text says why."""


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

# encoding -> (channels, cv2 colour conversion to gray or None for mono8)
_ENCODINGS: dict[str, int] = {"bgra8": 4, "bgr8": 3, "rgb8": 3, "rgba8": 4, "mono8": 1}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
_BRIDGE = None


def _bridge():
    global _BRIDGE
    if _BRIDGE is None:
        from cv_bridge import CvBridge

        _BRIDGE = CvBridge()
    return _BRIDGE


def image_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image -> uint8 array (H, W) for mono8 or (H, W, C) in the message's channel
    order, a read-only-safe VIEW of the message buffer (no copy for unpadded rows).

    Rejects: other encodings, zero size, a step shorter than a row, and data whose length is
    not exactly step * height (truncated or padded data is an error, not garbage)."""
    encoding = msg.encoding
    if encoding not in _ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image {width}x{height}")
    row = width * channels
    if step < row:
        raise ConversionError(
            f"image step {step} is shorter than a {encoding} row of {width} px ({row} bytes)"
        )
    size = len(msg.data)
    if size != step * height:
        raise ConversionError(
            f"image data is {size} bytes, expected step*height = {step}*{height} = {step * height}"
            + (" (truncated)" if size < step * height else "")
        )
    if step == row and not msg.is_bigendian:
        # The common case: cv_bridge's zero-copy view.
        return _bridge().imgmsg_to_cv2(msg, desired_encoding="passthrough")
    # Padded rows (or a big-endian flag, meaningless for 8-bit data and which the PyPI
    # cv_bridge mishandles under numpy 2): a strided view.
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    rows = flat.reshape(height, step)[:, :row]
    return rows.reshape(height, width) if channels == 1 else rows.reshape(height, width, channels)


_TO_GRAY = None


def image_to_gray(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) uint8 grayscale at full resolution."""
    import cv2

    global _TO_GRAY
    if _TO_GRAY is None:
        _TO_GRAY = {
            "bgra8": cv2.COLOR_BGRA2GRAY,
            "bgr8": cv2.COLOR_BGR2GRAY,
            "rgb8": cv2.COLOR_RGB2GRAY,
            "rgba8": cv2.COLOR_RGBA2GRAY,
        }
    image = image_to_array(msg)
    if msg.encoding == "mono8":
        return image
    return cv2.cvtColor(image, _TO_GRAY[msg.encoding])


def array_to_image(array: np.ndarray, encoding: str, stamp=None, frame_id: str = ""):
    """uint8 array (H, W) or (H, W, C) -> sensor_msgs/Image (data filled via tobytes())."""
    from sensor_msgs.msg import Image

    if encoding not in _ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    channels = _ENCODINGS[encoding]
    if array.ndim not in (2, 3) or (array.shape[2] if array.ndim == 3 else 1) != channels:
        raise ConversionError(f"array of shape {array.shape} does not fit encoding {encoding}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = array.tobytes()
    return msg


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (for comparing frame stamps exactly)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ----------------------------------------------------------------------------------------------
# Odometry and route
# ----------------------------------------------------------------------------------------------


def odometry_to_state(msg) -> VehicleState:
    p = msg.pose.pose.position
    q = msg.pose.pose.orientation
    v = msg.twist.twist.linear
    values = (p.x, p.y, p.z, q.x, q.y, q.z, q.w, v.x, v.y, v.z)
    if not all(math.isfinite(value) for value in values):
        raise ConversionError(
            f"non-finite odometry: position {p.x, p.y, p.z}, orientation "
            f"{q.x, q.y, q.z, q.w}, linear velocity {v.x, v.y, v.z}"
        )
    # hypot, not sqrt of a sum of squares: components above ~1e154 overflowed the squares to inf,
    # which gave a wrong yaw (0) and an infinite speed for finite input (found by fuzzing,
    # test_hardening.py::test_odometry_yaw_and_speed_never_overflow_for_any_quaternion_scale).
    norm = math.hypot(q.x, q.y, q.z, q.w)
    if norm < 1e-6:
        raise ConversionError("odometry orientation is a zero quaternion")
    qx, qy, qz, qw = q.x / norm, q.y / norm, q.z / norm, q.w / norm
    yaw = math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
    speed = math.hypot(v.x, v.y, v.z)
    return VehicleState(float(p.x), float(p.y), yaw, speed, float(v.x), msg.header.frame_id)


def path_to_route(msg, min_points: int = 2) -> np.ndarray:
    """nav_msgs/Path -> (N, 2) float64 route points (x, y) in the path's frame.

    Rejects fewer than `min_points` poses and any non-finite coordinate."""
    n = len(msg.poses)
    if n < min_points:
        raise ConversionError(f"route has {n} poses, need at least {min_points}")
    route = np.empty((n, 2), dtype=np.float64)
    for i, pose in enumerate(msg.poses):
        position = pose.pose.position
        route[i, 0] = position.x
        route[i, 1] = position.y
    if not np.isfinite(route).all():
        bad = int(np.flatnonzero(~np.isfinite(route).all(axis=1))[0])
        raise ConversionError(f"route pose {bad} of {n} is not finite: {route[bad].tolist()}")
    return route


# ----------------------------------------------------------------------------------------------
# Control
# ----------------------------------------------------------------------------------------------


def control_to_message(command: ControlCommand, stamp=None, frame_id: str = ""):
    """ControlCommand -> carla_msgs/CarlaEgoVehicleControl (re-clamped: the bridge clamps nothing)."""
    from carla_msgs.msg import CarlaEgoVehicleControl

    safe = clamp_control(command.steer, command.throttle, command.brake)
    msg = CarlaEgoVehicleControl()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.steer = safe.steer
    msg.throttle = safe.throttle
    msg.brake = safe.brake
    msg.hand_brake = False
    msg.reverse = False
    msg.gear = 0
    msg.manual_gear_shift = False
    return msg


# ----------------------------------------------------------------------------------------------
# Policy weights
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedWeights:
    """A validated PolicyWeights: the state dict (torch tensors) plus its metadata.

    `cnn_norm`/`max_action`: what the network is built with (None: the runtime's legacy norm);
    `key_id`: the trusted key that signed it ("" = not verified)."""

    state_dict: dict[str, Any]
    version: int
    updates: int
    architecture: str
    sha256: str
    action_limit: float
    payload_bytes: int
    cnn_norm: str | None = None
    key_id: str = ""
    max_action: float = 1.0


def policy_weights_to_message(
    state_dict: Mapping[str, Any], version: int, *, action_limit: float = 0.0, updates: int = 0, stamp=None,
    cnn_norm: str | None = None, max_action: float | None = None, signing_key=None,
):
    """A state dict (`encoder.*`, `actor.*` tensors) -> av_td3_msgs/PolicyWeights: safetensors
    payload from the core's codec, its sha256, the architecture fingerprint and the limit.

    `cnn_norm`/`max_action` go into the payload's metadata (the policy node builds its network from
    them; None = not stated, a legacy payload); with a `signing_key`
    (av_td3_ros.learning.signing.SigningKey) the payload is signed, metadata and tensors."""
    from av_td3_msgs.msg import PolicyWeights

    from av_td3_ros.learning.weights import architecture_fingerprint, encode_policy_weights, policy_metadata

    if not (math.isfinite(action_limit) and 0.0 <= action_limit <= 1.0):
        raise ConversionError(f"action_limit must be in [0, 1], got {action_limit!r}")
    payload = encode_policy_weights(
        dict(state_dict),
        metadata=policy_metadata(version, action_limit, updates, cnn_norm=cnn_norm, max_action=max_action),
    )
    if signing_key is not None:
        from av_td3_ros.learning.signing import sign_payload

        payload = sign_payload(payload, signing_key)
    msg = PolicyWeights()
    if stamp is not None:
        msg.stamp = stamp
    msg.version = int(version)
    msg.updates = int(updates)
    msg.architecture = architecture_fingerprint(dict(state_dict))
    msg.format = "safetensors"
    msg.payload = payload
    msg.sha256 = hashlib.sha256(payload).hexdigest()
    msg.action_limit = float(action_limit)
    return msg


def policy_weights_payload(msg):
    """av_td3_msgs/PolicyWeights -> WeightsPayload (the payload and the message's claims about it)
    for PolicyRuntime.decode, which checks trust, architecture and content. Raises WeightsRejected
    for what the message alone shows to be wrong (format, action_limit range)."""
    from av_td3_ros.learning.weights import WeightsPayload, WeightsRejected

    if msg.format != "safetensors":
        raise WeightsRejected(f"format {msg.format!r} is not 'safetensors'")
    limit = float(msg.action_limit)
    if not (math.isfinite(limit) and 0.0 <= limit <= 1.0):
        raise WeightsRejected(f"action_limit {limit!r} is not in [0, 1]")
    # A view, not a copy: the size is checked before anything is copied.
    payload = memoryview(msg.payload) if not isinstance(msg.payload, bytes) else msg.payload
    return WeightsPayload(payload, msg.sha256, int(msg.version), limit, int(msg.updates), msg.architecture)


def policy_weights_from_message(
    msg, reference_state_dict: Mapping[str, Any], max_bytes: int, pause=lambda: None
) -> DecodedWeights:
    """av_td3_msgs/PolicyWeights -> DecodedWeights, validated by the core's codec against the
    reference state dict (sha256, fingerprint, names/shapes/dtypes, finite, size); no signature or
    architecture metadata is checked (a policy node uses policy_weights_payload + PolicyRuntime.decode,
    which do). Raises
    av_td3_ros.learning.weights.WeightsRejected (with the reason) for anything invalid.
    `pause` runs between the expensive steps (see decode_policy_weights)."""
    from av_td3_ros.learning.weights import WeightsRejected, decode_policy_weights

    if msg.format != "safetensors":
        raise WeightsRejected(f"format {msg.format!r} is not 'safetensors'")
    limit = float(msg.action_limit)
    if not (math.isfinite(limit) and 0.0 <= limit <= 1.0):
        raise WeightsRejected(f"action_limit {limit!r} is not in [0, 1]")
    # A view, not a copy: the codec checks the size before it copies anything.
    payload = memoryview(msg.payload) if not isinstance(msg.payload, bytes) else msg.payload
    state_dict = decode_policy_weights(
        payload, msg.sha256, msg.architecture, dict(reference_state_dict), max_bytes, pause
    )
    return DecodedWeights(
        state_dict=state_dict,
        version=int(msg.version),
        updates=int(msg.updates),
        architecture=msg.architecture,
        sha256=msg.sha256,
        action_limit=limit,
        payload_bytes=payload.nbytes if isinstance(payload, memoryview) else len(payload),
    )


# ----------------------------------------------------------------------------------------------
# Transitions
# ----------------------------------------------------------------------------------------------


def transition_to_message(record, stamp=None):
    """av_td3_ros.learning.ingest.TransitionRecord -> av_td3_msgs/Transition (frame via tobytes)."""
    from av_td3_msgs.msg import Transition

    msg = Transition()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.actor_id = record.actor_id
    msg.seq = int(record.seq)
    msg.episode = int(record.episode)
    msg.step = int(record.step)
    msg.policy_version = int(record.policy_version)
    msg.kind = int(record.kind)
    msg.frame_height = int(record.frame_height)
    msg.frame_width = int(record.frame_width)
    msg.frame = np.ascontiguousarray(record.frame, dtype=np.uint8).tobytes()
    msg.kinematics = np.asarray(record.kinematics, dtype=np.float32).reshape(-1).tolist()
    msg.action = np.asarray(record.action, dtype=np.float32).reshape(-1).tolist()
    msg.reward = float(record.reward)
    msg.terminated = bool(record.terminated)
    msg.truncated = bool(record.truncated)
    return msg


def transition_from_message(msg):
    """av_td3_msgs/Transition -> TransitionRecord, unvalidated (TransitionIngest validates):
    `frame` is the raw 1-D uint8 buffer, kinematics/action 1-D float32 of whatever length came."""
    from av_td3_ros.learning.ingest import TransitionRecord

    return TransitionRecord(
        actor_id=msg.actor_id,
        seq=int(msg.seq),
        episode=int(msg.episode),
        step=int(msg.step),
        policy_version=int(msg.policy_version),
        kind=int(msg.kind),
        frame_height=int(msg.frame_height),
        frame_width=int(msg.frame_width),
        frame=np.frombuffer(msg.frame, dtype=np.uint8),
        kinematics=np.frombuffer(msg.kinematics, dtype=np.float32).copy()
        if hasattr(msg.kinematics, "typecode")
        else np.asarray(msg.kinematics, dtype=np.float32),
        action=np.frombuffer(msg.action, dtype=np.float32).copy()
        if hasattr(msg.action, "typecode")
        else np.asarray(msg.action, dtype=np.float32),
        reward=float(msg.reward),
        terminated=bool(msg.terminated),
        truncated=bool(msg.truncated),
    )
