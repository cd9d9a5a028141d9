"""What signed weights cost: signing in the trainer, verifying in a policy node (no DDS).

    PYTHONPATH=. .venv/bin/python bench/weights_signing.py [--repeats 30]

On the full policy payload (NatureCNN + actor MLP, ~7.7 MB of float32): encode (the codec),
sign_payload (trainer side), verify_payload (policy side), and PolicyRuntime.decode + prepare
under `weights_trust: any` and `signed` — the difference is what signing adds to a swap.
One torch thread, as a policy node runs.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from av_td3_ros.driving.runtime import PolicyRuntime
from av_td3_ros.learning import signing
from av_td3_ros.learning.weights import WeightsPayload, encode_policy_weights, policy_metadata
from av_td3_ros.model import PolicyNetwork


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _line(name: str, ms: list[float]) -> str:
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    return f"  {name:<38} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (n={len(ms)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    state = PolicyNetwork().state_dict()
    key = signing.generate_key_pair(Path(tempfile.mkdtemp()) / "bench.key")
    trusted = {key.key_id: key.public_key}
    meta = policy_metadata(1, 0.6, 100, cnn_norm="layer", max_action=1.0)
    payload = encode_policy_weights(state, meta)
    signed = signing.sign_payload(payload, key)
    extra = len(signed) - len(payload)
    print(f"policy payload {len(payload) / 1e6:.2f} MB, signed {extra:+d} bytes of metadata")
    print(_line("encode (codec, trainer)", _time(lambda: encode_policy_weights(state, meta), args.repeats)))
    print(_line("sign_payload (trainer)", _time(lambda: signing.sign_payload(payload, key), args.repeats)))
    print(_line("verify_payload (policy node)", _time(lambda: signing.verify_payload(signed, trusted),
                                                       args.repeats)))
    print(_line("sha256 of the payload (for scale)", _time(lambda: hashlib.sha256(signed).digest(),
                                                            args.repeats)))
    for trust, data in (("any", payload), ("signed", signed)):
        runtime = PolicyRuntime(trust=trust, trusted_keys=trusted if trust == "signed" else None)
        weights = WeightsPayload(data, hashlib.sha256(data).hexdigest(), 1, 0.6, 100)

        def swap(runtime=runtime, weights=weights):
            runtime.prepare(runtime.decode(weights), "bench")

        print(_line(f"decode + prepare, weights_trust {trust}", _time(swap, args.repeats)))


if __name__ == "__main__":
    main()
