"""Random-shift augmentation (DrQ): pad 4 with edge pixels, crop back at a random offset."""

import numpy as np
import pytest
import torch

from av_td3_ros.learning import TD3Config, TD3Learner
from av_td3_ros.learning.augmentation import random_shift

torch.set_num_threads(1)
SIZE = 84


def coordinate_frames(batch):
    """(B, 4, 84, 84) uint8 whose channels 0/2 hold each pixel's row and 1/3 its column, so a
    shifted stack tells by how much it moved."""
    rows = torch.arange(SIZE, dtype=torch.uint8).view(SIZE, 1).expand(SIZE, SIZE)
    cols = rows.t()
    return torch.stack([rows, cols, rows, cols]).expand(batch, 4, SIZE, SIZE).contiguous()


def shifts_of(shifted):
    """Per sample (dy, dx): the source row/column of the centre pixel minus its own."""
    centre = SIZE // 2
    return (shifted[:, 0, centre, centre].long() - centre, shifted[:, 1, centre, centre].long() - centre)


def expected_shift(dy, dx):
    """What a (dy, dx) shift of coordinate_frames(1) must look like: rows/cols moved, edges repeated."""
    rows = (torch.arange(SIZE) + dy).clamp(0, SIZE - 1).view(SIZE, 1).expand(SIZE, SIZE)
    cols = (torch.arange(SIZE) + dx).clamp(0, SIZE - 1).view(1, SIZE).expand(SIZE, SIZE)
    return torch.stack([rows, cols, rows, cols]).to(torch.uint8)


def test_shape_dtype_and_device_are_kept_and_the_input_is_not_modified():
    frames = coordinate_frames(16)
    before = frames.clone()
    out = random_shift(frames, 4, torch.Generator().manual_seed(0))
    assert out.shape == frames.shape and out.dtype == torch.uint8 and out.device == frames.device
    assert torch.equal(frames, before)
    as_float = random_shift(frames.float(), 4, torch.Generator().manual_seed(0))
    assert as_float.dtype == torch.float32 and torch.equal(as_float, out.float())
    assert random_shift(frames, 0) is frames  # pad 0 = off


def test_each_stack_moves_rigidly_by_at_most_pad_pixels_with_edges_repeated():
    frames = coordinate_frames(2000)
    out = random_shift(frames, 4, torch.Generator().manual_seed(1))
    dy, dx = shifts_of(out)
    assert int(dy.abs().max()) <= 4 and int(dx.abs().max()) <= 4
    # Every one of the 9 x 9 offsets occurs, roughly equally often (uniform).
    counts = torch.bincount((dy + 4) * 9 + (dx + 4), minlength=81)
    assert int((counts > 0).sum()) == 81 and counts.min() > 2000 / 81 / 3
    # The whole stack (all 4 frames) moved by that one offset, pixels from outside repeat the edge.
    for b in range(0, 2000, 97):
        assert torch.equal(out[b], expected_shift(int(dy[b]), int(dx[b]))), b


def test_the_draws_come_from_the_generator():
    frames = coordinate_frames(64)
    first = random_shift(frames, 4, torch.Generator().manual_seed(5))
    again = random_shift(frames, 4, torch.Generator().manual_seed(5))
    other = random_shift(frames, 4, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="frames"):
        random_shift(torch.zeros(4, 84, 84, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="pad"):
        random_shift(coordinate_frames(1), -1)


def test_the_learner_shifts_obs_and_next_obs_independently_and_leaves_the_batch_alone():
    batch_size = 32
    frames = coordinate_frames(batch_size).numpy()
    next_frames = frames.copy()
    batch = type("Batch", (), dict(
        frames=frames, kinematics=np.zeros((batch_size, 23), np.float32),
        actions=np.zeros((batch_size, 2), np.float32), rewards=np.zeros(batch_size, np.float32),
        next_frames=next_frames, next_kinematics=np.zeros((batch_size, 23), np.float32),
        terminated=np.zeros(batch_size, np.float32)))
    agent = TD3Learner(TD3Config(seed=0, batch_size=batch_size, augment_pad=4))
    seen = {}

    def capture(name):
        def hook(module, inputs, output):
            # conv1 reads NatureCNN.prepare(pixels) = pixels / 127.5 - 1: back to pixel values.
            seen[name] = ((inputs[0] + 1.0) * 127.5).round().to(torch.uint8)
        return hook

    agent.critic_encoder.conv1.register_forward_hook(capture("obs"))
    agent.critic_encoder_target.conv1.register_forward_hook(capture("next_obs"))
    agent.update(batch)
    obs_shift, next_shift = shifts_of(seen["obs"]), shifts_of(seen["next_obs"])
    for dy, dx in (obs_shift, next_shift):
        assert int(dy.abs().max()) <= 4 and int(dx.abs().max()) <= 4
        assert bool((dy != 0).any() or (dx != 0).any())  # it did shift
    assert not (torch.equal(obs_shift[0], next_shift[0]) and torch.equal(obs_shift[1], next_shift[1]))
    for b in range(batch_size):
        assert torch.equal(seen["obs"][b], expected_shift(int(obs_shift[0][b]), int(obs_shift[1][b])))
    # Augmentation is the learner's, not the replay's: the sampled arrays are untouched.
    np.testing.assert_array_equal(batch.frames, coordinate_frames(batch_size).numpy())
    np.testing.assert_array_equal(batch.next_frames, coordinate_frames(batch_size).numpy())


def test_augmentation_is_on_by_default_and_pad_0_makes_the_learner_read_the_frames_as_sampled():
    assert TD3Config().augment_pad == 4
    agent = TD3Learner(TD3Config(seed=0, batch_size=4, augment_pad=0))
    seen = []
    agent.critic_encoder.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    frames = coordinate_frames(4).numpy()
    batch = type("Batch", (), dict(
        frames=frames, kinematics=np.zeros((4, 23), np.float32), actions=np.zeros((4, 2), np.float32),
        rewards=np.zeros(4, np.float32), next_frames=frames, next_kinematics=np.zeros((4, 23), np.float32),
        terminated=np.zeros(4, np.float32)))
    agent.update(batch)
    pixels = ((seen[0] + 1.0) * 127.5).round().to(torch.uint8)
    assert torch.equal(pixels, coordinate_frames(4))
