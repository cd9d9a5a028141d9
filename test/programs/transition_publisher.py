"""A synthetic actor stream: publishes av_td3_msgs/Transition exactly as a policy node in train mode
does (one START, then STEPs that each bring one new 84x84 mono8 frame; seq +1 per message), with
optional faults, so the trainer can be tested without a simulator.

    transition_publisher.py --actor-id car1 --episodes 10 --episode-length 20 --rate 400 \
        [--gap-episodes 3,7] [--malformed-episodes 2,5] [--fault-step 5]

Each episode is START + `episode-length` STEPs (the last one truncated). In a --gap-episodes
episode the STEP number --fault-step is never sent (its seq is skipped: a lost message); in a
--malformed-episodes episode that STEP is sent malformed (cycling through NaN kinematics, inf reward,
an action out of [-1, 1], a wrong frame size, a truncated frame, a bad kind, a short kinematics
vector). Waits for --subscribers matched subscriptions before sending, and for every message to be
acknowledged before exiting. Prints one JSON line: what was sent.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rclpy
from av_td3_msgs.msg import Transition

from av_td3_ros.ros.qos import TRANSITIONS_QOS

MALFORMATIONS = (
    "nan_kinematics", "inf_reward", "action_out_of_range", "wrong_frame_size", "truncated_frame",
    "bad_kind", "short_kinematics",
)


def ids(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x.strip()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actor-id", default="car1")
    ap.add_argument("--topic", default="/av_td3/transitions")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--episode-length", type=int, default=20)
    ap.add_argument("--rate", type=float, default=400.0, help="messages/s; 0 = as fast as possible")
    ap.add_argument("--policy-version", type=int, default=0)
    ap.add_argument("--seq-start", type=int, default=0)
    ap.add_argument("--gap-episodes", type=ids, default=set())
    ap.add_argument("--malformed-episodes", type=ids, default=set())
    ap.add_argument("--fault-step", type=int, default=5)
    ap.add_argument("--subscribers", type=int, default=1)
    ap.add_argument("--match-timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rclpy.init()
    node = rclpy.create_node(f"transition_publisher_{args.actor_id}".replace("-", "_"))
    pub = node.create_publisher(Transition, args.topic, TRANSITIONS_QOS)  # the policy node's profile
    deadline = time.monotonic() + args.match_timeout
    while pub.get_subscription_count() < args.subscribers:
        if time.monotonic() > deadline:
            raise SystemExit(f"no subscriber on {args.topic} after {args.match_timeout} s")
        time.sleep(0.02)
    time.sleep(0.2)  # let the reliable endpoints finish matching both ways

    rng = np.random.default_rng(args.seed)
    frames = rng.integers(0, 256, size=(16, 84 * 84), dtype=np.uint8)
    frame_bytes = [f.tobytes() for f in frames]
    seq = args.seq_start
    sent = skipped = malformed = 0
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    next_time = time.monotonic()
    started = time.monotonic()

    def publish(msg: Transition) -> None:
        nonlocal next_time, sent
        if period:
            now = time.monotonic()
            if next_time > now:
                time.sleep(next_time - now)
            next_time = max(next_time + period, time.monotonic() - 10 * period)
        pub.publish(msg)
        sent += 1

    for episode in range(args.episodes):
        for step in range(args.episode_length + 1):
            msg = Transition()
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = args.actor_id
            msg.actor_id = args.actor_id
            msg.seq = seq
            msg.episode = episode
            msg.step = step
            msg.policy_version = args.policy_version
            msg.kind = Transition.KIND_START if step == 0 else Transition.KIND_STEP
            msg.frame_height = 84
            msg.frame_width = 84
            msg.frame = frame_bytes[(seq + episode) % len(frame_bytes)]
            msg.kinematics = (rng.standard_normal(23).astype(np.float32) * 5.0).tolist()
            if step > 0:
                msg.action = rng.uniform(-1.0, 1.0, size=2).astype(np.float32).tolist()
                msg.reward = float(rng.uniform(-1.0, 1.0))
                msg.truncated = step == args.episode_length
            seq += 1
            if step == args.fault_step and episode in args.gap_episodes:
                skipped += 1  # a lost message: its seq is never seen
                continue
            if step == args.fault_step and episode in args.malformed_episodes:
                kind = MALFORMATIONS[malformed % len(MALFORMATIONS)]
                malformed += 1
                if kind == "nan_kinematics":
                    msg.kinematics = [float("nan")] * 23
                elif kind == "inf_reward":
                    msg.reward = float("inf")
                elif kind == "action_out_of_range":
                    msg.action = [1.5, 0.0]
                elif kind == "wrong_frame_size":
                    msg.frame_height, msg.frame_width = 96, 96
                    msg.frame = bytes(96 * 96)
                elif kind == "truncated_frame":
                    msg.frame = bytes(84 * 84 - 100)
                elif kind == "bad_kind":
                    msg.kind = 7
                elif kind == "short_kinematics":
                    msg.kinematics = [0.0] * 5
            publish(msg)

    elapsed = time.monotonic() - started
    acked = pub.wait_for_all_acked(rclpy.duration.Duration(seconds=30))
    print(json.dumps({"actor_id": args.actor_id, "sent": sent, "skipped": skipped, "malformed": malformed,
                      "last_seq": seq - 1, "seconds": elapsed, "rate": sent / max(elapsed, 1e-9),
                      "acked": bool(acked)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
