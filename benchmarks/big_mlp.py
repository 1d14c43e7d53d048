"""Plan the 16-500-500-500-500-500-5 MLP onto at most 25 PYNQ-Z2 boards (issue 3).

The model is ``split4ml.networks.deep_mlp(widths=(500,) * 5, n_in=16, n_out=5)`` (ReLU, softmax,
seeded weights, about a million parameters), every layer ``ap_fixed<16,6>`` with the Resource
strategy, planned for throughput. No 500-wide layer fits one PYNQ-Z2 alone, so the planner splits
them across boards. Prints the plan (boards, steps, splits, bottleneck) beside the lower bound on
the board count: the summed estimate of every board of the plan (board shells included) divided by
one board's capped capacity, per resource; the largest of these.

    python benchmarks/big_mlp.py [--boards 25] [--cap 0.85] [--objective throughput] [--seed 0] [--verify 200]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import time

import numpy as np
from machine import cpu_model, machine, write_results  # benchmarks/machine.py

from split4ml.boards import RESOURCES, get_board
from split4ml.estimate.base import Cost
from split4ml.ir import COMPUTE_KINDS
from split4ml.plan.api import make_plan

_LABEL = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram18": "BRAM18"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", type=int, default=25, help="at most this many boards")
    ap.add_argument("--board", default="pynq-z2", help="board name from the catalogue")
    ap.add_argument("--cap", type=float, default=0.85, help="resource cap per board")
    ap.add_argument("--objective", default="throughput", choices=["throughput", "latency", "boards"])
    ap.add_argument("--seed", type=int, default=0, help="seed of the model's weights")
    ap.add_argument("--verify", type=int, default=0, metavar="SAMPLES",
                    help="also verify the plan bit for bit on this many random samples (one hls4ml compile a board)")
    ap.add_argument("--results", action="store_true", help="also write docs/results/big_mlp.md and .json")
    args = ap.parse_args()
    started, t_all = machine(), time.perf_counter()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import deep_mlp

    graph = graph_from_keras(deep_mlp(widths=(500,) * 5, n_in=16, n_out=5, seed=args.seed))
    board = get_board(args.board)
    t0 = time.perf_counter()
    plan = make_plan(graph, model="big_mlp.keras", board=board, cap=args.cap, objective=args.objective,
                     max_boards=args.boards, strategy="Resource")
    elapsed = time.perf_counter() - t0

    print(f"machine: {platform.node()} | CPU: {cpu_model()} | Python {platform.python_version()} "
          f"| numpy {np.__version__}")
    print(f"model: 16-500-500-500-500-500-5 (relu, softmax), {graph.n_params:,} parameters, ap_fixed<16,6>, "
          f"Resource strategy; board {board.name}, cap {args.cap}, at most {args.boards} boards, "
          f"objective {args.objective}")
    print(f"planning time: {elapsed:.2f} s")
    print()
    print(f"{'step':>4} {'layers':<16} {'split':<14} {'boards':>6} {'reuse':>7} {'interval_us':>12} "
          f"{'max util':>9}")
    m = plan.metrics
    steps = []
    for st in plan.stages:
        if st.split is not None:
            split = f"{st.split.kind} x{st.split.parts}"
            rfs = sorted({sh.settings[sh.layers[0]].reuse_factor for sh in st.shards})
        else:
            split = "-" if st.merge is None else f"merge {st.merge}"
            rfs = sorted({st.settings[n].reuse_factor for n in st.layers if graph.layer(n).kind in COMPUTE_KINDS})
        steps.append({"step": st.index, "layers": [*st.tail, *st.layers], "split": split, "boards": st.n_boards,
                      "reuse": rfs, "interval_us": m.stage_interval_us[st.index],
                      "max_util": max(st.utilization().values())})
    for r in steps:
        reuse = "/".join(str(x) for x in r["reuse"]) or "-"
        print(f"{r['step']:>4} {','.join(r['layers']):<16} {r['split']:<14} {r['boards']:>6} {reuse:>7} "
              f"{r['interval_us']:>12.2f} {r['max_util']:>9.0%}")
    print()
    print(f"boards: {plan.n_boards} (pipeline steps: {plan.n_stages})")
    print(f"bottleneck: step {m.bottleneck_stage}, {m.bottleneck_us:.2f} us = {m.bottleneck_ii_cycles:,.0f} cycles "
          f"at {board.clock_mhz:g} MHz -> {m.throughput_per_s:,.0f} samples/s; latency {m.latency_us:,.1f} us")

    total = Cost()
    for st in plan.stages:
        for c in ([sh.cost for sh in st.shards] if st.split is not None else [st.cost]):
            total = total + c
    ratios = {r: float(getattr(total, r)) / board.capped(r, args.cap) for r in RESOURCES}
    worst = max(ratios, key=lambda r: ratios[r])
    bound = math.ceil(ratios[worst] - 1e-9)
    print("lower bound on boards (summed estimate of all boards / one board's capped capacity):")
    print("  " + "; ".join(f"{_LABEL[r]} {getattr(total, r):,.0f} / {board.capped(r, args.cap):,.0f} = "
                           f"{ratios[r]:.2f}" for r in RESOURCES))
    print(f"  -> at least {bound} boards ({_LABEL[worst]}: {ratios[worst]:.2f}); the plan uses {plan.n_boards}")
    bottleneck_step = plan.stages[m.bottleneck_stage]
    what = (f"{bottleneck_step.split.kind} x{bottleneck_step.split.parts} of {bottleneck_step.split.layer}"
            if bottleneck_step.split is not None else ",".join(bottleneck_step.layers))
    print(f"bottleneck step {m.bottleneck_stage}: {what}")
    verified = None
    if args.verify:
        import tempfile

        from split4ml.hls.csim import CACHE_ENV
        from split4ml.verify import random_inputs, verify_plan

        os.environ[CACHE_ENV] = cache = tempfile.mkdtemp(prefix="split4ml-bench-cache-")  # compile every board

        t1 = time.perf_counter()
        res = verify_plan(plan, graph, random_inputs(plan.build.input_precision, graph.input.output_shape,
                                                     args.verify, seed=0))
        shutil.rmtree(cache, ignore_errors=True)
        verified = {"bit_exact": res.bit_exact, "samples": res.samples, "mismatched_samples": res.mismatched_samples,
                    "max_abs_diff": res.max_abs_diff, "seconds": time.perf_counter() - t1}
        print(f"verify: {'bit-exact' if res.bit_exact else 'NOT bit-exact'} on {res.samples} random samples "
              f"({res.mismatched_samples} mismatched), {verified['seconds']:.0f} s")
    if args.results:
        figures = {"verify": verified, "parameters": graph.n_params, "boards": plan.n_boards, "steps": steps,
                   "bottleneck_us": m.bottleneck_us, "throughput_per_s": m.throughput_per_s,
                   "latency_us": m.latency_us, "batch": plan.batch, "planning_seconds": elapsed,
                   "lower_bound_boards": bound,
                   "ratios": {r: {"total": float(getattr(total, r)), "capped": board.capped(r, args.cap),
                                  "ratio": ratios[r]} for r in RESOURCES}}
        write_results("big_mlp", render(figures, board.name, args), figures, started=started,
                      seconds=time.perf_counter() - t_all)


def render(f: dict, board: str, args: argparse.Namespace) -> str:
    """The docs' table of the plan and the figures the text quotes."""
    out = ["| step | layers | split | boards | reuse factor | interval (µs) | fullest board |",
           "|---|---|---|---|---|---|---|"]
    for r in f["steps"]:
        split = r["split"].replace(" x", " × ") if r["split"] != "-" else "–"
        out.append(f"| {r['step']} | {', '.join(r['layers'])} | {split} | {r['boards']} | "
                   f"{'/'.join(str(x) for x in r['reuse']) or '–'} | {r['interval_us']:.2f} | {r['max_util']:.0%} |")
    worst = max(f["ratios"], key=lambda k: f["ratios"][k]["ratio"])
    others = ", ".join(f"{_LABEL[k]} {v['ratio']:.1f}" for k, v in f["ratios"].items() if k != worst)
    w = f["ratios"][worst]
    out += ["", f"- **{f['boards']} boards** in {len(f['steps'])} pipeline steps on at most {args.boards} "
            f"{board} boards (cap {args.cap:.0%}, objective {args.objective}): bottleneck {f['bottleneck_us']:.2f} µs "
            f"with frames of {f['batch']} samples, about {f['throughput_per_s']:,.0f} samples/s; latency "
            f"{f['latency_us'] / 1000:,.2f} ms.",
            f"- **Lower bound** (summed estimate of every board divided by one board's capped capacity): "
            f"{_LABEL[worst]} {w['total']:,.0f} / {w['capped']:,.0f} = {w['ratio']:.1f}, so at least "
            f"**{f['lower_bound_boards']} boards** ({others}).",
            f"- Planning took {f['planning_seconds']:.1f} s."]
    v = f.get("verify")
    if v:
        out.append(f"- `split4ml verify` of this plan on {v['samples']} random samples: "
                   f"{'**bit-exact**' if v['bit_exact'] else '**not bit-exact**'} ({v['mismatched_samples']} "
                   f"mismatched; {f['boards'] + 1} hls4ml C-simulations compiled and run in {v['seconds']:.0f} s).")
    return "\n".join(out)


if __name__ == "__main__":
    main()
