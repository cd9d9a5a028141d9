"""PolicyRuntime: the actor a policy node runs, and its versioned, validated weights.

No rclpy here. Weights arrive as a `WeightsPayload` (a PolicyWeights message's payload and fields,
`conversions.policy_weights_payload`, or a safetensors file, `load_weights_file`) and `decode()`
turns them into a `DecodedWeights`:
- trust: with `trust="signed"` only a payload signed by one of `trusted_keys` passes
  (av_td3_ros.learning.signing), and the message's own fields (version, action_limit, updates,
  architecture) must equal the signed metadata, so a signed payload cannot be replayed under a
  new version number; `trust="any"` installs any well-formed payload (a node reports it as WARN);
- architecture: the network is built from the payload's own metadata (`cnn_norm`, `max_action`);
  tensors that do not fit it are refused with the reason. Only an unsigned payload that names no
  cnn_norm (a legacy file or message) is built with the runtime's `norm`; one without the actor's
  kinematics divisor (written before it existed) gets a divisor of ones: raw metres, as trained;
- then the codec's checks (size, sha256, no pickle, names/shapes/dtypes, finite values).
`prepare()` checks the version (equal or older than the running one is refused: replay), builds a
fresh PolicyNetwork, loads the state dict strictly and test-runs it once (outputs must be finite) —
all OFF the inference thread. `install()` then swaps one reference, so an inference uses either the
old or the new policy, never a mix, and is never blocked by a swap (no lock is held while a forward
pass runs).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from av_td3_ros.learning.weights import (  # WeightsRejected: re-exported
    WeightsPayload,
    WeightsRejected,
    architecture_fingerprint,
    count_non_finite,
    decode_policy_weights,
)
from av_td3_ros.model import ACTION_DIM, FRAME_SIZE, KINEMATICS_DIM, PolicyNetwork
from av_td3_ros.model.networks import CNN_NORMS, kinematics_scale

# The actor's kinematics divisor (a buffer since 2026-12-04). A payload without it is a network
# that took raw metres: it is decoded without the tensor and given a divisor of ones, so weights
# saved before keep driving as they did.
SCALE_TENSOR = "actor.kinematics_scale"

__all__ = [
    "WEIGHTS_TRUST",
    "resolve_weights_trust",
    "trust_problems",
    "LoadedPolicy",
    "PolicyRuntime",
    "WeightsPayload",
    "WeightsRejected",
    "load_weights_file",
    "safetensors_metadata",
]

WEIGHTS_TRUST = ("signed", "any")


def resolve_weights_trust(setting: str, mode: str) -> str:
    """The policy node's `weights_trust` parameter -> "signed" | "any": `auto` is signed in deploy
    mode (a car on a real network) and any in train mode (a simulator, whose transitions and
    resets are not authenticated either: docs/safety.md)."""
    if setting == "auto":
        return "signed" if mode == "deploy" else "any"
    if setting not in WEIGHTS_TRUST:
        raise ValueError(f"weights_trust must be auto or one of {WEIGHTS_TRUST}, got {setting!r}")
    return setting


def trust_problems(trust: str, trusted_keys: Mapping, key_error: str = "") -> list[str]:
    """What a node reports as WARN about its weights trust (empty = nothing to report)."""
    if trust == "any":
        return ["weights_trust any: weights from any publisher on the domain are installed unverified"]
    problems = [f"trusted_keys: {key_error}"] if key_error else []
    if not trusted_keys:
        problems.append("weights_trust signed but no usable trusted_keys: every weights update is refused")
    return problems


@dataclass(frozen=True)
class LoadedPolicy:
    """A ready-to-run policy: an eval-mode module and where it came from."""

    module: torch.nn.Module
    version: int
    action_limit: float
    sha256: str
    source: str
    updates: int = 0
    key_id: str = ""  # the trusted key that signed it; "" = not verified (trust "any")
    cnn_norm: str = "layer"


def _header_json(payload: bytes) -> dict:
    """The JSON header of a safetensors payload (no tensor is read); raises WeightsRejected."""
    if len(payload) < 8:
        raise WeightsRejected("payload shorter than a safetensors header")
    (header_len,) = struct.unpack("<Q", payload[:8])
    if header_len > len(payload) - 8 or header_len > 100_000_000:
        raise WeightsRejected(f"safetensors header length {header_len} exceeds the payload")
    try:
        header = json.loads(payload[8 : 8 + header_len])
    except ValueError as exc:
        raise WeightsRejected(f"safetensors header is not JSON: {exc}") from None
    return header if isinstance(header, dict) else {}


def _metadata_of(header: dict) -> dict[str, str]:
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors payload (header only; no tensor is read)."""
    return _metadata_of(_header_json(payload))


class PolicyRuntime:
    """Holds the current policy; runs it; validates and swaps new weights."""

    def __init__(self, norm: str = "layer", torch_threads: int = 1, max_weights_bytes: int = 64 << 20,
                 trust: str = "any", trusted_keys: Mapping | None = None):
        """`norm`: the CNN normalization assumed for an unsigned payload that names none (legacy).
        `trust`: "signed" (only payloads signed by a key in `trusted_keys`, key id -> ed25519
        public key, see signing.load_trusted_keys) or "any"."""
        if trust not in WEIGHTS_TRUST:
            raise ValueError(f"trust must be one of {WEIGHTS_TRUST}, got {trust!r}")
        torch.set_num_threads(int(torch_threads))
        self.norm = norm
        self.trust = trust
        self.trusted_keys = dict(trusted_keys or {})
        self.max_weights_bytes = int(max_weights_bytes)
        reference = PolicyNetwork(norm=norm)
        # Names, shapes and dtypes every accepted state dict must match (for `norm`; the other norms'
        # references are built on the meta device: shapes and dtypes only, no memory).
        self.reference_state_dict = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        self._references = {norm: self.reference_state_dict}
        self._policy: LoadedPolicy | None = None
        self._install_lock = threading.Lock()  # serializes installs; inference never takes it
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights-sha256")
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
    def reference_for(self, norm: str, legacy: bool = False) -> dict[str, torch.Tensor]:
        """The state-dict layout (names, dtypes, shapes) of a PolicyNetwork with CNN norm `norm`;
        `legacy`: without the kinematics divisor (weights saved before it)."""
        reference = self._references.get(norm)
        if reference is None:
            with torch.device("meta"):
                reference = PolicyNetwork(norm=norm).state_dict()
            self._references[norm] = reference
        return {k: v for k, v in reference.items() if k != SCALE_TENSOR} if legacy else reference

    def decode(self, weights: WeightsPayload, pause=lambda: None):
        """WeightsPayload -> DecodedWeights, or WeightsRejected with the reason (see the module
        docstring for the order of the checks). `pause` runs between the expensive steps."""
        from av_td3_ros.learning import signing
        from av_td3_ros.ros.conversions import DecodedWeights

        if weights.size > self.max_weights_bytes:  # before any parsing or hashing
            raise WeightsRejected(
                f"payload of {weights.size} bytes exceeds the limit of {self.max_weights_bytes} bytes"
            )
        # The hashing starts in a gap between camera frames: it releases the GIL, but its threads
        # would take the cores a frame needs (measured in bench/policy_latency.py: starting it at
        # once, mid-frame, put 6 of 43 frames during swaps > 1 ms over the quiet p99).
        pause()
        # One copy, first (0.2 ms): the bytes whose signature is verified are the bytes decoded;
        # a view of the message's buffer could change in between.
        payload = weights.payload if isinstance(weights.payload, bytes) else bytes(weights.payload)
        key_id, payload_sha256 = "", None
        if self.trust == "signed":
            # Two hashes of the whole payload, the message's sha256 and the signature's digest: run
            # side by side (hashlib releases the GIL, so on two cores they take the time of one
            # and fit in the gap after a frame).
            sha_thread = self._hasher.submit(lambda: hashlib.sha256(payload).hexdigest())
            try:
                key_id = signing.verify_payload(payload, self.trusted_keys)
            except signing.SignatureRejected as exc:
                raise WeightsRejected(f"{exc} (weights_trust is signed)") from None
            finally:
                payload_sha256 = sha_thread.result()
            header = signing.read_header(payload)
            meta, names = header.metadata, set(header.tensors)
            values = _signed_values(meta, weights)
        else:
            meta, names = _peek_header(payload)
            values = _claimed_values(meta, weights)
        cnn_norm = meta.get("cnn_norm")
        named = cnn_norm is not None
        if not named:
            cnn_norm = self.norm
        elif cnn_norm not in CNN_NORMS:
            raise WeightsRejected(f"metadata cnn_norm {cnn_norm!r} is not one of {list(CNN_NORMS)}")
        legacy = SCALE_TENSOR not in names
        reference = self.reference_for(cnn_norm, legacy)
        fingerprint = weights.architecture
        if fingerprint is None:  # a file: the architecture is what its tensors must fit
            fingerprint = architecture_fingerprint(reference)
        try:
            state_dict = decode_policy_weights(
                payload, weights.sha256, fingerprint, reference, self.max_weights_bytes, pause,
                payload_sha256=payload_sha256,
            )
        except WeightsRejected as exc:
            if named and str(exc).startswith("wrong architecture"):
                raise WeightsRejected(
                    f"the tensors do not fit the metadata's cnn_norm {cnn_norm!r}: {exc}"
                ) from None
            raise
        if legacy:
            state_dict[SCALE_TENSOR] = kinematics_scale(scaled=False)
        version, action_limit, updates, max_action = values
        return DecodedWeights(
            state_dict, version, updates, meta.get("architecture", fingerprint), weights.sha256, action_limit,
            weights.size, cnn_norm=cnn_norm, key_id=key_id, max_action=max_action,
        )

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
        # One pause for the rest (~4 ms here, most of it building the module in Python, which
        # holds the GIL): each pause can wait for a whole frame period, so they are few.
        pause()
        # Built on the meta device and given the decoded tensors (no random init, no copy: ~3 ms
        # instead of ~13 ms of CPU taken from the inference thread's core).
        cnn_norm = getattr(weights, "cnn_norm", None) or self.norm
        max_action = float(getattr(weights, "max_action", 1.0))
        with torch.device("meta"):
            module = PolicyNetwork(norm=cnn_norm, max_action=max_action)
        try:
            module.load_state_dict(weights.state_dict, strict=True, assign=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise WeightsRejected(f"state dict does not fit the actor: {exc}") from None
        module.to(memory_format=torch.channels_last)  # the conv weights' layout NatureCNN uses
        module.eval()
        module.requires_grad_(False)
        # A trial run: weights that produce NaN/inf actions from a plain input are refused here,
        # not discovered while driving.
        probe = _forward(
            module, np.full((4, FRAME_SIZE, FRAME_SIZE), 128, np.uint8), np.zeros(KINEMATICS_DIM, np.float32)
        )
        if not np.isfinite(probe).all():
            raise WeightsRejected("the actor outputs non-finite actions")
        return LoadedPolicy(module, int(weights.version), limit, weights.sha256, source, int(weights.updates),
                            getattr(weights, "key_id", ""), cnn_norm)

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

    Validated like a message, under the runtime's trust (a signed file's signature is checked);
    its own sha256 is the checksum. Version, action_limit, updates and the architecture come from
    the metadata (an unsigned legacy file: `version` defaults to 1, so a later topic version 2+
    replaces it; `action_limit` to 0 = none)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsRejected(f"cannot read weights file {path}: {exc.strerror}") from None
    if size > runtime.max_weights_bytes:
        raise WeightsRejected(f"weights file {path} is {size} bytes, more than {runtime.max_weights_bytes}")
    payload = path.read_bytes()
    return runtime.decode(WeightsPayload(payload, hashlib.sha256(payload).hexdigest()))


def _peek_header(payload) -> tuple[dict[str, str], set[str]]:
    """The metadata and tensor names of what looks like a safetensors payload, else ({}, set())
    (the codec then says why). Only the header is copied, never the tensors."""
    view = memoryview(payload).cast("B")
    if len(view) < 8:
        return {}, set()
    (header_len,) = struct.unpack("<Q", view[:8])
    if header_len > len(view) - 8:
        return {}, set()
    try:
        header = _header_json(bytes(view[: 8 + header_len]))
    except WeightsRejected:
        return {}, set()
    return _metadata_of(header), {str(k) for k in header if k != "__metadata__"}


def _parse(meta: Mapping[str, str], name: str, kind, default):
    if name not in meta:
        return default
    try:
        value = kind(meta[name])
    except ValueError:
        raise WeightsRejected(f"bad metadata: {name} {meta[name]!r} is not a {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise WeightsRejected(f"bad metadata: {name} {meta[name]!r} is not finite")
    return value


def _max_action(meta: Mapping[str, str]) -> float:
    value = _parse(meta, "max_action", float, 1.0)
    if not value > 0.0:
        raise WeightsRejected(f"bad metadata: max_action {value!r} must be > 0")
    return value


def _claimed_values(meta: Mapping[str, str], weights: WeightsPayload) -> tuple[int, float, int, float]:
    """(version, action_limit, updates, max_action) of an unverified payload: the carrier's claims
    (a message's fields) first, the metadata for a file."""
    def claimed(value, name: str, kind, default):
        return value if value is not None else _parse(meta, name, kind, default)

    version = claimed(weights.version, "version", int, 1)
    limit = claimed(weights.action_limit, "action_limit", float, 0.0)
    updates = claimed(weights.updates, "updates", int, 0)
    return int(version), float(limit), int(updates), _max_action(meta)


def _signed_values(meta: Mapping[str, str], weights: WeightsPayload) -> tuple[int, float, int, float]:
    """(version, action_limit, updates, max_action) from the signed metadata, which must state the
    version and the cnn_norm, and must agree with every field the message states beside it."""
    for name in ("version", "cnn_norm"):
        if name not in meta:
            raise WeightsRejected(f"the signed metadata does not state its {name}")
    version = _parse(meta, "version", int, 0)
    limit = _parse(meta, "action_limit", float, 0.0)
    updates = _parse(meta, "updates", int, 0)
    # The message's action_limit is a float32: compare at that precision.
    claims = [
        ("version", weights.version, version, weights.version is None or int(weights.version) == version),
        ("action_limit", weights.action_limit, limit,
         weights.action_limit is None or np.float32(weights.action_limit) == np.float32(limit)),
        ("updates", weights.updates, updates, weights.updates is None or int(weights.updates) == updates),
        ("architecture", weights.architecture, meta.get("architecture"),
         weights.architecture is None or weights.architecture == meta.get("architecture")),
    ]
    for name, claimed, signed, agrees in claims:
        if not agrees:
            raise WeightsRejected(
                f"the message's {name} {claimed!r} differs from the signed {name} {signed!r}"
                " (a signed payload cannot be relabelled)"
            )
    return version, limit, updates, _max_action(meta)


def _forward(module: torch.nn.Module, frames: np.ndarray, kinematics: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        f = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8)).unsqueeze(0)
        k = torch.from_numpy(np.ascontiguousarray(kinematics, dtype=np.float32)).unsqueeze(0)
        out = module(f, k)
    return out.reshape(ACTION_DIM).numpy().astype(np.float32, copy=True)

