"""av-td3: the command-line front door.

    av-td3 demo [--task lap|traffic] [--minutes M] [--steps N] [--eval-episodes K] [--seed S] [--run-dir DIR]
    av-td3 drive --weights FILE [--episodes K] [--camera-view front|top] [--out drive.gif]
    av-td3 export --weights FILE.safetensors --onnx FILE.onnx [--norm layer|none]
    av-td3 keys --out DIR [--name trainer] | --dds-keystore DIR
    av-td3 sign --key trainer.key WEIGHTS [--out SIGNED] [--cnn-norm layer|none] [--version N]
    av-td3 release --key operator.key --node /policy_node [--stop-id N] [--timeout S]

`demo` trains in the embedded simulator through the real nodes and reports (av_td3_ros.demo.run);
`drive` runs a weights file deterministically (deploy mode: no noise, no limiter) in the embedded
simulator and saves what its camera sees (by default the front camera, rgb_front of
config/objects.json) as an animated GIF; `export` writes the policy (encoder + actor) as an ONNX
file for onnxruntime on a vehicle computer (av_td3_ros.deploy.onnx_policy). `keys` makes an
ed25519 key pair for signed
weights (the trainer's `signing_key`, the policy nodes' `trusted_keys`), or with --dds-keystore a
DDS Security keystore (openssl: CA, enclaves, governance, permissions); `sign` signs a weights
file (metadata and tensors) so that a policy node with `weights_trust: signed` loads it;
`release` ends a deploy node's latched stop with a token signed by an operator key from the node's
`release_keys` (av_td3_ros.ros.release_client).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from av_td3_ros.demo.tasks import DEMO_TASKS


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _hold_ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 100.0:  # sim_node's hold_update_ratio range
        raise argparse.ArgumentTypeError(f"must be in [0, 100], got {text}")
    return value


def _key_values(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition(":=")
        if not sep or not key:
            raise SystemExit(f"av-td3: expected key:=value, got {item!r}")
        out[key] = value
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="av-td3", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="drive and learn in the embedded simulator, then evaluate and report")
    demo.add_argument("--task", choices=sorted(DEMO_TASKS), default="lap",
                      help="lap: the empty racetrack; traffic: slow IDM cars only the camera shows "
                           "(av_td3_ros/demo/tasks.py; --sim-param / --trainer-param override its values)")
    demo.add_argument("--minutes", type=_positive(float), default=12.0, help="training budget [min] (12)")
    demo.add_argument("--steps", type=int, default=0, help="environment-step budget; 0 = time only")
    demo.add_argument("--eval-episodes", type=_positive(int), default=10, help="evaluation episodes (10)")
    demo.add_argument("--episode-steps", type=_positive(int), default=300, help="episode step limit (300)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--batch-size", type=_positive(int), default=128)
    demo.add_argument("--learning-starts", type=_positive(int), default=1000)
    demo.add_argument("--publish-every", type=_positive(int), default=100)
    demo.add_argument(
        "--hold-ratio", type=_hold_ratio, default=0.0, metavar="R",
        help="the simulator waits for the learner so the run keeps R updates per env step (0 = off: "
             "the simulator runs as fast as the policy answers)",
    )
    demo.add_argument(
        "--unstabilized",
        action="store_true",
        help="the design's failing setup: no LayerNorm, weight decay, clipping, LR cut or limit",
    )
    demo.add_argument("--run-dir", default="", help="run folder (default runs/demo-<date>-<time>)")
    demo.add_argument("--progress-every", type=_positive(float), default=5.0, help="seconds between lines")
    for node in ("trainer", "policy", "sim"):
        demo.add_argument(
            f"--{node}-param",
            action="append",
            default=[],
            metavar="KEY:=VALUE",
            help=f"extra {node} node parameter (repeatable)",
        )
    drive = sub.add_parser("drive", help="deploy a weights file in the embedded simulator and save a GIF")
    drive.add_argument("--weights", required=True, help="safetensors policy weights (from a demo run)")
    drive.add_argument("--episodes", type=_positive(int), default=1)
    drive.add_argument("--episode-steps", type=_positive(int), default=300)
    drive.add_argument("--seed", type=int, default=0)
    drive.add_argument("--camera-view", choices=("front", "top"), default="front",
                       help="the camera the policy was trained with (front: rgb_front, the default)")
    drive.add_argument("--out", default="", help="GIF path (default runs/drive-<date>-<time>.gif)")
    export = sub.add_parser("export", help="export a weights file as an ONNX policy for onnxruntime")
    export.add_argument("--weights", required=True, help="safetensors policy weights")
    export.add_argument("--onnx", required=True, help="output .onnx path (written atomically)")
    export.add_argument("--norm", choices=("layer", "none"), default="layer",
                        help="the CNN's normalization the weights were trained with (layer)")
    keys = sub.add_parser("keys", help="make an ed25519 key pair for signed weights")
    what = keys.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="folder for <name>.key (0600) and <name>.key.pub")
    what.add_argument("--dds-keystore", help="make a DDS Security keystore (SROS2 layout) in this folder")
    keys.add_argument("--name", default="trainer", help="file name stem (trainer)")
    release = sub.add_parser("release", help="end a policy node's latched stop with a signed release")
    release.add_argument("--key", required=True, help="the operator's ed25519 private key file")
    release.add_argument("--node", required=True, help="the policy node's fully qualified name")
    release.add_argument("--stop-id", type=int, help="the stop to release (default: the node's current "
                         "stop, read from /diagnostics)")
    release.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds to wait (10)")
    sign = sub.add_parser("sign", help="sign a safetensors weights file (metadata and tensors)")
    sign.add_argument("weights", help="safetensors policy weights")
    sign.add_argument("--key", required=True, help="ed25519 private key file (from av-td3 keys)")
    sign.add_argument("--out", default="", help="signed file (default: replace WEIGHTS, atomically)")
    sign.add_argument("--cnn-norm", choices=("layer", "none"), default=None,
                      help="the CNN normalization, for a file that does not name it")
    sign.add_argument("--version", type=_positive(int), default=None,
                      help="the weights version, for a file that does not state it")
    return parser


def demo_options(args: argparse.Namespace):
    """DemoOptions of `av-td3 demo ...`: the task's parameters under the user's --sim-param and
    --trainer-param."""
    from av_td3_ros.demo.run import DemoOptions

    return DemoOptions(
        minutes=args.minutes,
        steps=args.steps,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        episode_steps=args.episode_steps,
        batch_size=args.batch_size,
        learning_starts=args.learning_starts,
        publish_every=args.publish_every,
        hold_ratio=args.hold_ratio,
        run_dir=args.run_dir,
        stabilized=not args.unstabilized,
        progress_every=args.progress_every,
        trainer={**DEMO_TASKS[args.task].trainer, **_key_values(args.trainer_param)},
        policy=_key_values(args.policy_param),
        sim={**DEMO_TASKS[args.task].sim, **_key_values(args.sim_param)},
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from av_td3_ros.demo.run import run_demo

        sys.exit(run_demo(demo_options(args)))
    if args.command == "keys":
        if args.dds_keystore:
            sys.exit(make_dds_keystore(Path(args.dds_keystore)))
        sys.exit(make_keys(Path(args.out), args.name))
    if args.command == "release":
        from av_td3_ros.ros.release_client import release_stop

        sys.exit(release_stop(args.node, args.key, args.stop_id, args.timeout))
    if args.command == "sign":
        sys.exit(sign(Path(args.weights), Path(args.key), Path(args.out or args.weights), args.cnn_norm,
                      args.version))
    if args.command == "export":
        sys.exit(export_onnx_file(args.weights, args.onnx, args.norm))
    sys.exit(drive(args.weights, args.episodes, args.episode_steps, args.seed, args.out, args.camera_view))


def make_keys(folder: Path, name: str) -> int:
    from av_td3_ros.learning.signing import KeyFileError, generate_key_pair

    private = folder / f"{name}.key"
    try:
        key = generate_key_pair(private)
    except KeyFileError as exc:
        print(f"av-td3 keys: {exc}", file=sys.stderr)
        return 2
    print(f"key id {key.key_id}\n  private (keep on the trainer only, 0600): {private}\n"
          f"  public (give to every policy node):      {private}.pub\n"
          f"trainer_node: -p signing_key:={private}\n"
          f"policy_node:  -p weights_trust:=signed -p \"trusted_keys:=[{private}.pub]\"")
    return 0


def make_dds_keystore(root: Path) -> int:
    from av_td3_ros.dds_security import KeystoreError, create_keystore

    try:
        enclaves = create_keystore(root)
    except KeystoreError as exc:
        print(f"av-td3 keys: {exc}", file=sys.stderr)
        return 2
    print(f"DDS Security keystore {root}: enclaves {', '.join(enclaves)}\n"
          f"  ROS_SECURITY_ENABLE=true ROS_SECURITY_STRATEGY=Enforce ROS_SECURITY_KEYSTORE={root.resolve()}\n"
          f"  and per process --ros-args --enclave <enclave> (or ROS_SECURITY_ENCLAVE_OVERRIDE);\n"
          f"  docker compose -f docker/compose.yaml -f docker/compose.security.yaml ...")
    return 0


def sign(weights: Path, key_path: Path, out: Path, cnn_norm: str | None, version: int | None) -> int:
    """Validate WEIGHTS as a policy (never sign what a node would refuse), add what it does not
    state (--cnn-norm, --version; never overwrite what it states), sign, write atomically."""
    import hashlib

    from av_td3_ros.atomic_file import write_atomic
    from av_td3_ros.driving.runtime import PolicyRuntime
    from av_td3_ros.learning.signing import (
        KeyFileError,
        SignatureRejected,
        load_signing_key,
        read_header,
        sign_payload,
        with_metadata,
    )
    from av_td3_ros.learning.weights import WeightsPayload, WeightsRejected

    def fail(text: str) -> int:
        print(f"av-td3 sign: {text}", file=sys.stderr)
        return 2

    try:
        key = load_signing_key(key_path)
        payload = weights.read_bytes()
        meta = read_header(payload).metadata
    except (KeyFileError, SignatureRejected) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot read {weights}: {exc.strerror}")
    added = {}
    for name, given in (("cnn_norm", cnn_norm), ("version", version)):
        if given is None:
            if name not in meta:
                return fail(f"{weights} does not state its {name}; pass --{name.replace('_', '-')}")
        elif name in meta and meta[name] != str(given):
            return fail(f"{weights} states {name} {meta[name]!r}; refusing to change it to {given!r}")
        else:
            added[name] = str(given)
    payload = with_metadata(payload, added)
    try:
        runtime = PolicyRuntime()  # trust any: the content is checked here, the signature is ours to add
        decoded = runtime.decode(WeightsPayload(payload, hashlib.sha256(payload).hexdigest()))
        runtime.prepare(decoded, str(weights))  # the trial run: finite actions
    except WeightsRejected as exc:
        return fail(f"{weights} is not a policy a node would load: {exc}")
    write_atomic(out, sign_payload(payload, key))
    print(f"signed {out}: version {decoded.version}, cnn_norm {decoded.cnn_norm}, key id {key.key_id}")
    return 0


def drive(weights: str, episodes: int, episode_steps: int, seed: int, out: str,
          camera_view: str = "front") -> int:
    import numpy as np
    from PIL import Image

    from av_td3_ros.demo.evaluation import evaluate
    from av_td3_ros.driving.runtime import PolicyRuntime, WeightsRejected, load_weights_file
    from av_td3_ros.perception.reward import RewardConfig
    from av_td3_ros.sim.simulator import SimConfig

    runtime = PolicyRuntime()
    try:
        runtime.install(runtime.prepare(load_weights_file(weights, runtime), weights))
    except WeightsRejected as exc:
        print(f"av-td3 drive: {exc}", file=sys.stderr)
        return 2
    frames: list = []

    # Every 2nd frame at half size (400x300 of the front camera's 800x600): a 300-step episode is a
    # GIF of a few MB.
    def keep(state) -> None:
        if state.episode_step % 2 == 0:
            rgb = np.ascontiguousarray(state.image[::2, ::2, 2::-1])
            frames.append(Image.fromarray(rgb))

    result = evaluate(
        lambda f, k: runtime.act(f, k)[0],
        f"TD3 v{runtime.version}",
        episodes=episodes,
        seed=seed,
        reward=RewardConfig(max_episode_steps=episode_steps),
        sim_config=SimConfig(camera_view=camera_view),
        on_frame=keep,
    )
    path = Path(out or f"runs/drive-{time.strftime('%Y%m%d-%H%M%S')}.gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=400, loop=0)
    for i, e in enumerate(result.episodes):
        print(
            f"episode {i}: {e.length} steps, return {e.ret:.2f}, mean speed {e.mean_speed:.1f} m/s, "
            f"collisions {e.collisions}, ended by {e.end}"
        )
    print(f"camera view: {path} ({len(frames)} frames)")
    return 0


def export_onnx_file(weights: str, onnx_path: str, norm: str) -> int:
    from av_td3_ros.deploy.onnx_policy import (
        INPUT_FRAMES,
        INPUT_KINEMATICS,
        NORMALIZATION,
        OUTPUT_ACTION,
        export_onnx,
    )
    from av_td3_ros.driving.runtime import WeightsRejected

    try:
        report = export_onnx(weights, onnx_path, norm=norm)
    except WeightsRejected as exc:
        print(f"av-td3 export: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"av-td3 export: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {report.path} ({report.bytes / 1e6:.1f} MB, opset {report.opset}) from weights version "
        f"{report.version} (sha256 {report.weights_sha256[:12]})\n"
        f"  inputs: {INPUT_FRAMES} uint8 [batch, 4, 84, 84], {INPUT_KINEMATICS} float32 [batch, 23]; "
        f"output: {OUTPUT_ACTION} float32 [batch, 2]\n"
        f"  normalization: {NORMALIZATION}\n"
        f"  onnxruntime vs torch on the check inputs: max |difference| {report.max_abs_difference:.2e}"
    )
    return 0


if __name__ == "__main__":
    main()
