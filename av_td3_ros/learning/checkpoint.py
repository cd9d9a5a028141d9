"""Checkpoints of the whole learner: safetensors for every tensor, JSON for everything else.

Layout of a checkpoint directory:
  checkpoint.json                      the commit record: config, counters, monitor/limiter
                                       state, optimizer hyperparameters, RNG states, `extra`,
                                       and the name + sha256 of the tensor file it belongs to
  learner-<updates>-<token>.safetensors  weights, optimizer moments, RNG state bytes

Atomic: the tensor file is written to a temporary name, fsynced and renamed first; then the JSON
the same way. Renaming checkpoint.json is the commit: a crash at any point leaves either the
previous checkpoint or the new one, whole. Older tensor files are removed after the commit.
Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from av_td3_ros.atomic_file import write_atomic
from av_td3_ros.learning.config import TD3Config

CHECKPOINT_JSON = "checkpoint.json"
FORMAT = "av_td3_ros.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A missing, incomplete or corrupted checkpoint."""


# --- nested state <-> (JSON, tensors) ----------------------------------------------------------
def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor/array in a nested structure by a reference into `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": path}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        # optimizer states are keyed by parameter index
        return {"__intdict__": [[k, _flatten(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint {path}: {type(obj).__name__}")


def _unflatten(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__ndarray__"}:
            return tensors[obj["__ndarray__"]].numpy()
        if set(obj) == {"__tuple__"}:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__intdict__"}:
            return {int(k): _unflatten(v, tensors) for k, v in obj["__intdict__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


# --- public API --------------------------------------------------------------------------------
def save_checkpoint(
    learner: Any, directory: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> Path:
    """Save the whole learner (and `extra`: JSON values, tensors or arrays) atomically.

    Call it between updates (the learner's tensors are read while writing). Returns the path of
    checkpoint.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    state = _flatten(learner.state_dict(), "learner", tensors)
    extra_json = _flatten(dict(extra or {}), "extra", tensors)
    blob = safetensors_save(tensors)
    tensor_name = f"learner-{learner.updates:012d}-{secrets.token_hex(4)}.safetensors"
    write_atomic(directory / tensor_name, blob)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "saved_at": time.time(),
        "updates": learner.updates,
        "tensors_file": tensor_name,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "learner": state,
        "extra": extra_json,
    }
    json_path = directory / CHECKPOINT_JSON
    write_atomic(json_path, json.dumps(record, indent=1).encode())
    for old in directory.glob("learner-*.safetensors"):
        if old.name != tensor_name:
            old.unlink(missing_ok=True)
    return json_path


def checkpoint_exists(directory: str | os.PathLike) -> bool:
    return (Path(directory) / CHECKPOINT_JSON).is_file()


def _read_record(directory: Path) -> dict[str, Any]:
    json_path = directory / CHECKPOINT_JSON
    try:
        record = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {directory} ({CHECKPOINT_JSON} missing)") from None
    except ValueError as exc:
        raise CheckpointError(f"{json_path} is not valid JSON: {exc}") from None
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: format {record.get('format')!r} v{record.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    return record


def read_checkpoint_config(directory: str | os.PathLike) -> TD3Config:
    """The TD3Config a checkpoint was saved with (to build a matching learner before loading)."""
    saved = dict(_read_record(Path(directory))["learner"]["config"])
    saved.setdefault("scale_kinematics", False)  # saved before the setting: raw metres
    return TD3Config.from_dict(saved)


def load_checkpoint(directory: str | os.PathLike, learner: Any) -> dict[str, Any]:
    """Restore `learner` from a checkpoint directory; return the `extra` saved with it.

    Raises CheckpointError for a missing/corrupted checkpoint and
    av_td3_ros.learning.td3.ArchitectureMismatch (naming the mismatch) for another architecture.
    """
    directory = Path(directory)
    record = _read_record(directory)
    tensor_path = directory / record["tensors_file"]
    try:
        blob = tensor_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{tensor_path} (named by {CHECKPOINT_JSON}) is missing") from None
    if hashlib.sha256(blob).hexdigest() != record["tensors_sha256"]:
        raise CheckpointError(f"{tensor_path} does not match the sha256 in {CHECKPOINT_JSON}")
    tensors = safetensors_load(blob)
    state = _unflatten(record["learner"], tensors)
    learner.load_state_dict(state)
    return _unflatten(record["extra"], tensors)
