"""How the DAG partitioner plans ResNet-style models (skip connections) onto PYNQ-Z2 boards.

For ``residual_mlp`` with each number of residual blocks given (Dense stem, blocks of
Dense-Dense-Add-ReLU, Dense head and softmax; width 16, analytic estimator, cap 85 %) and each
objective, plans it with ``make_plan`` (each layer's reuse factor and strategy chosen jointly with
the DAG partition) and prints the stages, the estimated bottleneck and latency, the joint
optimiser's own time (``partition_graph`` with the units' versions at the plan's batch, best of
``--repeat``), what decided (these models' units run in one forced order: the chain DP, or CP-SAT
where the DP gives up) and the whole ``make_plan`` time; ``--two-step`` plans the older way
(smallest reuse factor per layer, then the partition) for comparison.

    python benchmarks/dag_planner.py --blocks 2 4 6 --boards 3 8
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from split4ml.plan.dag import import_cpsat_first  # noqa: E402

import_cpsat_first()  # OR-Tools before TensorFlow (google/or-tools#3230)

from machine import cpu_model, machine, md_table, seconds_text, write_results  # noqa: E402  (benchmarks/machine.py)

from split4ml.boards import get_board  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.networks import residual_mlp  # noqa: E402
from split4ml.plan.api import get_estimator, make_plan  # noqa: E402
from split4ml.plan.dag import graph_versions, partition_graph  # noqa: E402
from split4ml.plan.planfile import OBJECTIVES  # noqa: E402
from split4ml.plan.reuse import choose_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--boards", type=int, nargs="+", default=[0], help="board limits to try (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--two-step", action="store_true", help="per-layer reuse factors first (joint=False)")
    ap.add_argument("--results", action="store_true", help="also write docs/results/dag_planner.md and .json")
    args = ap.parse_args()
    started = machine()
    t_all = time.perf_counter()
    rows: list[dict] = []
    board = get_board("pynq-z2")
    est = get_estimator("analytic")
    print(f"# {cpu_model()}, Python {platform.python_version()}")
    for blocks in args.blocks:
        graph = graph_from_keras(residual_mlp(blocks=blocks, width=args.width, seed=0))
        n_units, n_layers = len(graph.units()), len(graph.body)
        print(f"\nresidual_mlp blocks={blocks} width={args.width}: {len(graph.units())} units, "
              f"{len(graph.body)} layers")
        for limit in args.boards:
            max_boards = limit or None
            for objective in OBJECTIVES:
                t0 = time.perf_counter()
                plan = make_plan(graph, model="resnet.keras", board=board, objective=objective,
                                 max_boards=max_boards, joint=not args.two_step)
                base = choose_settings(graph, board, plan.cap, est, plan.build)
                versions = None if args.two_step else graph_versions(graph, base, est, plan.build, board, plan.cap)[0]
                plan_s = time.perf_counter() - t0
                best = float("inf")
                part = None
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    part, _ = partition_graph(graph, base if versions else plan.settings, est, plan.build, board,
                                              plan.cap, objective=objective, max_boards=max_boards, versions=versions,
                                              batch=plan.batch)
                    best = min(best, time.perf_counter() - t0)
                assert part is not None
                m = plan.metrics
                stages = " | ".join(",".join(st.layers) for st in plan.stages)
                print(f"  boards<={limit or '-'} {objective:10s}: {len(plan.stages)} boards, bottleneck "
                      f"{m.bottleneck_us:.3f} us ({m.throughput_per_s:,.0f}/s), latency {m.latency_us:,.1f} us; "
                      f"optimiser {best * 1000:.0f} ms ({part.solver}, {part.n_solves} CP-SAT solves, "
                      f"{'optimal' if part.optimal else 'NOT proven optimal'}), make_plan {plan_s:.1f} s")
                print(f"      {stages}")
                rows.append({"blocks": blocks, "units": n_units, "layers": n_layers, "max_boards": max_boards,
                             "objective": objective, "boards": len(plan.stages), "batch": plan.batch,
                             "bottleneck_us": m.bottleneck_us, "latency_us": m.latency_us,
                             "optimiser_s": best, "cpsat_solves": part.n_solves, "optimal": part.optimal,
                             "decided_by": part.solver, "plan_optimal": bool(plan.optimality and plan.optimality.optimal),
                             "make_plan_s": plan_s, "stages": [list(st.layers) for st in plan.stages]})
    if args.results:
        way = "two-step (`--two-step`)" if args.two_step else "joint"
        table = md_table(
            ["blocks (units / layers)", "boards allowed", "objective", "boards", "bottleneck (µs)", "latency (µs)",
             "optimiser", "decided by", "proven optimal", "`make_plan`"],
            [[f"{r['blocks']} ({r['units']} / {r['layers']})", r["max_boards"] or "any", r["objective"], r["boards"],
              f"{r['bottleneck_us']:.3f}", f"{r['latency_us']:,.1f}", seconds_text(r["optimiser_s"]),
              "chain DP" if r["cpsat_solves"] == 0 else "CP-SAT",
              "yes" if r["plan_optimal"] else "**no**", seconds_text(r["make_plan_s"])] for r in rows])
        text = (f"{table}\n\n{way} planning of `residual_mlp` (width {args.width}) on PYNQ-Z2 boards. *Optimiser*: "
                f"the DAG partitioner alone at the plan's batch, best of {args.repeat}; *decided by*: the chain DP "
                "(these models' units run in one forced order) or CP-SAT, where the DP gives up; *proven optimal*: "
                "what the plan says; *`make_plan`*: the whole default path, once.")
        write_results("dag_planner" + ("_two_step" if args.two_step else ""), text,
                      {"rows": rows, "width": args.width, "two_step": args.two_step}, started=started,
                      seconds=time.perf_counter() - t_all)


if __name__ == "__main__":
    main()
