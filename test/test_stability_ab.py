"""A/B stability through the full learner, small enough for CI.

Unstabilized (the design's failing setup: no LayerNorm, no weight decay, no clipping, no LR cut,
lr 1e-3 everywhere): the actor CNN, pushed by the actor's -Q loss, grows its per-sample feature
L2 by more than 10x within a hundred or so updates. Stabilized defaults on the same data: < 30.
The long version (batch 32, hundreds of updates, both encoder_grad modes) is bench/stability_ab.py.
"""

from types import SimpleNamespace

import numpy as np
import torch

from av_td3_ros.learning import TD3Config, TD3Learner

UPDATES = 100
BATCH = 8


def synthetic_batches(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [
        SimpleNamespace(
            frames=rng.integers(0, 256, (BATCH, 4, 84, 84), dtype=np.uint8),
            kinematics=rng.normal(size=(BATCH, 23)).astype(np.float32),
            actions=rng.uniform(-1, 1, (BATCH, 2)).astype(np.float32),
            rewards=rng.normal(size=BATCH).astype(np.float32),
            next_frames=rng.integers(0, 256, (BATCH, 4, 84, 84), dtype=np.uint8),
            next_kinematics=rng.normal(size=(BATCH, 23)).astype(np.float32),
            terminated=(rng.random(BATCH) < 0.05).astype(np.float32),
        )
        for _ in range(n)
    ]


def feature_norms(config, batches):
    learner = TD3Learner(config)
    with torch.no_grad():  # the actor CNN's per-sample L2 before any update
        features = learner.actor_encoder(torch.from_numpy(batches[0].frames))
    initial = float(torch.linalg.vector_norm(features, dim=1).mean())
    norms = [learner.update(batches[i % len(batches)])["cnn_l2"] for i in range(UPDATES)]
    return initial, norms


def test_unstabilized_features_explode_and_stabilized_ones_stay_healthy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batches = synthetic_batches()
        lr = 1e-3
        initial, unstable = feature_norms(
            TD3Config.unstabilized(seed=0, batch_size=BATCH, actor_lr=lr, critic_lr=lr, actor_cnn_lr=lr,
                                   critic_cnn_lr=lr),
            batches,
        )
        initial_stable, stable = feature_norms(TD3Config(seed=0, batch_size=BATCH), batches)
    finally:
        torch.set_num_threads(threads)

    print(f"unstabilized: {initial:.1f} -> max {max(unstable):.1f}; stabilized: {initial_stable:.1f} -> "
          f"max {max(stable):.1f}")
    assert 10 < initial < 20  # an unnormalized NatureCNN starts ~13.6, not far from the normalized 16
    assert max(unstable) > 10 * initial
    assert max(stable) < 30
    assert 14 < initial_stable < 18
