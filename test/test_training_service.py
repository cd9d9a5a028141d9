"""The trainer's pure core (no ROS): TransitionIngest and TrainingService.

Real torch learner, real replay buffer, real checkpoints on disk; nothing mocked."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from av_td3_ros.learning.config import TD3Config
from av_td3_ros.learning.ingest import (
    ACTION_OUT_OF_RANGE,
    BAD_ACTION_SHAPE,
    BAD_ACTOR_ID,
    BAD_FRAME_LENGTH,
    BAD_FRAME_SIZE,
    BAD_KIND,
    BAD_KINEMATICS_SHAPE,
    EPISODE_BROKEN,
    EPISODE_MISMATCH,
    KIND_START,
    KIND_STEP,
    KINEMATICS_OUT_OF_RANGE,
    NON_FINITE_ACTION,
    NON_FINITE_KINEMATICS,
    NON_FINITE_REWARD,
    OUT_OF_ORDER,
    QUEUE_FULL,
    REWARD_OUT_OF_RANGE,
    TOO_MANY_ACTORS,
    IngestConfig,
    TransitionIngest,
    TransitionRecord,
)
from av_td3_ros.learning.training_service import (
    VERSION_FILE,
    PolicyUpdate,
    TrainingService,
    TrainingServiceConfig,
)

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, size=(8, 84 * 84), dtype=np.uint8)


def record(actor="car1", seq=0, episode=0, step=0, kind=None, version=0, terminated=False, truncated=False,
           **overrides) -> TransitionRecord:
    kind = (KIND_START if step == 0 else KIND_STEP) if kind is None else kind
    values = dict(
        actor_id=actor, seq=seq, episode=episode, step=step, policy_version=version, kind=kind,
        frame_height=84, frame_width=84, frame=FRAMES[seq % len(FRAMES)],
        kinematics=np.linspace(-3, 3, 23, dtype=np.float32),
        action=np.array([0.5, -0.25], np.float32) if kind == KIND_STEP else np.zeros(2, np.float32),
        reward=0.5 if kind == KIND_STEP else 0.0, terminated=terminated, truncated=truncated,
    )
    values.update(overrides)
    return TransitionRecord(**values)


def stream(actor="car1", episodes=1, length=5, seq=0, version=0, first_episode=0):
    """START + `length` STEPs per episode, the last STEP truncated; seq counts up."""
    out = []
    for e in range(first_episode, first_episode + episodes):
        for step in range(length + 1):
            out.append(record(actor, seq, e, step, version=version, truncated=step == length))
            seq += 1
    return out


# ---------------------------------------------------------------------------------------------
# TransitionIngest
# ---------------------------------------------------------------------------------------------


def test_kinds_mirror_the_message_constants():
    from av_td3_msgs.msg import Transition

    assert (KIND_START, KIND_STEP) == (Transition.KIND_START, Transition.KIND_STEP)


def test_a_clean_stream_is_accepted_in_order_with_frames_reshaped():
    ingest = TransitionIngest()
    records = stream(episodes=2, length=4)
    assert [ingest.offer(r) for r in records] == [None] * len(records)
    out = ingest.drain()
    assert [r.seq for r in out] == [r.seq for r in records]
    assert all(r.frame.shape == (84, 84) and r.frame.dtype == np.uint8 for r in out)
    np.testing.assert_array_equal(out[3].frame.reshape(-1), records[3].frame)
    s = ingest.stats()
    assert (s.received, s.accepted, s.dropped, s.lost, s.queue_depth) == (10, 10, 0, 0, 0)
    assert ingest.take_episode_lengths() == [4, 4]
    assert ingest.take_episode_lengths() == []


MALFORMED = [
    (BAD_ACTOR_ID, dict(actor_id="")),
    (BAD_KIND, dict(kind=7)),
    (BAD_FRAME_SIZE, dict(frame_height=96, frame_width=96, frame=np.zeros(96 * 96, np.uint8))),
    (BAD_FRAME_LENGTH, dict(frame=np.zeros(84 * 84 - 1, np.uint8))),
    (BAD_FRAME_LENGTH, dict(frame=np.zeros(84 * 84 + 1, np.uint8))),
    (BAD_FRAME_LENGTH, dict(frame=np.zeros(84 * 84, np.float32))),
    (BAD_KINEMATICS_SHAPE, dict(kinematics=np.zeros(22, np.float32))),
    (BAD_KINEMATICS_SHAPE, dict(kinematics=np.zeros((23, 1), np.float32))),
    (NON_FINITE_KINEMATICS, dict(kinematics=np.full(23, np.nan, np.float32))),
    (NON_FINITE_KINEMATICS, dict(kinematics=np.r_[np.zeros(22), np.inf].astype(np.float32))),
    (KINEMATICS_OUT_OF_RANGE, dict(kinematics=np.r_[np.zeros(22), 1e6].astype(np.float32))),
    (BAD_ACTION_SHAPE, dict(action=np.zeros(3, np.float32))),
    (BAD_ACTION_SHAPE, dict(action=np.zeros(0, np.float32))),
    (NON_FINITE_ACTION, dict(action=np.array([np.nan, 0], np.float32))),
    (ACTION_OUT_OF_RANGE, dict(action=np.array([0.0, -1.0001], np.float32))),
    (ACTION_OUT_OF_RANGE, dict(action=np.array([1.5, 0.0], np.float32))),
    (NON_FINITE_REWARD, dict(reward=float("inf"))),
    (NON_FINITE_REWARD, dict(reward=float("nan"))),
    (REWARD_OUT_OF_RANGE, dict(reward=1e9)),
]


@pytest.mark.parametrize(("reason", "bad"), MALFORMED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(MALFORMED)])
def test_a_malformed_step_is_dropped_counted_and_breaks_its_episode_until_the_next_start(reason, bad):
    ingest = TransitionIngest()
    records = stream(episodes=2, length=5)
    records[3] = record(seq=3, episode=0, step=3, **bad)
    verdicts = [ingest.offer(r) for r in records]
    assert verdicts[3] == reason
    # steps 4, 5 of episode 0 cannot be stacked (step 3 is missing): dropped; episode 1 is whole
    assert verdicts[:6] == [None, None, None, reason, EPISODE_BROKEN, EPISODE_BROKEN]
    assert verdicts[6:] == [None] * 6
    out = ingest.drain()
    assert [r.seq for r in out] == [0, 1, 2, 6, 7, 8, 9, 10, 11]
    s = ingest.stats()
    assert s.received == 12 and s.accepted == 9 and s.dropped == 3
    assert s.dropped_by_reason == {reason: 1, EPISODE_BROKEN: 2}
    # a malformed message is a hole we saw, not a loss; the seq stays in step (no false gap)
    expected_lost = 1 if reason == BAD_ACTOR_ID else 0  # without a valid actor id the seq is unknown
    assert s.lost == expected_lost


@pytest.mark.parametrize(("reason", "bad"), [m for m in MALFORMED if m[0] not in (
    BAD_ACTION_SHAPE, NON_FINITE_ACTION, ACTION_OUT_OF_RANGE, NON_FINITE_REWARD, REWARD_OUT_OF_RANGE)])
def test_a_malformed_start_opens_no_episode(reason, bad):
    ingest = TransitionIngest()
    records = stream(episodes=1, length=3)
    records[0] = record(seq=0, **bad)
    verdicts = [ingest.offer(r) for r in records]
    assert verdicts[0] == reason
    assert verdicts[1:] == [EPISODE_BROKEN] * 3
    assert ingest.drain() == []


def test_a_start_needs_no_action_or_reward():
    ingest = TransitionIngest()
    assert ingest.offer(record(seq=0, action=np.zeros(0, np.float32), reward=float("nan"))) is None


def test_a_seq_gap_counts_the_missing_messages_and_drops_the_episode_until_the_next_start():
    ingest = TransitionIngest()
    records = stream(episodes=3, length=5)  # seq 0..17; episode e starts at seq 6e
    del records[8:11]  # episode 1 loses steps 2, 3, 4 (seq 8, 9, 10)
    verdicts = {r.seq: ingest.offer(r) for r in records}
    assert verdicts[11] == EPISODE_BROKEN  # step 5 of episode 1 would sit on a wrong stack
    assert all(verdicts[s] is None for s in (*range(0, 8), *range(12, 18)))
    s = ingest.stats()
    assert (s.lost, s.gaps, s.out_of_order) == (3, 1, 0)
    assert [r.seq for r in ingest.drain()] == [*range(0, 8), *range(12, 18)]


def test_a_gap_right_before_a_start_loses_nothing_usable():
    ingest = TransitionIngest()
    records = stream(episodes=2, length=3)
    del records[3]  # the last STEP of episode 0 (seq 3) is lost
    assert [ingest.offer(r) for r in records] == [None] * 7
    assert ingest.stats().lost == 1


def test_an_out_of_order_step_counts_a_loss_and_breaks_the_episode():
    ingest = TransitionIngest()
    records = stream(episodes=2, length=5)
    order = [0, 1, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11]  # 3 and 4 swapped
    verdicts = [ingest.offer(records[i]) for i in order]
    assert verdicts[3] == EPISODE_BROKEN  # seq 4 after 2: gap of one
    assert verdicts[4] == OUT_OF_ORDER  # seq 3 arrives late
    assert verdicts[5] == EPISODE_BROKEN
    assert verdicts[6:] == [None] * 6
    s = ingest.stats()
    assert s.out_of_order == 1 and s.gaps == 1 and s.lost == 2


def test_an_actor_that_restarts_its_seq_with_a_start_is_accepted_without_a_loss():
    ingest = TransitionIngest()
    for r in stream(episodes=2, length=5):
        assert ingest.offer(r) is None
    for r in stream(episodes=1, length=5, seq=0):  # the policy node restarted: seq 0 again
        assert ingest.offer(r) is None
    s = ingest.stats()
    assert (s.restarts, s.lost, s.dropped) == (1, 0, 0)


def test_an_unknown_actors_first_step_is_dropped_without_counting_a_loss():
    ingest = TransitionIngest()
    records = stream(episodes=2, length=3, seq=1000)
    assert [ingest.offer(r) for r in records[2:]] == [EPISODE_BROKEN, EPISODE_BROKEN, None, None, None, None]
    assert ingest.stats().lost == 0


def test_a_step_that_does_not_continue_the_open_episode_is_dropped():
    ingest = TransitionIngest()
    assert ingest.offer(record(seq=0, episode=3, step=0)) is None
    assert ingest.offer(record(seq=1, episode=4, step=1)) == EPISODE_MISMATCH
    assert ingest.offer(record(seq=2, episode=3, step=2)) == EPISODE_BROKEN
    assert ingest.offer(record(seq=3, episode=5, step=0)) is None
    assert ingest.offer(record(seq=4, episode=5, step=2)) == EPISODE_MISMATCH  # skipped step 1


def test_a_step_after_the_episode_ended_is_dropped():
    ingest = TransitionIngest()
    assert ingest.offer(record(seq=0, step=0)) is None
    assert ingest.offer(record(seq=1, step=1, terminated=True)) is None
    assert ingest.offer(record(seq=2, step=2)) == EPISODE_BROKEN
    assert ingest.take_episode_lengths() == [1]


def test_a_flood_is_bounded_by_the_queue_and_counted_never_buffered():
    ingest = TransitionIngest(IngestConfig(queue_capacity=64))
    records = [record(actor=f"car{a}", seq=s, step=0) for s in range(200) for a in range(4)]  # STARTs
    verdicts = [ingest.offer(r) for r in records]
    s = ingest.stats()
    assert s.queue_depth == 64 and s.queue_high_water == 64
    assert verdicts.count(None) == 64 and verdicts.count(QUEUE_FULL) == 800 - 64
    assert s.dropped_by_reason == {QUEUE_FULL: 800 - 64}
    assert len(ingest.drain()) == 64
    assert ingest.offer(record(actor="car0", seq=200, step=0)) is None  # room again


def test_an_overflowed_step_breaks_its_episode():
    ingest = TransitionIngest(IngestConfig(queue_capacity=3))
    records = stream(episodes=2, length=6)  # episode 0: records 0..6, episode 1: 7..13
    verdicts = [ingest.offer(r) for r in records[:5]]
    assert verdicts == [None, None, None, QUEUE_FULL, EPISODE_BROKEN]
    ingest.drain()
    # room again, but step 3 of episode 0 went missing: nothing until the next START
    assert [ingest.offer(r) for r in records[5:7]] == [EPISODE_BROKEN, EPISODE_BROKEN]
    assert [ingest.offer(r) for r in records[7:10]] == [None, None, None]
    assert ingest.stats().lost == 0


def test_a_step_far_behind_resyncs_an_actor_that_restarted_while_its_start_was_lost():
    ingest = TransitionIngest()
    for r in stream(episodes=100, length=19):  # seq 0..1999
        assert ingest.offer(r) is None
    restarted = stream(episodes=2, length=5, seq=0)  # seq 0..11; its START (seq 0) is lost
    assert [ingest.offer(r) for r in restarted[1:6]] == [OUT_OF_ORDER] + [EPISODE_BROKEN] * 4
    assert [ingest.offer(r) for r in restarted[6:]] == [None] * 6
    assert ingest.stats().out_of_order == 1


def test_actor_slots_are_bounded_and_idle_ones_are_reused():
    now = [0.0]
    ingest = TransitionIngest(IngestConfig(max_actors=2, actor_idle_timeout=10.0), clock=lambda: now[0])
    assert ingest.offer(record(actor="a", seq=0)) is None
    assert ingest.offer(record(actor="b", seq=0)) is None
    assert ingest.offer(record(actor="c", seq=0)) == TOO_MANY_ACTORS
    now[0] = 5.0
    assert ingest.offer(record(actor="a", seq=1, step=1)) is None
    now[0] = 12.0  # b idle for 12 s, a for 7 s
    assert ingest.offer(record(actor="c", seq=0)) is None
    assert ingest.stats().actors == 2
    assert ingest.offer(record(actor="a", seq=2, step=2)) is None


def test_offer_from_many_threads_counts_everything_once():
    ingest = TransitionIngest(IngestConfig(queue_capacity=100_000))
    actors = [f"car{i}" for i in range(4)]
    streams = {a: stream(actor=a, episodes=25, length=19) for a in actors}  # 500 messages each
    threads = [threading.Thread(target=lambda a=a: [ingest.offer(r) for r in streams[a]]) for a in actors]
    drained = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        drained += ingest.drain()
    for t in threads:
        t.join()
    drained += ingest.drain()
    s = ingest.stats()
    assert (s.received, s.accepted, s.dropped, s.lost) == (2000, 2000, 0, 0)
    for a in actors:
        assert [r.seq for r in drained if r.actor_id == a] == list(range(500))


# Property: whatever arrives (losses, reordering, duplicates, malformed messages, restarts), every
# record that leaves the ingest continues its actor's open episode exactly: a START, then STEPs with
# consecutive seq and step of the same episode, nothing after a terminal STEP. That is what makes
# the replay buffer's frame stacks right.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["ok", "ok", "ok", "ok", "skip", "dup", "swap",
                                                               "nan", "restart", "end"])),
                min_size=1, max_size=120))
def test_property_accepted_records_always_form_whole_consecutive_episodes(ops):
    ingest = TransitionIngest()
    state = {a: {"seq": 0, "episode": 0, "step": 0} for a in range(3)}
    sent = []
    for actor, op in ops:
        s = state[actor]
        if op == "restart":
            s.update(seq=0, episode=s["episode"] + 1, step=0)
        step = s["step"]
        r = record(actor=f"a{actor}", seq=s["seq"], episode=s["episode"], step=step,
                   terminated=op == "end" and step > 0)
        if op == "nan":
            r.kinematics = np.full(23, np.nan, np.float32)
        s["seq"] += 1
        s["step"] += 1
        if op == "end" and step > 0:
            s.update(episode=s["episode"] + 1, step=0)
        if op == "skip":
            continue
        if op == "swap" and sent:
            sent.insert(len(sent) - 1, r)
        else:
            sent.append(r)
        if op == "dup":
            sent.append(r)
    for r in sent:
        ingest.offer(r)
    out = ingest.drain()
    stats = ingest.stats()
    assert stats.received == len(sent) == stats.accepted + stats.dropped
    open_ep: dict[str, tuple[int, int, int] | None] = {}
    for r in out:
        assert np.isfinite(r.kinematics).all() and r.frame.shape == (84, 84)
        if r.kind == KIND_START:
            open_ep[r.actor_id] = (r.episode, r.step, r.seq)
            continue
        prev = open_ep.get(r.actor_id)
        assert prev is not None, "a STEP without an open episode left the ingest"
        assert (r.episode, r.step, r.seq) == (prev[0], prev[1] + 1, prev[2] + 1)
        open_ep[r.actor_id] = None if (r.terminated or r.truncated) else (r.episode, r.step, r.seq)


# ---------------------------------------------------------------------------------------------
# TrainingService
# ---------------------------------------------------------------------------------------------

TINY_TD3 = dict(batch_size=4, seed=0, device="cpu", stats_every=1000, weight_norms_every=1000)


def service_config(tmp_path: Path | None = None, **overrides) -> TrainingServiceConfig:
    values = dict(
        td3=TD3Config(**TINY_TD3), replay_capacity=2000, replay_seed=0, learning_starts=8,
        update_to_data_ratio=0.5, publish_every=3, checkpoint_every=5,
        checkpoint_dir=str(tmp_path / "ckpt") if tmp_path is not None else "",
    )
    values.update(overrides)
    return TrainingServiceConfig(**values)


def feed(service: TrainingService, records) -> list[str | None]:
    verdicts = [service.offer(r) for r in records]
    while service.step():
        pass
    return verdicts


def test_no_update_before_learning_starts_then_updates_follow_the_ratio():
    published: list[PolicyUpdate] = []
    service = TrainingService(service_config(), on_weights=published.append)
    feed(service, stream(episodes=1, length=7))  # 7 transitions < learning_starts 8
    assert service.learner.updates == 0 and len(service.replay) == 7
    feed(service, stream(episodes=3, length=11, seq=8, first_episode=1))  # +33 = 40 transitions
    assert len(service.replay) == 40
    assert service.learner.updates == int((40 - 8 + 1) * 0.5)  # 16
    assert [p.version for p in published] == [1, 2, 3, 4, 5]  # every 3 updates
    assert published[-1].updates == 15
    assert service.snapshot().state == "learning"


def test_published_weights_are_the_policy_networks_state_dict_with_the_limiter_decision():
    from av_td3_ros.model import PolicyNetwork

    published: list[PolicyUpdate] = []
    service = TrainingService(service_config(), on_weights=published.append)
    feed(service, stream(episodes=2, length=10))
    update = published[0]
    reference = PolicyNetwork().state_dict()
    assert set(update.state_dict) == set(reference)
    assert all(update.state_dict[k].shape == reference[k].shape for k in reference)
    assert update.action_limit == pytest.approx(0.6)  # the limiter is on by default and not yet lifted
    for k, v in service.learner.actor_state_dict().items():  # a copy, taken at publish time
        assert v.data_ptr() != update.state_dict[k].data_ptr()


def test_malformed_transitions_never_reach_replay():
    service = TrainingService(service_config(learning_starts=10_000))
    records = stream(episodes=4, length=6)
    bad = {2: dict(kinematics=np.full(23, np.nan, np.float32)),
           9: dict(action=np.array([2.0, 0], np.float32)),
           16: dict(frame=np.zeros(100, np.uint8)),
           23: dict(reward=float("inf"))}
    for i, values in bad.items():
        old = records[i]
        records[i] = record(seq=old.seq, episode=old.episode, step=old.step, **values)
    feed(service, records)
    # each bad STEP (step 2 of its episode) voids itself and the 4 steps after it: 1 good step left
    assert len(service.replay) == 4 * 1
    s = service.snapshot()
    assert s.transitions_received == 28 and s.transitions_dropped == 4 * 5 and s.transitions_lost == 0
    batch = service.replay.sample(4)
    assert np.isfinite(batch.kinematics).all() and np.isfinite(batch.rewards).all()
    assert (np.abs(batch.actions) <= 1).all()


def test_episode_lengths_in_transitions_feed_the_action_limiter():
    service = TrainingService(service_config(learning_starts=10_000))
    feed(service, stream(episodes=3, length=6))
    assert list(service.learner.limiter.episode_lengths) == [6, 6, 6]


def test_each_update_reports_the_session_count_and_the_effective_ratio_is_updates_per_step_after_the_start():
    counts: list[int] = []
    service = TrainingService(service_config(), on_update=counts.append)
    feed(service, stream(episodes=1, length=7))
    assert counts == [] and service.snapshot().effective_update_to_data_ratio == 0.0
    feed(service, stream(episodes=3, length=11, seq=8, first_episode=1))  # 40 transitions
    assert counts == list(range(1, 17))  # one call per update, after it
    s = service.snapshot()
    assert (s.session_updates, s.session_transitions, s.learning_starts) == (16, 40, 8)
    assert s.effective_update_to_data_ratio == 16 / (40 - 8)


def test_env_steps_learned_from_count_towards_the_limiters_healthy_span():
    service = TrainingService(service_config())
    feed(service, stream(episodes=1, length=7))  # before any update: no streak, no span
    assert service.learner.limiter.l2_streak_env_steps == 0
    feed(service, stream(episodes=1, length=11, seq=8, first_episode=1))  # updates begin
    limiter = service.learner.limiter
    assert limiter.l2_streak > 0 and limiter.l2_streak_env_steps == 0  # tiny fresh nets: healthy
    feed(service, stream(episodes=2, length=11, seq=20, first_episode=2))
    assert limiter.l2_streak_env_steps == 22  # the steps that came after the streak began


def test_policy_lag_is_the_current_version_minus_the_transitions_version():
    service = TrainingService(service_config(learning_starts=10_000))
    service.version = 7
    feed(service, stream(episodes=1, length=4, version=4)
         + stream(actor="car2", episodes=1, length=4, version=6))
    s = service.snapshot()
    assert s.policy_lag == pytest.approx((4 * 3 + 4 * 1) / 8)
    assert s.policy_lag_max == 3


def test_checkpoints_periodically_and_on_stop_then_resumes_with_the_version_counting_on(tmp_path):
    published: list[PolicyUpdate] = []
    service = TrainingService(service_config(tmp_path), on_weights=published.append)
    feed(service, stream(episodes=2, length=13))  # 26 transitions -> 9 updates
    assert service.learner.updates == 9
    assert service.snapshot().last_checkpoint_update == 5
    service.stop()  # final checkpoint at update 9
    assert service.snapshot().last_checkpoint_update == 9
    assert [p.version for p in published] == [1, 2, 3]
    expected_actor = service.learner.actor_state_dict()

    republished: list[PolicyUpdate] = []
    resumed = TrainingService(service_config(tmp_path), on_weights=republished.append)
    assert resumed.restore()
    assert resumed.learner.updates == 9 and resumed.version == 3
    assert resumed.step()  # the resumed policy goes out at once, as a new version
    assert [p.version for p in republished] == [4]
    for k, v in expected_actor.items():
        torch.testing.assert_close(republished[0].state_dict[k], v, rtol=0, atol=0)
    # the replay is not checkpointed: learning_starts new transitions before updating again
    feed(resumed, stream(episodes=1, length=7))
    assert resumed.learner.updates == 9
    feed(resumed, stream(episodes=1, length=12, seq=8, first_episode=1))
    assert resumed.learner.updates > 9
    assert all(p.version > 4 for p in republished[1:]) and len(republished) > 1


def test_a_version_published_after_the_last_checkpoint_is_never_reused_after_a_crash(tmp_path):
    published: list[PolicyUpdate] = []
    service = TrainingService(service_config(tmp_path, checkpoint_every=1000), on_weights=published.append)
    feed(service, stream(episodes=2, length=13))
    service.checkpoint()  # checkpoint at version 3 ...
    feed(service, stream(episodes=1, length=20, seq=28, first_episode=2))
    last = published[-1].version
    assert last > 3  # ... then more versions went out, and the process is SIGKILLed (no stop())
    assert json.loads((tmp_path / "ckpt" / VERSION_FILE).read_text()) == {"version": last}

    republished: list[PolicyUpdate] = []
    resumed = TrainingService(service_config(tmp_path), on_weights=republished.append)
    assert resumed.restore()
    resumed.step()
    assert republished[0].version == last + 1


def test_resume_false_or_no_checkpoint_starts_fresh(tmp_path):
    assert not TrainingService(service_config(tmp_path)).restore()
    service = TrainingService(service_config(tmp_path))
    feed(service, stream(episodes=2, length=13))
    service.stop()
    fresh = TrainingService(service_config(tmp_path, resume=False))
    assert not fresh.restore() and fresh.learner.updates == 0
    assert fresh.version == 3  # a fresh learner, but versions never go back (policy nodes run 3)


def test_a_checkpoint_of_another_architecture_refuses_to_resume(tmp_path):
    from av_td3_ros.learning.td3 import ArchitectureMismatch

    service = TrainingService(service_config(tmp_path))
    feed(service, stream(episodes=2, length=13))
    service.stop()
    other = TrainingService(service_config(tmp_path, td3=TD3Config(**TINY_TD3, encoder_grad="critic_only")))
    with pytest.raises(ArchitectureMismatch, match="encoder_grad"):
        other.restore()


def test_diverged_weights_are_never_published_the_learner_rolls_back_to_its_checkpoint(tmp_path):
    published: list[PolicyUpdate] = []
    service = TrainingService(service_config(tmp_path), on_weights=published.append)
    feed(service, stream(episodes=2, length=13))
    service.checkpoint()
    good = service.learner.actor_state_dict()
    n = len(published)
    with torch.no_grad():
        next(service.learner.actor.parameters()).fill_(float("nan"))
    assert service.publish() is None
    assert len(published) == n
    s = service.snapshot()
    assert s.rollbacks == 1 and "rolled back" in s.last_error
    for k, v in service.learner.actor_state_dict().items():
        torch.testing.assert_close(v, good[k], rtol=0, atol=0)


def test_diverged_weights_without_a_checkpoint_fail_the_service():
    service = TrainingService(service_config())
    with torch.no_grad():
        next(service.learner.actor.parameters()).fill_(float("inf"))
    assert service.publish() is None
    assert service.failed and service.snapshot().state == "failed"


class _BrokenReplay:
    """A replay buffer whose sampling always fails (a real fault: e.g. a corrupted index)."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def start_episode(self, *args):
        return self.inner.start_episode(*args)

    def add_step(self, *args):
        return self.inner.add_step(*args)

    def sample(self, batch_size):
        raise RuntimeError("replay index corrupted")


def test_repeated_learner_errors_stop_the_learner_thread_and_mark_it_failed():
    from av_td3_ros.learning.replay import FrameReplayBuffer

    config = service_config(max_consecutive_errors=3)
    service = TrainingService(config, replay=_BrokenReplay(FrameReplayBuffer(1000, seed=0)))
    service.start()
    for r in stream(episodes=2, length=10):
        service.offer(r)
    deadline = time.monotonic() + 30
    while not service.failed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.failed
    s = service.snapshot()
    assert s.state == "failed" and s.learner_errors == 3 and "replay index corrupted" in s.last_error
    service.stop()
    assert not service._thread.is_alive()


def test_the_learner_thread_trains_from_another_threads_offers_and_stop_checkpoints(tmp_path):
    published: list[PolicyUpdate] = []
    service = TrainingService(service_config(tmp_path, checkpoint_every=1000), on_weights=published.append)
    service.start()
    producer = threading.Thread(target=lambda: [service.offer(r) for r in stream(episodes=4, length=15)])
    producer.start()
    producer.join()
    deadline = time.monotonic() + 60
    while service.learner.updates < int((60 - 8 + 1) * 0.5) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.learner.updates == 26 and published
    service.stop()
    s = service.snapshot()
    assert s.state == "stopped" and s.checkpoints == 1 and s.last_checkpoint_update == 26
    assert threading.current_thread() is threading.main_thread()
    assert all(t.name != "learner" for t in threading.enumerate())


def test_a_flood_that_the_learner_cannot_absorb_is_dropped_with_bounded_memory():
    config = service_config(ingest=IngestConfig(queue_capacity=256), learning_starts=10_000)
    service = TrainingService(config)
    records = stream(actor="flood", episodes=500, length=19)  # 10,000 records, never drained
    verdicts = [service.offer(r) for r in records]
    s = service.snapshot()
    assert s.ingest.queue_depth == 256 and s.ingest.queue_high_water == 256
    assert verdicts.count(None) == 256
    assert s.transitions_dropped == 10_000 - 256
    assert s.ingest.dropped_by_reason[QUEUE_FULL] + s.ingest.dropped_by_reason.get(EPISODE_BROKEN, 0) \
        == 10_000 - 256
