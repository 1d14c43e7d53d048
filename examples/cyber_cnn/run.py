"""A convolutional phishing classifier on up to 5 PYNQ-Z2 boards: train, plan, build, verify, run (emulated).

The 72,650-parameter Conv1D network of ``model.py`` is trained on river's bundled ``Phishing``
data set (``data.py``: 1,000 pages to train, 250 held out; nothing is downloaded), then driven
through the same ``split4ml`` commands a user types:

    split4ml plan    OUT/cyber_cnn.keras --board pynq-z2 --boards 5 --no-joint --io-type io_parallel -o OUT/plan.yaml
    split4ml build   OUT/plan.yaml -o OUT/hls
    split4ml verify  OUT/plan.yaml --data OUT/test.npz --samples N
    split4ml run     OUT/plan.yaml --emulate --data OUT/test.npz --samples N
    split4ml report  OUT/plan.yaml --verify-json OUT/verify.json --run-json OUT/run.json -o OUT/report.html

Usage::

    python examples/cyber_cnn/run.py [-o build/cyber_cnn] [--samples 250] [--quick] [--json]

``--quick`` (used by the test suite) checks 100 pages and skips the HTML report; the model and
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
    """Train (or reuse) the model and write the held-out pages; model file, data file, facts."""
    import numpy as np
    from data import phishing_split  # examples/cyber_cnn/data.py
    from model import train_cyber_cnn  # examples/cyber_cnn/model.py

    x_train, y_train, x_test, y_test = phishing_split(seed=0)
    model_file = out / "cyber_cnn.keras"
    t0 = time.perf_counter()
    if model_file.is_file():
        log(f"using the trained model {model_file}")
    else:
        log(f"training the phishing CNN (72,650 parameters) on {len(x_train)} pages of river's Phishing set, "
            "30 epochs")
        train_cyber_cnn(model_file, x_train, y_train, epochs=30, seed=0)
    train_s = time.perf_counter() - t0
    data_file = out / "test.npz"
    np.savez(data_file, x=x_test, y=y_test)
    return model_file, data_file, {"train_samples": len(x_train), "test_samples": len(x_test),
                                   "train_s": round(train_s, 2)}


EXAMPLE = Example(name="cyber_cnn", unit="pages", default_samples=250, prepare=prepare,
                  description=__doc__.splitlines()[0], plan_args=("--no-joint", "--io-type", "io_parallel"))

if __name__ == "__main__":
    sys.exit(main(EXAMPLE))
