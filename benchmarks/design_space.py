"""Per-layer reuse factor and strategy chosen jointly with the partition, against one global setting.

For each model and objective, three planners price the same Graph with the same analytic
estimator, boards (PYNQ-Z2, cap 85 %) and performance model (``split4ml.plan.metrics``):

* **global**: the original work's way, one reuse factor and strategy for every layer. Every
  global setting hls4ml keeps for all compute layers (the reuse factors valid for every layer,
  under Latency and under Resource) is planned with split4ml's exact partition, and the best plan
  for the objective is kept (so this is the *best* global setting, not the first).
* **two-step**: split4ml before the design-space planner (``make_plan(..., joint=False)``): each
  layer takes the smallest valid reuse factor that fits one board alone, then the exact partition
  (with ``--boards``, free reuse factors raised to a common floor).
* **joint**: ``make_plan`` (default): per layer a few Pareto versions (reuse factor, strategy),
  chosen jointly with the cut points, exactly over those versions.

A last table plans the same models on a mixed cluster (4 x PYNQ-Z2 + 1 x ZCU102, free order)
against 5 x PYNQ-Z2.

Printed per row: bottleneck interval (us), throughput (samples/s), boards, latency (us), and
planning time (s; for *global*, the time to plan every global setting).

    python benchmarks/design_space.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_model, machine, write_results  # benchmarks/machine.py

from split4ml.boards import get_board
from split4ml.errors import Split4mlError
from split4ml.estimate import hls_rules
from split4ml.ir import COMPUTE_KINDS, Graph
from split4ml.plan.api import make_plan
from split4ml.plan.cluster import cluster_from_dict
from split4ml.plan.design import better, objective_key
from split4ml.settings import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))

CAP = 0.85


def models() -> list[tuple[str, Graph]]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from vs_enumeration import dense_chain

    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import deep_mlp, mnist_fcnn

    return [
        ("mnist_fcnn (784-16-32-10)", graph_from_keras(mnist_fcnn(seed=0))),
        ("deep_mlp (32-64-64-32-32-16-16-10)", graph_from_keras(deep_mlp(seed=0))),
        ("deep_mlp wide (64-128-128-64-64-10)", graph_from_keras(deep_mlp(widths=(128, 128, 64, 64), n_in=64,
                                                                           seed=0))),
        ("dense chain, 30 layers", dense_chain(30, seed=0)),
    ]


def global_settings(graph: Graph) -> list[tuple[int, str]]:
    """Every (reuse factor, strategy) hls4ml keeps unchanged for all compute layers."""
    out = []
    layers = [lyr for lyr in graph.body if lyr.kind in COMPUTE_KINDS]
    for s in STRATEGIES:
        common = set.intersection(*(set(hls_rules.valid_reuse_factors(lyr, s, "io_parallel")) for lyr in layers))
        out += [(rf, s) for rf in sorted(common)]
    return out


def row(plan: Any, seconds: float, **extra: Any) -> dict[str, Any]:
    m = plan.metrics
    return {"bottleneck_us": m.bottleneck_us, "throughput_per_s": m.throughput_per_s, "boards": plan.n_boards,
            "latency_us": m.latency_us, "plan_s": seconds, **extra}


def best_global(graph: Graph, board: Any, objective: str, max_boards: int | None) -> dict[str, Any] | None:
    t0 = time.perf_counter()
    best, best_key, best_setting = None, None, None
    for rf, s in global_settings(graph):
        try:
            p = make_plan(graph, model=graph.name, board=board, cap=CAP, objective=objective, max_boards=max_boards,
                          reuse_factor=rf, strategy=s)
        except Split4mlError:
            continue
        key = objective_key(p.metrics, p.n_boards, objective)
        if best is None or better(key, best_key):
            best, best_key, best_setting = p, key, f"RF {rf} {s}"
    if best is None:
        return None
    return row(best, time.perf_counter() - t0, setting=best_setting)


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--results", action="store_true", help="also write docs/results/design_space.md and .json")
    args = ap.parse_args(argv)
    started, t_all = machine(), time.perf_counter()
    pynq = get_board("pynq-z2")
    rows: list[dict[str, Any]] = []
    for name, g in models():
        fewest = make_plan(g, model=g.name, board=pynq, cap=CAP, objective="boards").n_boards
        scenarios = [("boards", None), ("throughput", fewest), ("throughput", 2 * fewest), ("latency", 2 * fewest)]
        for objective, limit in scenarios:
            base = {"model": name, "objective": objective, "max_boards": limit}
            glob = best_global(g, pynq, objective, limit)
            rows.append({**base, "planner": "global", **(glob or {"setting": None})})
            for planner, joint in (("two-step", False), ("joint", True)):
                try:
                    p, sec = timed(lambda g=g, o=objective, k=limit, joint=joint: make_plan(
                        g, model=g.name, board=pynq, cap=CAP, objective=o, max_boards=k, joint=joint))
                except Split4mlError as exc:
                    rows.append({**base, "planner": planner, "error": str(exc)[:80]})
                    continue
                rows.append({**base, "planner": planner, **row(p, sec)})
    cluster = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 4}, {"type": "zcu102", "count": 1}]})
    mixed: list[dict[str, Any]] = []
    for name, g in models():
        for objective in ("throughput", "boards"):
            for label, kw in (("5 x PYNQ-Z2", {"max_boards": 5}), ("4 x PYNQ-Z2 + 1 x ZCU102", {"cluster": cluster})):
                try:
                    p, sec = timed(lambda g=g, o=objective, kw=kw: make_plan(g, model=g.name, board=pynq, cap=CAP,
                                                                             objective=o, **kw))
                except Split4mlError as exc:
                    mixed.append({"model": name, "objective": objective, "boards_on_hand": label,
                                  "error": str(exc)[:80]})
                    continue
                mixed.append({"model": name, "objective": objective, "boards_on_hand": label,
                              "stage_boards": [st.board.name for st in p.stages], **row(p, sec)})
    if args.results:
        write_results("design_space", render(rows, mixed), {"rows": rows, "mixed": mixed}, started=started,
                      seconds=time.perf_counter() - t_all)
    if args.json:
        print(json.dumps({"rows": rows, "mixed": mixed}, indent=1))
        return 0
    print(f"machine: {platform.node()} | CPU: {cpu_model()} | {os.cpu_count()} cores | Python "
          f"{platform.python_version()} | numpy {np.__version__}")
    print(f"boards: pynq-z2, cap {CAP}, analytic estimator, io_parallel, ap_fixed<16,6>\n")
    print(render(rows, mixed))
    return 0


def render(rows: list[dict[str, Any]], mixed: list[dict[str, Any]]) -> str:
    """The two tables: the three planners on PYNQ-Z2 boards, then the mixed cluster."""
    out = ["| model | objective | planner | setting | bottleneck (µs) | samples/s | boards | latency (µs) | plan (s) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        obj = r["objective"] + (f", `--boards {r['max_boards']}`" if r["max_boards"] else "")
        if "error" in r:
            out.append(f"| {r['model']} | {obj} | {r['planner']} | – | infeasible | | | | |")
        elif r["planner"] == "global" and r.get("setting") is None:
            out.append(f"| {r['model']} | {obj} | global | none fits | infeasible | | | | |")
        else:
            out.append(f"| {r['model']} | {obj} | {r['planner']} | {r.get('setting', 'per layer')} | "
                       f"{r['bottleneck_us']:.2f} | {r['throughput_per_s']:,.0f} | {r['boards']} | "
                       f"{r['latency_us']:,.1f} | {r['plan_s']:.2f} |")
    out += ["", "| model | objective | boards on hand | stage boards | bottleneck (µs) | boards | latency (µs) | plan (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in mixed:
        if "error" in r:
            out.append(f"| {r['model']} | {r['objective']} | {r['boards_on_hand']} | infeasible | | | | |")
            continue
        used = ", ".join(f"{r['stage_boards'].count(b)} x {b}" for b in dict.fromkeys(r["stage_boards"]))
        out.append(f"| {r['model']} | {r['objective']} | {r['boards_on_hand']} | {used} | {r['bottleneck_us']:.2f} | "
                   f"{r['boards']} | {r['latency_us']:,.1f} | {r['plan_s']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
