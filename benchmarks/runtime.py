"""The distributed runtime on one machine: an emulated pipeline against the whole model, and per-hop latency.

1. **Pipeline vs whole model.** A seeded MLP (``--width`` x ``--layers`` Dense ReLU layers, 10 outputs,
   softmax) is cut into ``--stages`` boards of equal numbers of layers. Every stage and the whole
   model are compiled first (hls4ml C-simulation, cached), then:

   - the whole model's C-simulation ``predict`` runs ``--samples`` samples: hls4ml's own
     ``ModelGraph.predict`` (converted and compiled once more, untimed) and split4ml's
     ``CsimModel.predict`` (the same ``<project>_double`` bridge, loaded from the cache);
   - ``split4ml run --emulate`` streams the same samples through one ``split4ml node`` process per
     stage (csim driver) over loopback ZeroMQ, checks every output bit-exact against the whole
     model, and reports throughput, latency p50/p99 and per-stage busy fractions; then 300 samples
     go through one at a time (batch 1, window 1) for the latency without queueing.

2. **Per-hop latency.** A relay process receives frames (``decode_frame``: CRC, header, type and
   shape checks), re-encodes them and sends them back over loopback TCP. One frame is in flight at
   a time; a hop is half a round trip: encode, send, receive, decode. Payloads of 64 B to 64 KiB
   (``ap_fixed<16,6>`` values, 2 bytes each; each frame adds ``OVERHEAD_BYTES`` of header and CRC).

   The same hops are then timed with CURVE on both links (:mod:`split4ml.runtime.security`).

    python benchmarks/runtime.py [--samples 3000] [--stages 4] [--batch 8] [--hops 2000] [--hops-only] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_model, md_table, write_results  # benchmarks/machine.py
from machine import machine as this_machine  # benchmarks/machine.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

HOP_SIZES = (64, 256, 1024, 4096, 16384, 65536)


# ------------------------------------------------------------------------------------------- pipeline
def build_pipeline(width: int, layers: int, n_stages: int, seed: int) -> tuple[Any, Any, list[tuple[str, ...]]]:
    from split4ml.boards import get_board
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import deep_mlp
    from split4ml.settings import BuildSettings, LayerSettings
    from split4ml.stages import linear_pipeline, make_stages, whole_model_stage

    graph = graph_from_keras(deep_mlp(widths=(width,) * layers, n_in=width, n_out=10, seed=seed))
    units = [tuple(lyr.name for lyr in u) for u in graph.units()]
    bounds = np.linspace(0, len(units), n_stages + 1).round().astype(int)
    cuts = [tuple(n for u in units[a:b] for n in u) for a, b in zip(bounds, bounds[1:], strict=False)]
    settings = {lyr.name: LayerSettings() for lyr in graph.body}
    board = get_board("pynq-z2")
    build = BuildSettings()
    stages = make_stages(graph, cuts, [board] * n_stages, settings, build)
    return linear_pipeline(stages), whole_model_stage(graph, board, settings, build), cuts


def time_predict(predict: Any, x: np.ndarray, repeat: int) -> float:
    """Best samples/s of ``repeat`` runs of ``predict(x)``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        predict(x)
        best = min(best, time.perf_counter() - t0)
    return len(x) / best


def hls4ml_predict(whole: Any, library: Path) -> Any:
    """hls4ml's own ``ModelGraph`` of the whole model, its ``predict`` bound to the compiled C-simulation
    library from the cache (what ``ModelGraph.compile()`` would load; converting is untimed)."""
    import ctypes

    from split4ml.hls.project import convert_stage

    hls_model = convert_stage(whole, Path(tempfile.mkdtemp(prefix="split4ml-bench-")) / "whole", write=False)
    hls_model._top_function_lib = ctypes.cdll.LoadLibrary(str(library))
    return hls_model


def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from split4ml.hls.csim import compile_stages
    from split4ml.runtime import RunOptions, run_pipeline
    from split4ml.verify import random_inputs

    pipeline, whole, cuts = build_pipeline(args.width, args.layers, args.stages, args.seed)
    stages = [n.stage for n in pipeline.nodes]
    t0 = time.perf_counter()
    models = compile_stages([*stages, whole])
    compile_s = time.perf_counter() - t0
    x = whole.input_type.quantize(random_inputs(whole.input_type, whole.input_shape, args.samples, seed=args.seed))
    whole_model = models[-1]
    per_stage = [1e6 / time_predict(m.predict, x[:200], 2) for m in models[:-1]]
    hm = hls4ml_predict(whole, whole_model.library)
    # interleaved, so that a change of the machine's load hits both sides alike; the best of each is kept
    csim_rates, hls_rates, runs = [], [], []
    for _ in range(args.repeat):
        hls_rates.append(time_predict(lambda a: hm.predict(np.ascontiguousarray(a)), x, 1))
        csim_rates.append(time_predict(whole_model.predict, x, 1))
        rep = run_pipeline(pipeline, x, whole, RunOptions(batch=args.batch, stall_timeout_s=60))
        if not rep.ok:
            raise SystemExit(f"pipeline run failed: {rep.as_dict()}")
        runs.append(rep)
    best = max(runs, key=lambda r: r.throughput_per_s)
    hls_rate, csim_rate = max(hls_rates), max(csim_rates)
    # latency without queueing: one sample in flight at a time
    single = run_pipeline(pipeline, x[:300], whole, RunOptions(batch=1, window=1, stall_timeout_s=60))
    return {
        "model": f"MLP {args.width}x{args.layers} (+10, softmax), {args.stages} stages: " + " | ".join(
            ",".join(c) for c in cuts),
        "samples": args.samples, "batch": args.batch, "compile_s": compile_s,
        "stage_csim_us_per_sample": per_stage,
        "whole_csim_hls4ml_per_s": hls_rate, "whole_csim_split4ml_per_s": csim_rate,
        "whole_csim_hls4ml_runs_per_s": hls_rates,
        "pipeline_per_s": best.throughput_per_s, "pipeline_runs_per_s": [r.throughput_per_s for r in runs],
        "bit_exact": all(r.bit_exact for r in runs), "latency_us": {"p50": best.latency_us_p50,
                                                                    "p99": best.latency_us_p99},
        "stages": [s.as_dict() for s in best.stages],
        "single_sample_latency_us": {"p50": single.latency_us_p50, "p99": single.latency_us_p99},
        "single_sample_bit_exact": single.ok,
        "speedup_vs_hls4ml": best.throughput_per_s / hls_rate,
    }


# ------------------------------------------------------------------------------------------- hops
def relay(bind_address: str, back_address: str, plan_hash: bytes, keys: str | None = None) -> None:
    """Receive, check, re-encode and return frames until a STOP frame arrives (runs in a child process);
    with ``keys``, both links are CURVE (the relay is the party ``relay``)."""
    import zmq

    from split4ml.fixed import FixedType
    from split4ml.runtime.security import LAUNCHER, Keys
    from split4ml.runtime.wire import KIND_STOP, OVERHEAD_BYTES, Expect, decode_frame, encode_frame

    t = FixedType(16, 6)
    ctx = zmq.Context()
    k = Keys(keys, "relay") if keys else None
    if k is not None:
        k.start(ctx)
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    if k is not None:
        k.server(pull)
        k.client(push, LAUNCHER)
    pull.bind(bind_address)
    push.connect(back_address)
    while pull.poll(30000):
        buf = pull.recv()
        n_values = (len(buf) - OVERHEAD_BYTES) // t.storage_bytes
        fr = decode_frame(buf, plan_hash, 1, {0: Expect(0, t, (n_values,))})
        if fr.kind == KIND_STOP:
            break
        push.send(encode_frame(plan_hash, 1, 0, 0, fr.seq, fr.values, t))
    if k is not None:
        k.stop()
    ctx.destroy(linger=0)


def bench_hops(n_frames: int, curve: bool = False) -> list[dict[str, Any]]:
    import tempfile

    import zmq

    from split4ml.fixed import FixedType
    from split4ml.runtime.security import LAUNCHER, Keys, make_keys
    from split4ml.runtime.transport import PortReservation
    from split4ml.runtime.wire import OVERHEAD_BYTES, Expect, decode_frame, encode_frame, encode_stop

    h = b"benchhop"
    t = FixedType(16, 6)
    reservation = PortReservation(2)  # held until the process ends
    p_relay, p_back = reservation.ports
    keys_dir = tempfile.mkdtemp(prefix="split4ml-hop-keys-") if curve else None
    ctx = zmq.Context()
    k = None
    if keys_dir is not None:
        make_keys(keys_dir, [LAUNCHER, "relay"])
        k = Keys(keys_dir, LAUNCHER)
        k.start(ctx)
    back = ctx.socket(zmq.PULL)
    out = ctx.socket(zmq.PUSH)
    if k is not None:
        k.server(back)
        k.client(out, "relay")
    back.bind(f"tcp://127.0.0.1:{p_back}")
    out.connect(f"tcp://127.0.0.1:{p_relay}")
    proc = mp.get_context("spawn").Process(target=relay, args=(f"tcp://127.0.0.1:{p_relay}",
                                                                      f"tcp://127.0.0.1:{p_back}", h, keys_dir))
    proc.start()
    rows = []
    rng = np.random.default_rng(0)
    try:
        for size in HOP_SIZES:
            n_values = size // 2
            x = t.quantize(rng.uniform(-30, 30, (1, n_values)))
            exp = {0: Expect(1, t, (n_values,))}
            times = []
            for i in range(n_frames + 100):
                t0 = time.perf_counter_ns()
                out.send(encode_frame(h, 0, 1, 0, i, x, t))
                if not back.poll(10000):
                    raise SystemExit("the relay process does not answer")
                fr = decode_frame(back.recv(), h, 0, exp)
                t1 = time.perf_counter_ns()
                assert fr.seq == i
                if i >= 100:  # warm-up excluded
                    times.append((t1 - t0) / 2e3)
            a = np.array(times)
            rows.append({"payload_bytes": size, "frame_bytes": size + OVERHEAD_BYTES,
                         "hop_us_p50": float(np.percentile(a, 50)), "hop_us_p99": float(np.percentile(a, 99)),
                         "frames": n_frames})
        out.send(encode_stop(h, 1))
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        if k is not None:
            k.stop()
        ctx.destroy(linger=0)
    return rows


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3000, help="samples streamed (and predicted by the whole model)")
    ap.add_argument("--stages", type=int, default=4, help="pipeline stages (boards)")
    ap.add_argument("--width", type=int, default=128, help="width of every hidden Dense layer")
    ap.add_argument("--layers", type=int, default=8, help="hidden Dense layers")
    ap.add_argument("--batch", type=int, default=8, help="samples per frame")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (best is reported)")
    ap.add_argument("--hops", type=int, default=2000, help="timed frames per hop size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only JSON")
    ap.add_argument("--hops-only", action="store_true", help="only the per-hop latency (plain and CURVE)")
    ap.add_argument("--results", action="store_true", help="also write docs/results/runtime.md and .json")
    args = ap.parse_args()
    started, t_all = this_machine(), time.perf_counter()

    machine = {"node": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
               "python": platform.python_version(), "load_avg_1min": os.getloadavg()[0]}
    pipe = bench_pipeline(args) if not args.hops_only else None
    hops = bench_hops(args.hops)
    hops_curve = bench_hops(args.hops, curve=True)
    machine["load_avg_1min_after"] = os.getloadavg()[0]
    result = {"machine": machine, "pipeline": pipe, "hops": hops, "hops_curve": hops_curve}
    if args.results:
        if pipe is None:
            sys.exit("--results writes the docs' tables: run it without --hops-only")
        write_results("runtime", render(args, pipe, hops, hops_curve), result, started=started,
                      seconds=time.perf_counter() - t_all)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
          f"load average {machine['load_avg_1min']:.2f} -> {machine['load_avg_1min_after']:.2f}")
    if pipe is not None:
        print_pipeline(args, pipe)
    print(f"{'payload':>8} {'frame':>8} {'plain p50 (us)':>15} {'plain p99 (us)':>15} {'CURVE p50 (us)':>15} "
          f"{'CURVE p99 (us)':>15}")
    for r, c in zip(hops, hops_curve, strict=True):
        print(f"{r['payload_bytes']:>8} {r['frame_bytes']:>8} {r['hop_us_p50']:>15.1f} {r['hop_us_p99']:>15.1f} "
              f"{c['hop_us_p50']:>15.1f} {c['hop_us_p99']:>15.1f}")
    sys.stdout.flush()


def render(args: argparse.Namespace, pipe: dict[str, Any], hops: list[dict[str, Any]],
           hops_curve: list[dict[str, Any]]) -> str:
    """The docs' tables: the emulated pipeline against the whole model, and the per-hop latency."""
    lat, ss = pipe["latency_us"], pipe["single_sample_latency_us"]
    runs = " / ".join(f"{v:,.0f}" for v in pipe["pipeline_runs_per_s"])
    first = md_table(["", ""], [
        ["model", f"{pipe['model']}; C-sim per sample and stage ".replace("|", "\\|") +
         " / ".join(f"{v:,.0f}" for v in pipe["stage_csim_us_per_sample"]) + " µs"],
        ["whole model, hls4ml C-sim `predict`", f"{pipe['whole_csim_hls4ml_per_s']:,.0f} samples/s "
         f"(`CsimModel.predict`, the same library: {pipe['whole_csim_split4ml_per_s']:,.0f})"],
        [f"emulated pipeline, `split4ml run --emulate` ({args.stages} node processes, batch {args.batch})",
         f"**{pipe['pipeline_per_s']:,.0f} samples/s** (runs {runs}), {pipe['speedup_vs_hls4ml']:.2f}x the whole "
         f"model; bit-exact: {'yes' if pipe['bit_exact'] else '**no**'}"],
        ["its latency at full load", f"p50 {lat['p50'] / 1000:,.0f} ms, p99 {lat['p99'] / 1000:,.0f} ms"],
        ["its latency with one sample in flight", f"p50 {ss['p50'] / 1000:,.1f} ms, p99 {ss['p99'] / 1000:,.1f} ms"],
        ["busy fraction per stage", " / ".join(f"{s['busy_fraction']:.0%}" for s in pipe["stages"])],
    ])
    sizes = [_size_text(r["payload_bytes"]) for r in hops]
    second = md_table(["payload", *sizes], [
        ["plain p50 / p99", *(f"{r['hop_us_p50']:,.0f} / {r['hop_us_p99']:,.0f} µs" for r in hops)],
        ["CURVE p50 / p99", *(f"{r['hop_us_p50']:,.0f} / {r['hop_us_p99']:,.0f} µs" for r in hops_curve)],
    ])
    return (f"{first}\n\nBest of {args.repeat} interleaved runs, {args.samples:,} samples each.\n\n"
            f"Per hop ({args.hops:,} frames per size; plain, and with both links CURVE-encrypted):\n\n{second}")


def _size_text(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def print_pipeline(args: argparse.Namespace, pipe: dict[str, Any]) -> None:
    print(f"model: {pipe['model']}")
    print("C-sim per sample and stage (us): " + ", ".join(f"{v:,.0f}" for v in pipe["stage_csim_us_per_sample"]))
    print(f"whole model C-sim predict: hls4ml {pipe['whole_csim_hls4ml_per_s']:,.0f} samples/s (runs: "
          f"{', '.join(f'{v:,.0f}' for v in pipe['whole_csim_hls4ml_runs_per_s'])}), "
          f"split4ml CsimModel {pipe['whole_csim_split4ml_per_s']:,.0f} samples/s")
    print(f"emulated pipeline ({args.stages} node processes, batch {args.batch}): {pipe['pipeline_per_s']:,.0f} "
          f"samples/s (runs: {', '.join(f'{v:,.0f}' for v in pipe['pipeline_runs_per_s'])}), "
          f"x{pipe['speedup_vs_hls4ml']:.2f} hls4ml's predict; bit-exact {pipe['bit_exact']}; latency p50 "
          f"{pipe['latency_us']['p50']:,.0f} us, p99 {pipe['latency_us']['p99']:,.0f} us")
    ss = pipe["single_sample_latency_us"]
    print(f"one sample in flight: latency p50 {ss['p50']:,.0f} us, p99 {ss['p99']:,.0f} us "
          f"(bit-exact {pipe['single_sample_bit_exact']})")
    print("busy: " + ", ".join(f"{s['id']} {s['busy_fraction']:.0%}" for s in pipe["stages"]))


if __name__ == "__main__":
    main()
