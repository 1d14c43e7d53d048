"""How fast the exact chain partitioner is on long chains.

Builds a seeded random chain of Dense-like units (widths 16..256, a reuse factor per layer, 16-bit
weights: one DSP per multiplier, BRAM for the weights of layers with reuse factor > 1, ii = reuse
factor, 2 bytes per output value) and times ``partition_chain`` for every objective onto at most
``--boards`` boards (or exactly that many with ``--exact``).

    python benchmarks/planner_scaling.py --units 500 --boards 64 --repeat 3
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
from machine import cpu_model  # benchmarks/machine.py

from split4ml.boards import get_board
from split4ml.estimate.base import Cost
from split4ml.plan.partition import OBJECTIVES, partition_chain


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=500, help="number of units in the chain")
    ap.add_argument("--boards", type=int, default=64, help="at most (or, with --exact, exactly) this many boards")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per objective (best and mean are shown)")
    ap.add_argument("--board", default="pynq-z2", help="board name from the catalogue")
    ap.add_argument("--cap", type=float, default=0.85, help="resource cap per board")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random chain")
    ap.add_argument("--exact", action="store_true", help="use exactly --boards stages instead of at most")
    args = ap.parse_args()

    board = get_board(args.board)
    costs, bytes_in, bytes_out, names = random_chain(args.units, args.seed)
    print(f"machine: {platform.node()} | CPU: {cpu_model()} | Python {platform.python_version()} "
          f"| numpy {np.__version__}")
    print(f"chain: {args.units} Dense-like units (seed {args.seed}), {sum(c.dsp for c in costs):,.0f} DSP in total; "
          f"board {board.name}, cap {args.cap}, {'exactly' if args.exact else 'at most'} {args.boards} boards")
    print(f"{'objective':<11} {'stages':>6} {'bottleneck_us':>14} {'latency_us':>12} {'best_s':>8} {'mean_s':>8}")
    for objective in OBJECTIVES:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            part = partition_chain(costs, bytes_in, bytes_out, board, args.cap, objective=objective,
                                   max_boards=None if args.exact else args.boards,
                                   n_stages=args.boards if args.exact else None, unit_names=names)
            times.append(time.perf_counter() - t0)
        m = part.metrics
        print(f"{objective:<11} {part.n_stages:>6} {m.bottleneck_us:>14.3f} {m.latency_us:>12.1f} "
              f"{min(times):>8.3f} {sum(times) / len(times):>8.3f}")


if __name__ == "__main__":
    main()
