"""The demo's tasks: sim_node and trainer_node parameter sets, under any `--sim-param` /
`--trainer-param` the user adds.

    lap      the empty racetrack (config/sim.yaml as it is). Solvable from the route waypoints
             alone: the camera adds nothing there (docs/benchmarks.md section 10).
    traffic  6 IDM cars at 3-5 m/s, random starts, and the episode ends on a collision. The ego
             drives ~10.5 m/s, so a car that does not see them collides unless it crawls
             everywhere: a blind pure-pursuit driver at 10 m/s collides in 18 of 20 episodes. Only
             the camera shows another car; nothing in the 23 kinematics does. Trained without
             random-shift augmentation (td3.augment_pad 0): on this task, 15k env steps x 3 seeds,
             it learned to brake for the cars on 2 of 3 seeds without the shift and on 0 of 3
             with it (docs/benchmarks.md section 11), the opposite of the empty track. And its
             CNN passes in float32 (td3.cnn_precision): in bfloat16 the same 3 seeds learned it
             on 0 of 3 (two learned to stop; section 11g), while on the empty track bf16 learned
             like float32.

Values are strings, as `--sim-param KEY:=VALUE` gives them (YAML, like `ros2 run -p`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoTask:
    """Parameter overrides of one task: sim_node's and trainer_node's."""

    sim: dict[str, str] = field(default_factory=dict)
    trainer: dict[str, str] = field(default_factory=dict)


DEMO_TASKS: dict[str, DemoTask] = {
    "lap": DemoTask(),
    "traffic": DemoTask(
        sim={"traffic": "6", "traffic_speed": "[3.0, 5.0]", "random_start": "true"},
        trainer={"td3.augment_pad": "0", "td3.cnn_precision": "float32"},
    ),
}
