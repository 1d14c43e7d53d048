"""A ResNet-style MLP (two residual blocks) on 5 PYNQ-Z2 boards: train, plan, build, verify, run (emulated).

The model (:func:`split4ml.networks.residual_mlp`: 64 -> stem 16 -> two residual blocks of two Dense
layers each, whose input is added back by an ``Add`` skip connection -> 10 -> softmax; 2,298
parameters) is trained on scikit-learn's bundled 8x8 digits (1,438 to train, 359 held out; nothing
is downloaded), then driven through the same ``split4ml`` commands a user types:

    split4ml plan    OUT/residual_mlp.keras --board pynq-z2 --boards 5 --stages 5 -o OUT/plan.yaml
    split4ml build   OUT/plan.yaml -o OUT/hls
    split4ml verify  OUT/plan.yaml --data OUT/test.npz --samples N
    split4ml run     OUT/plan.yaml --emulate --data OUT/test.npz --samples N
    split4ml report  OUT/plan.yaml --verify-json OUT/verify.json --run-json OUT/run.json -o OUT/report.html

The planner (CP-SAT over the graph's units) places the layers on exactly 5 boards (``--stages 5``:
its throughput optimum alone needs only 2); a skip tensor that must reach a later board is sent on
every link up to it (the boards between forward it in firmware).

Usage::

    python examples/resnet_digits/run.py [-o build/resnet_digits] [--samples 359] [--quick] [--json]

Exits 0 only if the plan uses 5 boards and both the chained C-simulation and the emulated run are
bit-exact against the whole model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/common.py
from common import Example, main  # noqa: E402


def prepare(out: Path, log: Any) -> tuple[Path, Path, dict[str, Any]]:
    """Train (or reuse) the model and write the held-out digits; model file, data file, facts."""
    import numpy as np

    from split4ml.networks import digits_split, train_residual_mlp

    x_train, _, x_test, y_test = digits_split(seed=0)
    model_file = out / "residual_mlp.keras"
    t0 = time.perf_counter()
    if model_file.is_file():
        log(f"using the trained model {model_file}")
    else:
        log(f"training the residual MLP (2 residual blocks) on {len(x_train)} scikit-learn digits, 30 epochs")
        model, info = train_residual_mlp(epochs=30, seed=0)
        model.save(model_file)
        log(f"float test accuracy {info['test_accuracy']:.1%}")
    train_s = time.perf_counter() - t0
    data_file = out / "test.npz"
    np.savez(data_file, x=x_test, y=y_test)
    return model_file, data_file, {"train_samples": len(x_train), "test_samples": len(x_test),
                                   "train_s": round(train_s, 2)}


EXAMPLE = Example(name="resnet_digits", unit="digits", default_samples=359, prepare=prepare,
                  description=__doc__.splitlines()[0], plan_args=("--stages", "5"))

if __name__ == "__main__":
    sys.exit(main(EXAMPLE))
