"""The exported ONNX policy: same actions as torch on simulator frames, a checked file, refusals."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from av_td3_ros.cli import main
from av_td3_ros.demo.evaluation import evaluate
from av_td3_ros.deploy.onnx_policy import FORMAT, OnnxPolicyRuntime
from av_td3_ros.driving.runtime import PolicyRuntime, WeightsRejected, load_weights_file
from av_td3_ros.learning.weights import encode_policy_weights
from av_td3_ros.model import PolicyNetwork
from av_td3_ros.perception.reward import RewardConfig
from av_td3_ros.sim.simulator import SimConfig

ATOL = 1e-4


def _weights(seed: int = 3) -> dict:
    torch.manual_seed(seed)
    net = PolicyNetwork()
    with torch.no_grad():  # a freshly initialized actor answers ~0 to everything: spread its actions
        net.actor.l3.weight.mul_(8.0)
        net.actor.l3.bias.zero_()
    return net.state_dict()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("onnx")
    weights = directory / "policy.safetensors"
    weights.write_bytes(encode_policy_weights(_weights(), {"version": 7, "updates": 1234}))
    onnx_path = directory / "policy.onnx"
    with pytest.raises(SystemExit) as done:
        main(["export", "--weights", str(weights), "--onnx", str(onnx_path)])
    assert done.value.code == 0
    torch_runtime = PolicyRuntime()
    torch_runtime.install(torch_runtime.prepare(load_weights_file(weights, torch_runtime), str(weights)))
    onnx_runtime = OnnxPolicyRuntime(threads=1)
    onnx_runtime.load(onnx_path)
    return weights, onnx_path, torch_runtime, onnx_runtime


@pytest.fixture(scope="module")
def simulator_observations(exported):
    """(frames, kinematics, torch action) the policy node would see, driving the embedded simulator."""
    _, _, torch_runtime, _ = exported
    seen = []

    def driver(frames, kinematics):
        action = torch_runtime.act(frames, kinematics)[0]
        seen.append((frames.copy(), kinematics.copy(), action))
        return action

    # The top view: its frames vary more from step to step than the front view's sky-and-road.
    evaluate(driver, "torch", episodes=6, seed=11, reward=RewardConfig(max_episode_steps=30),
             sim_config=SimConfig(camera_view="top", image_width=400, image_height=300))
    return seen


def test_torch_and_onnx_actions_agree_on_simulator_frames(exported, simulator_observations):
    _, _, _, onnx_runtime = exported
    assert len(simulator_observations) >= 20
    frames = np.stack([f for f, _, _ in simulator_observations])
    assert frames.dtype == np.uint8 and frames.std() > 10  # rendered roads, not a blank image
    differences, actions = [], []
    for frames_i, kinematics_i, torch_action in simulator_observations:
        onnx_action, version = onnx_runtime.act(frames_i, kinematics_i)
        assert version == 7
        assert onnx_action.shape == (2,) and onnx_action.dtype == np.float32
        differences.append(np.abs(onnx_action - torch_action).max())
        actions.append(onnx_action)
    assert max(differences) <= ATOL
    spread = np.stack(actions).std(axis=0)
    assert spread.min() > 0.03, spread  # the actions depend on what the car sees


def test_a_batch_of_observations_agrees_too(exported, simulator_observations):
    _, _, torch_runtime, onnx_runtime = exported
    frames = np.stack([f for f, _, _ in simulator_observations[:16]])
    kinematics = np.stack([k for _, k, _ in simulator_observations[:16]]).astype(np.float32)
    with torch.inference_mode():
        expected = torch_runtime.policy.module(torch.from_numpy(frames), torch.from_numpy(kinematics)).numpy()
    got = onnx_runtime.policy.run(frames, kinematics)
    assert got.shape == (16, 2)
    assert np.abs(got - expected).max() <= ATOL


def test_the_file_says_where_it_came_from_and_what_it_takes(exported):
    weights, onnx_path, _, onnx_runtime = exported
    model = onnx.load(onnx_path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == FORMAT
    assert meta["version"] == "7" and meta["updates"] == "1234"
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "127.5" in meta["normalization"]
    assert [i.name for i in model.graph.input] == ["frames", "kinematics"]
    assert [o.name for o in model.graph.output] == ["action"]
    policy = onnx_runtime.policy
    assert policy.sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert policy.weights_sha256 == meta["weights_sha256"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_export_replaces_a_file_atomically_and_leaves_no_temporary_files(exported, tmp_path, capsys):
    weights, _, _, _ = exported
    target = tmp_path / "policy.onnx"
    target.write_bytes(b"an older export")
    with pytest.raises(SystemExit) as done:
        main(["export", "--weights", str(weights), "--onnx", str(target)])
    assert done.value.code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]
    OnnxPolicyRuntime().load(target)  # the whole new file, not the old one
    out = capsys.readouterr().out
    assert "frames uint8 [batch, 4, 84, 84]" in out and "max |difference|" in out


def test_export_refuses_a_pickle_and_writes_nothing(tmp_path, capsys):
    weights = tmp_path / "policy.pt"
    torch.save(_weights(), weights)
    target = tmp_path / "policy.onnx"
    with pytest.raises(SystemExit) as done:
        main(["export", "--weights", str(weights), "--onnx", str(target)])
    assert done.value.code == 2
    assert "pickle" in capsys.readouterr().err
    assert not target.exists()


def _modified(onnx_path, tmp_path, change) -> str:
    model = onnx.load(onnx_path)
    change(model)
    path = tmp_path / "modified.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def _set_meta(model, key, value):
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value


def _poison_first_weight(model):
    tensor = model.graph.initializer[0]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[:] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def _external(model):
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda m: _set_meta(m, "format", "something else"), "format"),
        (lambda m: setattr(m.graph.input[0], "name", "images"), "inputs"),
        (lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", onnx.TensorProto.FLOAT), "frames"),
        (lambda m: _set_meta(m, "action_limit", "nan"), "action_limit"),
        (_poison_first_weight, "trial run"),
        (_external, "external data"),
    ],
    ids=["foreign_format", "renamed_input", "float_frames", "bad_action_limit", "nan_weights",
         "external_data"],
)
def test_a_file_that_is_not_a_clean_export_is_refused_with_the_reason(exported, tmp_path, change, reason):
    _, onnx_path, _, _ = exported
    runtime = OnnxPolicyRuntime()
    with pytest.raises(WeightsRejected, match=reason):
        runtime.load(_modified(onnx_path, tmp_path, change))
    assert runtime.policy is None


def test_garbage_missing_and_oversized_files_are_refused(exported, tmp_path):
    _, onnx_path, _, _ = exported
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf at all\xff\xff")
    with pytest.raises(WeightsRejected):
        OnnxPolicyRuntime().load(garbage)
    with pytest.raises(WeightsRejected, match="cannot read"):
        OnnxPolicyRuntime().load(tmp_path / "missing.onnx")
    with pytest.raises(WeightsRejected, match="bytes, more than"):
        OnnxPolicyRuntime(max_model_bytes=1 << 20).load(onnx_path)


def test_act_needs_a_policy_and_the_policy_nodes_shapes(exported):
    _, _, _, onnx_runtime = exported
    with pytest.raises(RuntimeError, match="no ONNX policy"):
        OnnxPolicyRuntime().act(np.zeros((4, 84, 84), np.uint8), np.zeros(23, np.float32))
    with pytest.raises(ValueError, match="frames"):
        onnx_runtime.act(np.zeros((3, 84, 84), np.uint8), np.zeros(23, np.float32))
    with pytest.raises(ValueError, match="kinematics"):
        onnx_runtime.act(np.zeros((4, 84, 84), np.uint8), np.zeros(22, np.float32))
    assert OnnxPolicyRuntime().version == 0 and onnx_runtime.version == 7
