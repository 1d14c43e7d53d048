"""What both examples share: drive the ``split4ml`` commands a user types, check, and summarise.

Each example's ``run.py`` trains its model and writes its held-out data (``prepare``), then calls
:func:`main` here, which runs::

    split4ml plan    OUT/<model>.keras --board pynq-z2 --boards 5 [plan_args] -o OUT/plan.yaml
    split4ml build   OUT/plan.yaml -o OUT/hls
    split4ml verify  OUT/plan.yaml --data OUT/test.npz --samples N
    split4ml run     OUT/plan.yaml --emulate --data OUT/test.npz --samples N
    split4ml report  OUT/plan.yaml --verify-json OUT/verify.json --run-json OUT/run.json -o OUT/report.html

and exits 0 only if the plan uses at most 5 boards (the planner uses fewer when more would not be
faster), every step agrees on them, and both the chained C-simulation and the emulated run are
bit-exact against the whole model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # reproducible Keras training and float results

BOARD = "pynq-z2"
BOARDS = 5


@dataclass(frozen=True)
class Example:
    """What differs between the examples."""

    name: str
    description: str
    unit: str  # what one sample is, plural ("digits", "pages")
    default_samples: int
    prepare: Callable[[Path, Callable[[str], None]], tuple[Path, Path, dict[str, Any]]]
    #: extra ``split4ml plan`` options (e.g. ``("--stages", "5")`` to ask for exactly 5 steps)
    plan_args: tuple[str, ...] = ()


def split4ml(log: Any, *args: str) -> dict[str, Any]:
    """Run one ``split4ml`` command with ``--json`` in a subprocess; its JSON result.

    Exit code 1 (a verification mismatch) still returns the JSON, so the summary can show it.
    """
    shown = " ".join(["split4ml", *args])
    log(f"$ {shown}")
    proc = subprocess.run([sys.executable, "-m", "split4ml.cli", *args, "--json"], capture_output=True, text=True,
                          check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"'{shown}' failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main(example: Example, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=example.description)
    ap.add_argument("-o", "--output", type=Path, default=Path(f"build/{example.name}"), help="working directory")
    ap.add_argument("--samples", type=int, default=None,
                    help=f"held-out {example.unit} to verify and run (default {example.default_samples})")
    ap.add_argument("--quick", action="store_true", help=f"100 {example.unit}, no HTML report (what CI runs)")
    ap.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    args = ap.parse_args(argv)
    samples = args.samples or (100 if args.quick else example.default_samples)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model_file, data_file, facts = example.prepare(out, log)
    plan_file, hls_dir = out / "plan.yaml", out / "hls"

    plan = split4ml(log, "plan", str(model_file), "--board", BOARD, "--boards", str(BOARDS), *example.plan_args,
                    "-o", str(plan_file))
    build = split4ml(log, "build", str(plan_file), "-o", str(hls_dir))
    verify = split4ml(log, "verify", str(plan_file), "--data", str(data_file), "--samples", str(samples))
    (out / "verify.json").write_text(json.dumps(verify, indent=2))
    run = split4ml(log, "run", str(plan_file), "--emulate", "--data", str(data_file), "--samples", str(samples))
    (out / "run.json").write_text(json.dumps(run, indent=2))
    report = None
    if not args.quick:
        report = split4ml(log, "report", str(plan_file), "--verify-json", str(out / "verify.json"), "--run-json",
                          str(out / "run.json"), "-o", str(out / "report.html"))["html"]

    ok = (plan["n_boards"] <= BOARDS and build["n_boards"] == plan["n_boards"] and verify["bit_exact"]
          and run["bit_exact"] and run["completed"] and run["delivered"] == samples)
    summary = {
        "example": example.name, "board": BOARD, "boards": BOARDS, "samples": samples, **facts,
        "plan": plan, "build": build, "verify": verify, "run": run, "report": report,
        "wall_s": round(time.perf_counter() - t_start, 1), "ok": bool(ok),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, example.unit)
    return 0 if ok else 1


def print_summary(s: dict[str, Any], unit: str) -> None:
    """A short human-readable account of the run."""
    p, v, r = s["plan"], s["verify"], s["run"]
    print()
    print(f"plan: {p['n_boards']} x {s['board']} in {p['n_stages']} pipeline steps (objective {p['objective']})")
    for st in p["stages"]:
        split = st["shards"][0] if st["shards"] else None
        how = f"{split['kind']} split x{split['parts']}" if split else "1 board"
        util = max(st["utilization"].values())
        names = ([f"merge of {st['merge']}"] if st.get("merge") else []) + st["layers"]
        print(f"  step {st['index']}: {', '.join(names)} - {how}, fullest board {util:.0%}, "
              f"interval {st['interval_us']:.2f} us")
    print(f"  estimated bottleneck {p['bottleneck_ii_cycles']:.0f} cycles -> {p['throughput_per_s']:,.0f} samples/s; "
          f"latency {p['latency_us']:,.0f} us")
    print(f"verify ({v['samples']} held-out {unit}): {'BIT-EXACT' if v['bit_exact'] else 'MISMATCH'}, "
          f"{v['mismatched_samples']} mismatched; accuracy fixed-point {v['fixed_accuracy']:.1%}, "
          f"float {v['float_accuracy']:.1%}")
    print(f"emulated run: {r['delivered']}/{r['samples']} delivered, {'bit-exact' if r['bit_exact'] else 'MISMATCH'}, "
          f"{r['throughput_per_s']:,.0f} samples/s on this machine (C-simulation), "
          f"latency p50 {r['latency_us']['p50'] / 1000:.1f} ms")
    if s["report"]:
        print(f"report: {s['report']}")
    print(f"{'OK' if s['ok'] else 'FAILED'} in {s['wall_s']:.0f} s")

