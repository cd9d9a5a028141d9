"""The policy as an ONNX file for vehicle computers: export from safetensors weights, run with onnxruntime.

The graph is PolicyNetwork (NatureCNN encoder + TD3 actor) with the frame normalization inside:

    input  "frames"      uint8   [batch, 4, 84, 84]  raw gray pixels 0..255, oldest frame first
                                                    (the policy node's 4-stack of 84x84 frames)
    input  "kinematics"  float32 [batch, 23]         speed, distance and angle to the next
                                                    waypoint, 10 waypoints (x, y) in the vehicle frame
    output "action"      float32 [batch, 2]          (steer, throttle_brake), each in [-1, 1]

Inside the graph the frames become float32 (x / 127.5) - 1.0, in [-1, 1]
(`model.networks.normalize_frames`): the caller hands in raw pixels, never normalized ones.
The action turns into CARLA pedals as steer = a[0], throttle = max(a[1], 0), brake = max(-a[1], 0).

The file carries metadata (`metadata_props`): format, the weights' version, sha256 and
architecture fingerprint, their action_limit and update count, the torch version, and the
input/normalization contract above. Loading checks the format, the names, types and shapes of
the inputs and the output, refuses external data (every weight is inside the one file) and
test-runs the graph once (finite outputs), as PolicyRuntime.prepare does for torch weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from av_td3_ros.atomic_file import write_atomic
from av_td3_ros.learning.weights import WeightsRejected, architecture_fingerprint
from av_td3_ros.model import ACTION_DIM, FRAME_SIZE, KINEMATICS_DIM

__all__ = [
    "FORMAT",
    "INPUT_FRAMES",
    "INPUT_KINEMATICS",
    "OUTPUT_ACTION",
    "ExportReport",
    "OnnxPolicy",
    "OnnxPolicyRuntime",
    "export_onnx",
]

FORMAT = "av_td3_policy_onnx/1"
INPUT_FRAMES, INPUT_KINEMATICS, OUTPUT_ACTION = "frames", "kinematics", "action"
IN_FRAMES = 4
NORMALIZATION = "frames: float32(x) / 127.5 - 1.0 inside the graph (uint8 0..255 in); kinematics: as given"
OPSET = 18  # what torch 2.13's exporter writes; onnxruntime 1.23 (the Humble image) reads up to 23
AGREEMENT_ATOL = 1e-4  # torch vs onnxruntime, checked before the file is written
DEFAULT_MAX_MODEL_BYTES = 64 << 20  # the policy is ~7.7 MB of float32


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int
    version: int
    weights_sha256: str
    opset: int
    max_abs_difference: float  # torch vs onnxruntime on the check inputs


def _probe_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed check inputs: uniform gray (what PolicyRuntime's trial run uses) and seeded noise."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (batch, IN_FRAMES, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
    frames[0] = 128
    kinematics = rng.normal(0.0, 1.0, (batch, KINEMATICS_DIM)).astype(np.float32)
    kinematics[0] = 0.0
    return frames, kinematics


def export_onnx(weights_path: str | Path, onnx_path: str | Path, norm: str = "layer") -> ExportReport:
    """A safetensors weights file (validated as `load_weights_file` does) -> an ONNX file, written
    atomically (temporary file + rename) and only after onnxruntime's actions on check inputs
    agree with torch's within AGREEMENT_ATOL. Raises WeightsRejected for unusable weights and
    RuntimeError when the export itself fails or disagrees."""
    import onnx
    import torch

    from av_td3_ros.driving.runtime import PolicyRuntime, load_weights_file

    weights_path, onnx_path = Path(weights_path), Path(onnx_path)
    runtime = PolicyRuntime(norm=norm)
    loaded = runtime.prepare(load_weights_file(weights_path, runtime), str(weights_path))
    module = loaded.module
    # Traced at batch 2: torch.export specializes a dimension of size 1 to a constant.
    frames, kinematics = _probe_inputs(2)
    example = (torch.from_numpy(frames), torch.from_numpy(kinematics))
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=[INPUT_FRAMES, INPUT_KINEMATICS],
                output_names=[OUTPUT_ACTION],
                dynamic_shapes=({0: batch}, {0: batch}),
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises its own error types; say which step failed
        raise RuntimeError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    model = program.model_proto
    onnx.helper.set_model_props(model, {
        "format": FORMAT,
        "version": str(loaded.version),
        "weights_sha256": loaded.sha256,
        "architecture": architecture_fingerprint(runtime.reference_state_dict),
        "action_limit": repr(loaded.action_limit),
        "updates": str(loaded.updates),
        "norm": norm,
        "inputs": f"{INPUT_FRAMES}: uint8 [batch, {IN_FRAMES}, {FRAME_SIZE}, {FRAME_SIZE}]; "
                  f"{INPUT_KINEMATICS}: float32 [batch, {KINEMATICS_DIM}]",
        "output": f"{OUTPUT_ACTION}: float32 [batch, {ACTION_DIM}] (steer, throttle_brake) in [-1, 1]",
        "normalization": NORMALIZATION,
        "torch": torch.__version__,
    })
    payload = model.SerializeToString()

    # Check before writing: the bytes that will be on disk, through the same loader a vehicle uses.
    checker = OnnxPolicyRuntime(threads=1)
    candidate = checker.load_bytes(payload, source=str(onnx_path))
    frames, kinematics = _probe_inputs(8, seed=1)
    with torch.inference_mode():
        expected = module(torch.from_numpy(frames), torch.from_numpy(kinematics)).numpy()
    got = candidate.run(frames, kinematics)
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= AGREEMENT_ATOL:
        raise RuntimeError(
            f"onnxruntime and torch disagree by {difference:.3g} (> {AGREEMENT_ATOL}); nothing written"
        )
    write_atomic(onnx_path, payload)
    return ExportReport(onnx_path, len(payload), loaded.version, loaded.sha256, OPSET, difference)


@contextlib.contextmanager
def _quiet_exporter():
    """torch.export's notes that do not concern this graph (torchvision not installed, pytree
    deprecations, a dynamic-axis rename) would read like problems in the CLI's output."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class OnnxPolicy:
    """A loaded ONNX policy; the attributes LoadedPolicy has, for the same callers."""

    session: object  # onnxruntime.InferenceSession
    version: int
    action_limit: float
    sha256: str  # of the .onnx file
    source: str
    updates: int = 0
    weights_sha256: str = ""

    def run(self, frames: np.ndarray, kinematics: np.ndarray) -> np.ndarray:
        """A batch: frames (B, 4, 84, 84) uint8, kinematics (B, 23) float32 -> (B, 2) float32."""
        return self.session.run([OUTPUT_ACTION], {INPUT_FRAMES: frames, INPUT_KINEMATICS: kinematics})[0]


class OnnxPolicyRuntime:
    """Runs an exported policy with onnxruntime: act(frames, kinematics) like PolicyRuntime.act.

    One intra-op thread by default (the torch side's `torch_threads` = 1: on a shared 2-core
    computer one thread keeps the p99 flat). `load(path)` validates and installs a file; there is
    no hot swap from the weights topic (an exported file is what a vehicle was cleared to run)."""

    def __init__(self, threads: int = 1, max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES):
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.threads = int(threads)
        self.max_model_bytes = int(max_model_bytes)
        self._policy: OnnxPolicy | None = None

    @property
    def policy(self) -> OnnxPolicy | None:
        return self._policy

    @property
    def version(self) -> int:
        policy = self._policy
        return policy.version if policy is not None else 0

    def act(
        self, frames: np.ndarray, kinematics: np.ndarray, policy: OnnxPolicy | None = None
    ) -> tuple[np.ndarray, int]:
        """Deterministic action for one observation: ((2,) float32, version). frames (4, 84, 84)
        pixels (made uint8 like the torch side), kinematics (23,) (made float32). Raises
        RuntimeError without a loaded policy and ValueError for wrong shapes."""
        policy = self._policy if policy is None else policy
        if policy is None:
            raise RuntimeError("no ONNX policy loaded")
        f = np.ascontiguousarray(frames, dtype=np.uint8)
        k = np.ascontiguousarray(kinematics, dtype=np.float32)
        if f.shape != (IN_FRAMES, FRAME_SIZE, FRAME_SIZE):
            raise ValueError(f"frames must be ({IN_FRAMES}, {FRAME_SIZE}, {FRAME_SIZE}), got {f.shape}")
        if k.shape != (KINEMATICS_DIM,):
            raise ValueError(f"kinematics must be ({KINEMATICS_DIM},), got {k.shape}")
        out = policy.run(f[None], k[None])
        return np.asarray(out, dtype=np.float32).reshape(ACTION_DIM).copy(), policy.version

    def load(self, path: str | Path) -> OnnxPolicy:
        """Validate an .onnx file, make it the current policy and return it. Raises WeightsRejected."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise WeightsRejected(f"cannot read ONNX file {path}: {exc.strerror}") from None
        if size > self.max_model_bytes:
            raise WeightsRejected(f"ONNX file {path} is {size} bytes, more than {self.max_model_bytes}")
        policy = self.load_bytes(path.read_bytes(), source=str(path))
        self._policy = policy
        return policy

    def load_bytes(self, payload: bytes, source: str) -> OnnxPolicy:
        """Validate ONNX bytes and build a session (not installed: `load` installs)."""
        import onnx
        import onnxruntime as ort
        from google.protobuf.message import DecodeError
        from onnx import external_data_helper

        if len(payload) > self.max_model_bytes:
            raise WeightsRejected(
                f"ONNX model from {source} is {len(payload)} bytes, more than {self.max_model_bytes}"
            )
        try:
            model = onnx.load_model_from_string(payload)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise WeightsRejected(f"{source} is not an ONNX model: {exc}") from None
        meta = {p.key: p.value for p in model.metadata_props}
        if meta.get("format") != FORMAT:
            raise WeightsRejected(
                f"{source}: format {meta.get('format')!r} is not {FORMAT!r} (export it with av-td3 export)"
            )
        tensors = list(model.graph.initializer)
        for node in model.graph.node:
            for attribute in node.attribute:
                tensors.extend([attribute.t, *attribute.tensors])
        if any(external_data_helper.uses_external_data(t) for t in tensors):
            raise WeightsRejected(f"{source} refers to external data files; only self-contained models load")
        _check_signature(model, source)
        try:
            version = int(meta.get("version", "0"))
            action_limit = float(meta.get("action_limit", "0"))
            updates = int(meta.get("updates", "0"))
        except ValueError as exc:
            raise WeightsRejected(f"{source}: bad metadata: {exc}") from None
        if not (math.isfinite(action_limit) and 0.0 <= action_limit <= 1.0):
            raise WeightsRejected(f"{source}: action_limit {action_limit!r} is not in [0, 1]")

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: warnings would go to stderr on every load
        try:
            session = ort.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own (pybind) error types
            raise WeightsRejected(f"onnxruntime cannot load {source}: {exc}") from None
        policy = OnnxPolicy(session, version, action_limit, hashlib.sha256(payload).hexdigest(), source,
                            updates, meta.get("weights_sha256", ""))
        frames, kinematics = _probe_inputs(1)
        try:
            probe = policy.run(frames, kinematics)
        except Exception as exc:
            raise WeightsRejected(f"{source} fails a trial run: {exc}") from None
        if probe.shape != (1, ACTION_DIM) or not np.isfinite(probe).all():
            raise WeightsRejected(f"{source}: the trial run gives {probe!r}, not {ACTION_DIM} finite actions")
        return policy


def _check_signature(model, source: str) -> None:
    from onnx import TensorProto

    def dims(value_info) -> list:
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    expected_inputs = {
        INPUT_FRAMES: (TensorProto.UINT8, [IN_FRAMES, FRAME_SIZE, FRAME_SIZE]),
        INPUT_KINEMATICS: (TensorProto.FLOAT, [KINEMATICS_DIM]),
    }
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    if set(inputs) != set(expected_inputs):
        raise WeightsRejected(f"{source}: inputs {sorted(inputs)}, expected {sorted(expected_inputs)}")
    for name, (elem_type, shape) in expected_inputs.items():
        info = inputs[name]
        if info.type.tensor_type.elem_type != elem_type or dims(info)[1:] != shape:
            raise WeightsRejected(
                f"{source}: input {name} is {TensorProto.DataType.Name(info.type.tensor_type.elem_type)} "
                f"{dims(info)}, expected {TensorProto.DataType.Name(elem_type)} [batch, {shape}]"
            )
    outputs = {o.name: o for o in model.graph.output}
    action = outputs.get(OUTPUT_ACTION)
    fits = action is not None and action.type.tensor_type.elem_type == TensorProto.FLOAT
    if len(outputs) != 1 or not fits or dims(action)[1:] != [ACTION_DIM]:
        raise WeightsRejected(f"{source}: outputs {sorted(outputs)}, expected one float32 {OUTPUT_ACTION}")
