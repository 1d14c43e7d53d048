"""split4ml's planner against the original work's method: enumerate cut combinations, take the first.

**The baseline** is the original work's automatic sequential split (fastML-2024), written here
from its description:

1. *One global setting.* The whole model is estimated under every setting of a grid (reuse
   factor 1, 2, 4, ..., 256 times strategy Latency, Resource; the same setting for every layer and
   every board, corrected as hls4ml corrects an invalid reuse factor). The number of boards a
   setting needs is the original's rule, ``worst resource % // 100 + 1``, from the estimate of the
   *whole* model on one board. The setting with the fewest boards wins; ties keep the grid order
   (smaller reuse factor first, Latency before Resource). The original also sweeps the precision
   and prefers the widest among the fewest boards; here every method uses ``ap_fixed<16,6>``, so
   both compute the same numbers.
2. *Enumeration.* With ``k`` boards from the rule (the rule accepts no combination with fewer
   boards, so none is tried), every combination of ``k - 1`` cuts among the ``n - 1`` layer
   boundaries is generated, ``C(n-1, k-1)`` of them, and a cut that separates an activation layer
   from the layer that produces its input is rejected. The original builds the list of every valid
   combination and deploys the first one; so does the baseline (it counts them rather than keeping
   them all in memory, and builds no Keras sub-models, which only flatters its time).

Feasibility is checked on the whole model only, so a board of the chosen split may not fit when it
is estimated alone (its share of the model plus its own board shell); the table shows how many do.

**split4ml** plans the same Graph with ``make_plan`` (analytic estimator, cap 85 %): per-layer
settings, and an exact partition for the objective, here ``throughput`` and ``boards``.

Both are priced with the same analytic estimator and the same performance model
(``split4ml.plan.metrics``): bottleneck interval (II plus sending the stage's output on its 1 GbE
link) and end-to-end latency (links included).

**The chains** are seeded synthetic Graphs of ``n`` layers: ``n - 1`` Dense layers with ReLU
(widths drawn from 64/96/128, 64 inputs, 10 outputs) and a softmax Activation layer, so exactly
one cut (before the softmax) is invalid.

Enumeration stops when it would take more than ``--timeout`` seconds (60): it runs for
``--probe`` seconds (2), and if the remaining combinations at the measured rate would take longer,
it is reported as timed out with the count of combinations and the projected time. The cut it would
pick is still the first valid combination, so its quality is shown anyway.

    python benchmarks/vs_enumeration.py [--sizes 5,10,20,30,40,50,60] [--timeout 60] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from machine import cpu_model, write_results  # benchmarks/machine.py
from machine import machine as this_machine  # benchmarks/machine.py

from split4ml.boards import Board, get_board
from split4ml.estimate.analytic import AnalyticEstimator
from split4ml.estimate.base import Cost, Estimator
from split4ml.estimate.hls_rules import hls4ml_would_change
from split4ml.ir import COMPUTE_KINDS, Graph, Layer
from split4ml.plan.api import MAX_AUTO_BATCH
from split4ml.plan.metrics import pipeline_metrics
from split4ml.settings import BuildSettings, LayerSettings

#: The original's grid of global settings, in its order (reuse factor outer, strategy inner).
GRID_REUSE = (1, 2, 4, 8, 16, 32, 64, 128, 256)
GRID_STRATEGY = ("Latency", "Resource")
#: How often (combinations) the enumeration looks at the clock.
CLOCK_EVERY = 1 << 16


# ------------------------------------------------------------------------------------------ chains
def dense_chain(n_layers: int, seed: int = 0) -> Graph:
    """A seeded chain of ``n_layers`` layers: ``n_layers - 1`` Dense+ReLU layers, then a softmax layer.

    Dense widths are drawn from 64/96/128 (the last Dense has 10 outputs), the input has 64
    features; weights are Glorot-uniform, biases small and non-zero.
    """
    if n_layers < 2:
        raise ValueError(f"a chain needs at least 2 layers (a Dense and the softmax), got {n_layers}")
    rng = np.random.default_rng(seed)
    n_in = 64
    layers = [Layer(name="x", kind="Input", input_shape=(n_in,), output_shape=(n_in,))]
    prev = "x"
    n_dense = n_layers - 1
    for i in range(1, n_dense + 1):
        n_out = 10 if i == n_dense else int(rng.choice((64, 96, 128)))
        lim = math.sqrt(6.0 / (n_in + n_out))
        kernel = rng.uniform(-lim, lim, size=(n_in, n_out)).astype(np.float32)
        bias = rng.uniform(-0.05, 0.05, size=(n_out,)).astype(np.float32)
        name = f"fc{i}"
        layers.append(Layer(name=name, kind="Dense", input_shape=(n_in,), output_shape=(n_out,), inputs=(prev,),
                            activation="relu" if i < n_dense else "linear", params={"units": n_out, "use_bias": True},
                            weights={"kernel": kernel, "bias": bias}))
        prev, n_in = name, n_out
    layers.append(Layer(name="softmax", kind="Activation", input_shape=(n_in,), output_shape=(n_in,),
                        inputs=(prev,), activation="softmax"))
    return Graph(name=f"chain{n_layers}", layers=tuple(layers), outputs=("softmax",))


# ------------------------------------------------------------------------------ the original method
def global_settings(graph: Graph, reuse_factor: int, strategy: str) -> dict[str, LayerSettings]:
    """One setting for every layer, each reuse factor corrected as hls4ml would correct it."""
    out: dict[str, LayerSettings] = {}
    for lyr in graph.body:
        rf = reuse_factor
        if lyr.kind in COMPUTE_KINDS:
            rf = hls4ml_would_change(lyr, reuse_factor, strategy) or reuse_factor
        out[lyr.name] = LayerSettings(reuse_factor=rf, strategy=strategy)
    return out


def boards_by_rule(whole: Cost, board: Board) -> tuple[float, int]:
    """The original's rule on a whole-model estimate: (worst resource in % of one board, boards)."""
    worst_pct = 100.0 * whole.max_utilization(board)
    return worst_pct, int(worst_pct // 100) + 1


def choose_global_setting(graph: Graph, est: Estimator, board: Board, io_type: str = "io_parallel",
                          ) -> tuple[int, str, dict[str, LayerSettings], float, int]:
    """The grid setting with the fewest boards by the rule (ties: grid order).

    Returns reuse factor, strategy, the per-layer settings, worst % and boards.
    """
    best: tuple[int, str, dict[str, LayerSettings], float, int] | None = None
    for rf, strategy in itertools.product(GRID_REUSE, GRID_STRATEGY):
        sets = global_settings(graph, rf, strategy)
        worst, k = boards_by_rule(est.segment_cost(list(graph.body), sets, io_type, board), board)
        if best is None or k < best[4]:
            best = (rf, strategy, sets, worst, k)
    assert best is not None
    return best


@dataclass(frozen=True)
class Enumeration:
    """What enumerating the ``k - 1``-cut combinations found.

    Attributes:
        combinations: ``C(n-1, k-1)``, all combinations of cut positions.
        generated: combinations generated before the end (or the stop).
        valid: of those, the ones that cut no activation from its producer.
        first: the first valid combination: cut positions, each the index (into the layer list)
            of the first layer of a new board; ``None`` if there is none.
        seconds: time spent enumerating.
        timed_out: stopped because the whole enumeration would take longer than the timeout.
        projected_s: the projected time of the whole enumeration (measured if it finished).
    """

    combinations: int
    generated: int
    valid: int
    first: tuple[int, ...] | None
    seconds: float
    timed_out: bool
    projected_s: float


def enumerate_cuts(is_activation: Sequence[bool], k: int, timeout_s: float = 60.0, probe_s: float = 2.0,
                   ) -> Enumeration:
    """Generate every combination of ``k - 1`` cuts of a chain of ``len(is_activation)`` layers.

    A cut at position ``i`` (1 <= i < n) starts a new board at layer ``i``; it is invalid when layer
    ``i`` is an activation layer (it would be separated from layer ``i - 1``, its producer). After
    ``probe_s`` seconds, the enumeration stops if the remaining combinations, at the rate measured
    so far, would take the total past ``timeout_s``.
    """
    n = len(is_activation)
    total = math.comb(n - 1, k - 1) if 1 <= k <= n else 0
    t0 = time.perf_counter()
    generated = valid = 0
    first: tuple[int, ...] | None = None
    for combo in itertools.combinations(range(1, n), k - 1):
        generated += 1
        if not any(is_activation[i] for i in combo):
            valid += 1
            if first is None:
                first = combo
        if generated % CLOCK_EVERY == 0:
            elapsed = time.perf_counter() - t0
            if elapsed >= probe_s:
                projected = elapsed * total / generated
                if projected > timeout_s:
                    return Enumeration(total, generated, valid, first, elapsed, True, projected)
    elapsed = time.perf_counter() - t0
    return Enumeration(total, generated, valid, first, elapsed, False, elapsed)


def first_valid_cuts(is_activation: Sequence[bool], k: int) -> tuple[int, ...] | None:
    """The first valid combination (what the enumeration deploys), without enumerating the rest."""
    for combo in itertools.combinations(range(1, len(is_activation)), k - 1):
        if not any(is_activation[i] for i in combo):
            return combo
    return None


# ------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Outcome:
    """One method's plan, priced by the same estimator and performance model."""

    method: str
    plan_s: float
    boards: int
    fit_100: int  # boards whose own estimate fits under 100 % of every resource
    fit_cap: int  # ... under the cap (85 %)
    bottleneck_ii_cycles: float
    latency_us: float
    note: str = ""
    timed_out: bool = False


def price_cuts(graph: Graph, cuts: Sequence[int], settings: dict[str, LayerSettings], est: Estimator, board: Board,
               build: BuildSettings) -> tuple[list[Cost], Any]:
    """Per-board costs (shell included) and pipeline metrics of a layer-wise cut of ``graph``.

    ``cuts`` index the body (the layers after the Input), as :func:`enumerate_cuts` does.
    """
    body = list(graph.body)
    bounds = [0, *cuts, len(body)]
    costs, bytes_out, values_out = [], [], []
    for a, b in itertools.pairwise(bounds):
        seg = body[a:b]
        costs.append(est.segment_cost(seg, settings, build.io_type, board))
        values_out.append(math.prod(seg[-1].output_shape))
        bytes_out.append(values_out[-1] * settings[seg[-1].name].precision.result.storage_bytes)
    values_in = math.prod(graph.input.output_shape)
    bytes_in = values_in * build.input_precision.storage_bytes
    # frames of MAX_AUTO_BATCH samples, the most split4ml's planner chooses by itself: the enumerated
    # plan's best case for the boards' per-frame cost
    return costs, pipeline_metrics(costs, [board] * len(costs), float(bytes_in), bytes_out, values_in, values_out,
                                   batch=MAX_AUTO_BATCH, io_type=build.io_type)


def run_baseline(graph: Graph, board: Board, cap: float, timeout_s: float, probe_s: float) -> tuple[Outcome, dict]:
    """The original method on ``graph``: its outcome and the details (setting, k, enumeration)."""
    build = BuildSettings()
    est = AnalyticEstimator()
    t0 = time.perf_counter()
    rf, strategy, sets, worst, k = choose_global_setting(graph, est, board, build.io_type)
    acts = [lyr.is_activation for lyr in graph.body]
    en = enumerate_cuts(acts, k, timeout_s=timeout_s, probe_s=probe_s)
    t_setting = time.perf_counter() - t0 - en.seconds
    cuts = en.first if en.first is not None or not en.timed_out else first_valid_cuts(acts, k)
    detail = {"reuse_factor": rf, "strategy": strategy, "whole_worst_pct": worst, "k": k,
              "setting_s": t_setting, **asdict(en)}
    if cuts is None:
        return Outcome("enumeration", t_setting + en.projected_s, 0, 0, 0, math.nan, math.nan,
                       note=f"no valid cut into {k} boards", timed_out=en.timed_out), detail
    costs, m = price_cuts(graph, cuts, sets, est, board, build)
    note = f"RF {rf} {strategy} everywhere; whole model {worst:.0f} % -> {k} boards"
    return Outcome("enumeration", t_setting + en.projected_s, len(costs), sum(c.fits(board, 1.0) for c in costs),
                   sum(c.fits(board, cap) for c in costs), m.bottleneck_ii_cycles, m.latency_us, note=note,
                   timed_out=en.timed_out), detail


def run_split4ml(graph: Graph, board: Board, cap: float, objective: str = "throughput",
                 settings: dict[str, LayerSettings] | None = None, label: str = "split4ml",
                 max_boards: int | None = None) -> Outcome:
    """split4ml's planner on ``graph``: ``make_plan`` with the analytic estimator.

    ``settings`` fixes every compute layer's reuse factor and strategy (as a user's hls4ml config
    would); otherwise split4ml chooses them per layer. ``max_boards`` is ``--boards``. Returns an outcome with ``boards == 0`` when
    no plan exists (the reason in ``note``).
    """
    from split4ml.errors import InfeasibleError
    from split4ml.plan.api import make_plan

    cfg = None
    if settings is not None:
        cfg = {"LayerName": {n: {"ReuseFactor": s.reuse_factor, "Strategy": s.strategy} for n, s in settings.items()
                             if graph.layer(n).kind in COMPUTE_KINDS}}
    t0 = time.perf_counter()
    try:
        plan = make_plan(graph, model=f"{graph.name}.keras", board=board, cap=cap, objective=objective,
                         max_boards=max_boards, hls_config=cfg, estimator="analytic")
    except InfeasibleError as exc:
        return Outcome(label, time.perf_counter() - t0, 0, 0, 0, math.nan, math.nan, note=f"infeasible: {exc}")
    elapsed = time.perf_counter() - t0
    costs = [sh.cost for st in plan.stages for sh in st.shards] + [st.cost for st in plan.stages if st.split is None]
    m = plan.metrics
    rfs = sorted({s.reuse_factor for n, s in plan.settings.items() if graph.layer(n).kind in COMPUTE_KINDS})
    splits = sum(1 for st in plan.stages if st.split is not None)
    note = (f"RF {rfs[0]}..{rfs[-1]}" if len(rfs) > 1 else f"RF {rfs[0]}") + f", {objective} objective" + (
        f", {splits} split layer(s)" if splits else "")
    return Outcome(label, elapsed, plan.n_boards, sum(c.fits(board, 1.0) for c in costs),
                   sum(c.fits(board, cap) for c in costs), m.bottleneck_ii_cycles, m.latency_us, note=note)


# ------------------------------------------------------------------------------------------ output
def _fmt_time(o: Outcome, timeout_s: float) -> str:
    if o.timed_out:
        return f"> {timeout_s:.0f} s (timed out, ~{o.plan_s:,.0f} s)"
    return f"{o.plan_s * 1000:,.0f} ms" if o.plan_s < 1 else f"{o.plan_s:,.1f} s"


def markdown_table(rows: list[dict[str, Any]], timeout_s: float) -> str:
    """The comparison as a Markdown table (what the README shows)."""
    lines = ["| layers | method | combinations | planning time | boards | fit alone (≤100 % / ≤85 %) "
             "| bottleneck II (cycles) | latency (µs) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for o in r["outcomes"]:
            comb = f"{r['combinations']:,}" if o["method"] == "enumeration" else "–"
            oo = Outcome(**{k: (math.nan if v is None else v) for k, v in o.items()})
            mark = " †" if oo.fit_100 < oo.boards else ""
            bn = "–" if math.isnan(oo.bottleneck_ii_cycles) else f"{oo.bottleneck_ii_cycles:,.0f}{mark}"
            lat = "–" if math.isnan(oo.latency_us) else f"{oo.latency_us:,.0f}{mark}"
            lines.append(f"| {r['layers']} | {oo.method} | {comb} | {_fmt_time(oo, timeout_s)} | {oo.boards} "
                         f"| {oo.fit_100} / {oo.fit_cap} | {bn} | {lat} |")
    lines.append("")
    lines.append("† a board of this plan does not fit when estimated alone, so the figure cannot be reached.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5,10,20,30,40,50,60", help="chain lengths (layers), comma-separated")
    ap.add_argument("--board", default="pynq-z2", help="board name from the catalogue")
    ap.add_argument("--cap", type=float, default=0.85, help="split4ml's resource cap per board")
    ap.add_argument("--timeout", type=float, default=60.0, help="enumeration time limit, seconds")
    ap.add_argument("--probe", type=float, default=2.0, help="seconds of enumeration before projecting its time")
    ap.add_argument("--seed", type=int, default=0, help="seed of the chains")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--results", action="store_true", help="also write docs/results/vs_enumeration.md and .json")
    args = ap.parse_args(argv)
    started, t_all = this_machine(), time.perf_counter()

    board = get_board(args.board)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    machine = (f"{platform.node()} | CPU: {cpu_model()} ({os.cpu_count()} cores) | Python "
               f"{platform.python_version()} | numpy {np.__version__}")
    rows: list[dict[str, Any]] = []
    for n in sizes:
        graph = dense_chain(n, seed=args.seed + n)
        base, detail = run_baseline(graph, board, args.cap, args.timeout, args.probe)
        same = global_settings(graph, detail["reuse_factor"], detail["strategy"])
        fixed = run_split4ml(graph, board, args.cap, "boards", same, "split4ml, same settings")
        outcomes = [base, fixed, run_split4ml(graph, board, args.cap, "throughput", None, "split4ml, own settings")]
        if fixed.boards:
            outcomes.append(run_split4ml(graph, board, args.cap, "throughput", None,
                                         f"split4ml, own settings, --boards {fixed.boards}", max_boards=fixed.boards))
        rows.append({"layers": n, "params": graph.n_params, "combinations": detail["combinations"],
                     "baseline": detail, "outcomes": [_json_ready(asdict(o)) for o in outcomes]})
        if not args.json:
            print(f"[{n} layers] {base.note}; C({n - 1}, {detail['k'] - 1}) = {detail['combinations']:,} "
                  f"combinations, {detail['generated']:,} generated in {detail['seconds']:.1f} s"
                  + (" (timed out)" if detail["timed_out"] else ""), file=sys.stderr, flush=True)
    if args.results:
        write_results("vs_enumeration", markdown_table(rows, args.timeout),
                      {"board": board.name, "cap": args.cap, "timeout_s": args.timeout, "rows": rows},
                      started=started, seconds=time.perf_counter() - t_all)
    if args.json:
        print(json.dumps({"machine": machine, "board": board.name, "cap": args.cap, "timeout_s": args.timeout,
                          "rows": rows}, indent=2, default=float))
        return 0
    print(f"machine: {machine}")
    print(f"board {board.name}; split4ml cap {args.cap:.0%}; analytic estimator for both; enumeration time limit "
          f"{args.timeout:.0f} s")
    print()
    print(markdown_table(rows, args.timeout))
    return 0


def _json_ready(d: dict[str, Any]) -> dict[str, Any]:
    """NaN (no plan) as null, so the output is strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
