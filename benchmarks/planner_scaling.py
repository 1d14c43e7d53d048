"""How fast the planner is on long chains: the default path, and the partitioner alone.

1. **The default path** (what ``split4ml plan`` runs): a seeded random MLP of ``--units`` Dense ReLU
   layers (widths drawn from ``--widths``, 64 inputs, 10 outputs), built directly as split4ml's graph
   (no Keras), planned by ``make_plan`` for every objective onto at most ``--boards`` boards: each
   layer's reuse factor and strategy chosen jointly with the cuts (``plan/joint.py``), the batch
   chosen for the objective (two solves), optional intra-layer splits. Prints the time of each
   objective, the plan, and whether it is proven optimal.

2. **The partitioner alone** (``--partitioner``): a seeded random chain of Dense-like units (widths
   16..256, a reuse factor per layer, 16-bit weights: one DSP per multiplier, BRAM for the weights of
   layers with reuse factor > 1, ii = reuse factor, 2 bytes per output value) timed with
   ``partition_chain`` (every unit's settings fixed) onto at most ``--boards`` boards (or exactly
   that many with ``--exact``).

    python benchmarks/planner_scaling.py --units 100 --boards 64 --repeat 3
    python benchmarks/planner_scaling.py --units 500 --widths 8,16,32 --boards 64 --repeat 1
    python benchmarks/planner_scaling.py --partitioner --units 500 --boards 64 --repeat 3
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from typing import Any

import numpy as np
from machine import cpu_model, machine, md_table, seconds_text, write_results  # benchmarks/machine.py

from split4ml.boards import get_board
from split4ml.estimate.base import Cost
from split4ml.plan.chain import OBJECTIVES
from split4ml.plan.partition import partition_chain


def random_chain(n_units: int, seed: int) -> tuple[list[Cost], float, list[float], list[str]]:
    """Costs, input bytes, output bytes and names of a random chain of Dense-like layers."""
    rng = np.random.default_rng(seed)
    widths = [16, 32, 64, 128, 256]
    n_in = int(rng.choice(widths))
    bytes_in = 2.0 * n_in
    costs, bytes_out, names = [], [], []
    for k in range(n_units):
        n_out = int(rng.choice(widths))
        n_mult = n_in * n_out
        # a reuse factor that leaves 4..40 multipliers, as a planner would pick for a small board
        target = int(rng.integers(4, 41))
        rf = 1 << max(0, math.ceil(math.log2(n_mult / target)))
        mults = math.ceil(n_mult / rf)
        bram = math.ceil(n_mult * 16 / 18432) if rf > 1 else 0
        costs.append(Cost(lut=25.0 * mults + 20.0 * n_out, ff=30.0 * mults + 16.0 * n_out, dsp=float(mults),
                          bram18=float(bram), latency_cycles=float(rf + math.ceil(math.log2(n_in)) + 3),
                          ii_cycles=float(rf)))
        bytes_out.append(2.0 * n_out)
        names.append(f"dense_{k}")
        n_in = n_out
    return costs, bytes_in, bytes_out, names


def random_mlp(n_units: int, widths: list[int], seed: int) -> Any:
    """A split4ml graph of ``n_units`` Dense layers (ReLU, the last 10 wide with softmax), 64 inputs."""
    from split4ml.ir import Graph, Layer

    rng = np.random.default_rng(seed)
    sizes = [64, *(int(w) for w in rng.choice(widths, size=n_units - 1)), 10]
    layers = [Layer(name="x", kind="Input", input_shape=(64,), output_shape=(64,))]
    prev = "x"
    for k, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        last = k == n_units - 1
        name = f"dense_{k}"
        layers.append(Layer(name=name, kind="Dense", input_shape=(a,), output_shape=(b,), inputs=(prev,),
                            activation=None if last else "relu", params={"units": b, "use_bias": True},
                            weights={"kernel": rng.uniform(-0.5, 0.5, (a, b)), "bias": np.zeros(b)}))
        prev = name
    layers.append(Layer(name="softmax", kind="Activation", input_shape=(10,), output_shape=(10,), inputs=(prev,),
                        activation="softmax"))
    return Graph(name=f"mlp{n_units}", layers=tuple(layers), outputs=("softmax",))


def default_path(args: argparse.Namespace) -> None:
    from split4ml.plan.api import make_plan
    from split4ml.plan.joint import _TABLES

    board = get_board(args.board)
    widths = [int(w) for w in args.widths.split(",")]
    graph = random_mlp(args.units, widths, args.seed)
    print(f"machine: {cpu_model()} | {os.cpu_count()} cores | Python {platform.python_version()} "
          f"| numpy {np.__version__}")
    print(f"model: {args.units} Dense layers, widths {widths} (seed {args.seed}); board {board.name}, cap {args.cap}, "
          f"{'exactly' if args.exact else 'at most'} {args.boards} boards; default path (make_plan, joint)")
    print(f"{'objective':<11} {'boards':>6} {'batch':>6} {'bottleneck_us':>14} {'latency_us':>12} {'best_s':>8} "
          f"{'mean_s':>8}  proven")
    started, t_all, rows = machine(), time.perf_counter(), []
    for objective in OBJECTIVES:
        times = []
        for _ in range(args.repeat):
            _TABLES.clear()  # every run starts cold: no stage tables from an earlier plan
            t0 = time.perf_counter()
            plan = make_plan(graph, model="random_mlp.keras", board=board, cap=args.cap, objective=objective,
                             max_boards=None if args.exact else args.boards,
                             n_stages=args.boards if args.exact else None)
            times.append(time.perf_counter() - t0)
        m, opt = plan.metrics, plan.optimality
        proven = "optimal" if opt is not None and opt.optimal else f"no ({opt.solver if opt else '?'})"
        print(f"{objective:<11} {plan.n_boards:>6} {plan.batch:>6} {m.bottleneck_us:>14.3f} {m.latency_us:>12.1f} "
              f"{min(times):>8.3f} {sum(times) / len(times):>8.3f}  {proven}")
        why = "" if opt is None or opt.optimal else opt.solver
        rows.append({"objective": objective, "boards": plan.n_boards, "batch": plan.batch,
                     "bottleneck_us": m.bottleneck_us, "latency_us": m.latency_us, "best_s": min(times),
                     "mean_s": sum(times) / len(times), "optimal": bool(opt and opt.optimal), "why_not": why})
    if args.results:
        table = md_table(["objective", "boards", "batch", "bottleneck", "latency", "time (best)", "proven optimal"],
                         [[r["objective"], r["boards"], r["batch"], f"{r['bottleneck_us']:.3f} µs",
                           f"{r['latency_us']:,.1f} µs", seconds_text(r["best_s"]),
                           "yes" if r["optimal"] else f"no{': ' + r['why_not'] if r['why_not'] else ''}"]
                          for r in rows])
        text = (f"{table}\n\nA seeded random MLP of {args.units} Dense ReLU layers (widths {args.widths}, seed "
                f"{args.seed}) planned by `make_plan` on {'exactly' if args.exact else 'at most'} {args.boards} "
                f"{board.name} boards (cap {args.cap:.0%}); best of {args.repeat} cold runs per objective.")
        write_results(f"planner_scaling_{args.units}", text,
                      {"rows": rows, "units": args.units, "widths": widths, "boards": args.boards, "exact": args.exact},
                      started=started, seconds=time.perf_counter() - t_all)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100, help="number of units in the chain")
    ap.add_argument("--boards", type=int, default=64, help="at most (or, with --exact, exactly) this many boards")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per objective (best and mean are shown)")
    ap.add_argument("--board", default="pynq-z2",
                    help="board name from the catalogue (--partitioner: several, comma-separated)")
    ap.add_argument("--cap", type=float, default=0.85, help="resource cap per board")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random chain")
    ap.add_argument("--exact", action="store_true", help="use exactly --boards stages instead of at most")
    ap.add_argument("--widths", default="16,32,64,128,256", help="default path: the layer widths to draw from")
    ap.add_argument("--partitioner", action="store_true",
                    help="time the chain partitioner alone (settings fixed) instead of the default path")
    ap.add_argument("--results", action="store_true",
                    help="also write docs/results/planner_scaling_UNITS.md and .json (--partitioner: "
                         "planner_scaling_partitioner, at most and exactly --boards)")
    args = ap.parse_args()
    if not args.partitioner:
        default_path(args)
        return

    started, t_all, rows = machine(), time.perf_counter(), []
    costs, bytes_in, bytes_out, names = random_chain(args.units, args.seed)
    print(f"machine: {platform.node()} | CPU: {cpu_model()} | Python {platform.python_version()} "
          f"| numpy {np.__version__}")
    for board_name in args.board.split(","):
        board = get_board(board_name)
        for exact in ((False, True) if args.results else (args.exact,)):
            print(f"chain: {args.units} Dense-like units (seed {args.seed}), {sum(c.dsp for c in costs):,.0f} DSP in "
                  f"total; board {board.name}, cap {args.cap}, {'exactly' if exact else 'at most'} {args.boards} boards")
            print(f"{'objective':<11} {'stages':>6} {'bottleneck_us':>14} {'latency_us':>12} {'best_s':>8} {'mean_s':>8}")
            row = {"board": board.name, "exact": exact, "stages": {}, "best_s": {}}
            for objective in OBJECTIVES:
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    part = partition_chain(costs, bytes_in, bytes_out, board, args.cap, objective=objective,
                                           max_boards=None if exact else args.boards,
                                           n_stages=args.boards if exact else None, unit_names=names)
                    times.append(time.perf_counter() - t0)
                m = part.metrics
                print(f"{objective:<11} {part.n_stages:>6} {m.bottleneck_us:>14.3f} {m.latency_us:>12.1f} "
                      f"{min(times):>8.3f} {sum(times) / len(times):>8.3f}")
                row["stages"][objective], row["best_s"][objective] = part.n_stages, min(times)
            rows.append(row)
    if args.results:
        table = md_table(
            ["board", "boards allowed", "stages used (" + " / ".join(OBJECTIVES) + ")", "time per objective (best)"],
            [[r["board"], f"{'exactly' if r['exact'] else 'at most'} {args.boards}",
              " / ".join(str(r["stages"][o]) for o in OBJECTIVES),
              " / ".join(seconds_text(r["best_s"][o]) for o in OBJECTIVES)] for r in rows])
        text = (f"{table}\n\nThe chain partitioner alone, every unit's settings fixed: a seeded chain of {args.units} "
                f"Dense-like units (seed {args.seed}), cap {args.cap:.0%}; best of {args.repeat} runs per objective.")
        write_results("planner_scaling_partitioner", text, {"rows": rows, "units": args.units, "boards": args.boards},
                      started=started, seconds=time.perf_counter() - t_all)


if __name__ == "__main__":
    main()
