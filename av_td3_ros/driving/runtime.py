"""PolicyRuntime: the actor a policy node runs, and its versioned, validated weights.

No rclpy here. Weights arrive as a `DecodedWeights` (from a PolicyWeights message via
`conversions.policy_weights_from_message`) or from a safetensors file (`load_weights_file`).
`prepare()` checks the version, builds a fresh PolicyNetwork, loads the state dict strictly and
test-runs it once (outputs must be finite) — all OFF the inference thread. `install()` then swaps
one reference, so an inference uses either the old or the new policy, never a mix, and is never
blocked by a swap (no lock is held while a forward pass runs).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from av_td3_ros.learning.weights import WeightsRejected, count_non_finite  # WeightsRejected: re-exported
from av_td3_ros.model import ACTION_DIM, FRAME_SIZE, KINEMATICS_DIM, PolicyNetwork

__all__ = ["LoadedPolicy", "PolicyRuntime", "WeightsRejected", "load_weights_file", "safetensors_metadata"]


@dataclass(frozen=True)
class LoadedPolicy:
    """A ready-to-run policy: an eval-mode module and where it came from."""

    module: torch.nn.Module
    version: int
    action_limit: float
    sha256: str
    source: str
    updates: int = 0


def safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors payload (header only; no tensor is read)."""
    if len(payload) < 8:
        raise WeightsRejected("payload shorter than a safetensors header")
    (header_len,) = struct.unpack("<Q", payload[:8])
    if header_len > len(payload) - 8 or header_len > 100_000_000:
        raise WeightsRejected(f"safetensors header length {header_len} exceeds the payload")
    try:
        header = json.loads(payload[8 : 8 + header_len])
    except ValueError as exc:
        raise WeightsRejected(f"safetensors header is not JSON: {exc}") from None
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


class PolicyRuntime:
    """Holds the current policy; runs it; validates and swaps new weights."""

    def __init__(self, norm: str = "layer", torch_threads: int = 1, max_weights_bytes: int = 64 << 20):
        torch.set_num_threads(int(torch_threads))
        self.norm = norm
        self.max_weights_bytes = int(max_weights_bytes)
        reference = PolicyNetwork(norm=norm)
        # Names, shapes and dtypes every accepted state dict must match.
        self.reference_state_dict = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        self._policy: LoadedPolicy | None = None
        self._install_lock = threading.Lock()  # serializes installs; inference never takes it
        # torch loads its meta-device machinery on first use: 1.5 s measured here, which the first
        # weights update would otherwise pay in the weights thread, holding the GIL against
        # inference (seen in the demo as a ~7 s delay before version 1 drove). Pay it at configure.
        with torch.device("meta"):
            PolicyNetwork(norm=norm)

    # --- what inference uses --------------------------------------------------------------------
    @property
    def policy(self) -> LoadedPolicy | None:
        return self._policy

    @property
    def version(self) -> int:
        policy = self._policy
        return policy.version if policy is not None else 0

    def act(
        self, frames: np.ndarray, kinematics: np.ndarray, policy: LoadedPolicy | None = None
    ) -> tuple[np.ndarray, int]:
        """Deterministic actor output for one observation: ((2,) float32 in [-1, 1], version).

        frames: (4, 84, 84) uint8 pixels; kinematics: (23,) float32. `policy` defaults to the
        current one (read once: the whole forward pass uses that policy). Raises RuntimeError
        without weights (the caller decides: random actions in train, brake in deploy)."""
        policy = self._policy if policy is None else policy
        if policy is None:
            raise RuntimeError("no policy weights loaded")
        return _forward(policy.module, frames, kinematics), policy.version

    # --- weights ------------------------------------------------------------------------------
    def prepare(self, weights, source: str, pause=lambda: None) -> LoadedPolicy:
        """DecodedWeights -> LoadedPolicy (not yet installed). Raises WeightsRejected.
        `pause` runs between the steps (a policy node passes FrameWindows.pause)."""
        if weights.version <= self.version:
            raise WeightsRejected(
                f"version {weights.version} is not newer than the running version {self.version}"
            )
        limit = float(weights.action_limit)
        if not (math.isfinite(limit) and 0.0 <= limit <= 1.0):
            raise WeightsRejected(f"action_limit {limit!r} is not in [0, 1]")
        for name, tensor in weights.state_dict.items():
            if count_non_finite(tensor):
                raise WeightsRejected(f"tensor {name} has non-finite values")
        pause()
        # Built on the meta device and given the decoded tensors (no random init, no copy: ~3 ms
        # instead of ~13 ms of CPU taken from the inference thread's core).
        with torch.device("meta"):
            module = PolicyNetwork(norm=self.norm)
        pause()
        try:
            module.load_state_dict(weights.state_dict, strict=True, assign=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise WeightsRejected(f"state dict does not fit the actor: {exc}") from None
        pause()
        module.to(memory_format=torch.channels_last)  # the conv weights' layout NatureCNN uses
        module.eval()
        module.requires_grad_(False)
        pause()
        # A trial run: weights that produce NaN/inf actions from a plain input are refused here,
        # not discovered while driving.
        probe = _forward(
            module, np.full((4, FRAME_SIZE, FRAME_SIZE), 128, np.uint8), np.zeros(KINEMATICS_DIM, np.float32)
        )
        if not np.isfinite(probe).all():
            raise WeightsRejected("the actor outputs non-finite actions")
        return LoadedPolicy(module, int(weights.version), limit, weights.sha256, source, int(weights.updates))

    def install(self, policy: LoadedPolicy) -> None:
        """Atomically make `policy` current (re-checks the version under the install lock)."""
        with self._install_lock:
            if policy.version <= self.version:
                raise WeightsRejected(
                    f"version {policy.version} is not newer than the running version {self.version}"
                )
            self._policy = policy

    def clear(self) -> None:
        with self._install_lock:
            self._policy = None


def load_weights_file(path: str | Path, runtime: PolicyRuntime):
    """A safetensors file (the codec's payload, as the trainer/demo write it) -> DecodedWeights.

    The file is validated like a message (names, shapes, dtypes, finite, size); its own sha256
    is the checksum. Version, action_limit and updates come from the safetensors metadata when
    present (`version` defaults to 1, so a later topic version 2+ replaces it; `action_limit`
    to 0 = none)."""
    from av_td3_ros.learning.weights import architecture_fingerprint, decode_policy_weights
    from av_td3_ros.ros.conversions import DecodedWeights

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsRejected(f"cannot read weights file {path}: {exc.strerror}") from None
    if size > runtime.max_weights_bytes:
        raise WeightsRejected(f"weights file {path} is {size} bytes, more than {runtime.max_weights_bytes}")
    payload = path.read_bytes()
    sha256 = hashlib.sha256(payload).hexdigest()
    state_dict = decode_policy_weights(  # first: refuses a pickle unread, checks everything
        payload,
        sha256,
        architecture_fingerprint(runtime.reference_state_dict),
        runtime.reference_state_dict,
        runtime.max_weights_bytes,
    )
    meta = safetensors_metadata(payload)
    try:
        version = int(meta.get("version", 1))
        action_limit = float(meta.get("action_limit", 0.0))
        updates = int(meta.get("updates", 0))
    except ValueError as exc:
        raise WeightsRejected(f"bad metadata in {path}: {exc}") from None
    return DecodedWeights(
        state_dict, version, updates, meta.get("architecture", ""), sha256, action_limit, len(payload)
    )


def _forward(module: torch.nn.Module, frames: np.ndarray, kinematics: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        f = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8)).unsqueeze(0)
        k = torch.from_numpy(np.ascontiguousarray(kinematics, dtype=np.float32)).unsqueeze(0)
        out = module(f, k)
    return out.reshape(ACTION_DIM).numpy().astype(np.float32, copy=True)

