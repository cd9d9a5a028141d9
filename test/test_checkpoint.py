"""Checkpoints: bit-identical resume, atomic writes, architecture mismatches named, no pickles."""

import json
import struct

import numpy as np
import pytest
import torch
from test_learner import make_batch

import av_td3_ros.learning.checkpoint as checkpoint_module
from av_td3_ros.learning import (
    ArchitectureMismatch,
    CheckpointError,
    TD3Config,
    TD3Learner,
    checkpoint_exists,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)

torch.set_num_threads(1)


def all_tensors(learner):
    out = {}
    for name, module in learner._named_modules().items():
        out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name, opt in learner._named_optimizers().items():
        for i, state in opt.state_dict()["state"].items():
            out.update({f"{name}.{i}.{k}": v for k, v in state.items()})
    return out


@pytest.mark.parametrize("encoder_grad", ["separate", "critic_only"])
def test_save_drop_load_then_the_next_update_is_bit_identical(tmp_path, encoder_grad):
    config = dict(encoder_grad=encoder_grad, seed=7, batch_size=8, l2_warning=10.0, l2_healthy=5.0,
                  lr_cut_cooldown=2)  # make the monitor cut LRs on the way, so that state matters too
    batches = [make_batch(seed=i) for i in range(6)]
    reference = TD3Learner(TD3Config(**config))
    for b in batches[:3]:
        reference.update(b)
    reference.record_episode_length(42)
    save_checkpoint(reference, tmp_path, extra={"policy_version": 5, "note": "x"})
    expected = [reference.update(b) for b in batches[3:]]
    expected_act = reference.act(batches[0].frames[:2], batches[0].kinematics[:2], explore=True)
    expected_tensors = all_tensors(reference)
    del reference

    resumed = TD3Learner(TD3Config(**{**config, "seed": 12345}))  # different init and RNG
    extra = load_checkpoint(tmp_path, resumed)
    assert extra == {"policy_version": 5, "note": "x"}
    assert resumed.updates == 3 and list(resumed.limiter.episode_lengths) == [42]
    got = [resumed.update(b) for b in batches[3:]]
    assert got == expected  # every returned float, bit for bit (lr cuts included)
    assert [info["lr_cut"] for info in got] == [0.0, 1.0, 0.0] and resumed.monitor.cuts == 3
    np.testing.assert_array_equal(
        resumed.act(batches[0].frames[:2], batches[0].kinematics[:2], explore=True), expected_act
    )
    got_tensors = all_tensors(resumed)
    assert got_tensors.keys() == expected_tensors.keys()
    for key, value in expected_tensors.items():
        assert torch.equal(got_tensors[key], value), key


def test_checkpoint_files_are_safetensors_and_json_and_nothing_is_left_behind(tmp_path):
    learner = TD3Learner(TD3Config(seed=0, batch_size=8))
    learner.update(make_batch())
    save_checkpoint(learner, tmp_path)
    learner.update(make_batch(1))
    save_checkpoint(learner, tmp_path, extra={"arr": np.arange(4, dtype=np.int64)})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0] == "checkpoint.json" and files[1].startswith("learner-000000000002-")
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    assert record["updates"] == 2 and record["learner"]["config"]["encoder_grad"] == "separate"
    blob = (tmp_path / files[1]).read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])  # a safetensors header: plain JSON, no pickle
    assert "learner/modules/critic/l1.weight" in header
    assert checkpoint_exists(tmp_path) and read_checkpoint_config(tmp_path).seed == 0
    np.testing.assert_array_equal(load_checkpoint(tmp_path, TD3Learner(TD3Config()))["arr"], np.arange(4))


def test_a_crash_before_the_commit_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    learner = TD3Learner(TD3Config(seed=0, batch_size=8))
    learner.update(make_batch())
    save_checkpoint(learner, tmp_path, extra={"n": 1})
    learner.update(make_batch(1))

    real_write = checkpoint_module.write_atomic

    def crash_on_json(path, data):
        if path.name == "checkpoint.json":
            raise OSError("disk full (simulated)")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_module, "write_atomic", crash_on_json)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(learner, tmp_path, extra={"n": 2})
    monkeypatch.undo()
    fresh = TD3Learner(TD3Config(seed=1))
    assert load_checkpoint(tmp_path, fresh) == {"n": 1}  # the old one, consistent
    assert fresh.updates == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_corrupted_or_missing_checkpoint_is_an_error_not_a_silent_reset(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path, TD3Learner(TD3Config()))
    learner = TD3Learner(TD3Config(seed=0))
    save_checkpoint(learner, tmp_path)
    (tensor_file,) = tmp_path.glob("learner-*.safetensors")
    data = bytearray(tensor_file.read_bytes())
    data[-10] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path, TD3Learner(TD3Config()))


def test_loading_another_architecture_names_the_mismatch(tmp_path):
    save_checkpoint(TD3Learner(TD3Config(cnn_norm="none", seed=0)), tmp_path / "none")
    with pytest.raises(ArchitectureMismatch) as exc:
        load_checkpoint(tmp_path / "none", TD3Learner(TD3Config(cnn_norm="layer")))
    message = str(exc.value)
    assert "cnn_norm: checkpoint 'none', learner 'layer'" in message
    assert "actor_encoder.norm1.weight: missing in checkpoint (learner (32, 20, 20))" in message

    save_checkpoint(TD3Learner(TD3Config(encoder_grad="critic_only", seed=0)), tmp_path / "shared")
    with pytest.raises(ArchitectureMismatch) as exc:
        load_checkpoint(tmp_path / "shared", TD3Learner(TD3Config(encoder_grad="separate")))
    message = str(exc.value)
    assert "encoder_grad: checkpoint 'critic_only', learner 'separate'" in message
    assert "modules missing in checkpoint: ['actor_encoder', 'actor_encoder_target'" in message
