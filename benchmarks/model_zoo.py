"""What hls4ml converts, split4ml plans: every model of hls4ml's public example-model collection.

    git clone https://github.com/fastmachinelearning/example-models   # not part of split4ml
    python benchmarks/model_zoo.py PATH_TO_COLLECTION [--samples 100] [--timeout 900] [--json]

One row per model file (``keras/*.json`` with their ``_weights.h5``, full-model ``keras/*.h5`` and
``*.keras``, ``onnx/*.onnx``, ``pytorch/*.pt``), each step in a fresh process with a time limit:

* **hls4ml**: does hls4ml 1.3 convert the file itself and write its project, the way its documentation
  shows? (Keras 2 files
  with ``keras_v2_to_hls``; ``.keras`` with ``keras.models.load_model`` and
  ``convert_from_keras_model``; ONNX after qonnx's cleanup, channels-last and Gemm-to-MatMul steps;
  a pickled PyTorch module with ``torch.load(map_location='cpu')`` and ``convert_from_pytorch_model``.)
* **inspect**: ``split4ml.frontends.load_model`` reads it.
* **plan**: ``make_plan(..., n_stages=2)`` on PYNQ-Z2 boards (io_parallel; io_stream when that does not
  fit). A model that two boards cannot hold is planned on the fewest boards that can (``objective
  "boards"``, intra-layer splits included); *boards* counts them.
* **verify**: the chained board C-simulations equal hls4ml's direct conversion of the file (the
  reference ``split4ml verify`` uses) on ``--samples`` random inputs.
* **widest wire**: the bytes per sample on the widest link between boards.

A refusal is one line (the first line of split4ml's error). The collection has no licence file:
nothing of it is copied into split4ml; this script only reads a local checkout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import command_line, describe, machine, read_results, rerender, write_results  # noqa: E402  (benchmarks/machine.py)

STEPS = ("hls4ml", "inspect", "plan", "verify")


def model_files(root: Path) -> list[Path]:
    """The model files of the collection, in a stable order."""
    out: list[Path] = []
    keras_dir = root / "keras"
    for p in sorted(keras_dir.glob("*.json")):
        out.append(p)
    for p in sorted(keras_dir.glob("*.h5")):
        if not p.stem.endswith("_weights") and not (keras_dir / f"{p.stem}.json").exists():
            out.append(p)
    out += sorted(keras_dir.glob("*.keras"))
    out += sorted((root / "onnx").glob("*.onnx"))
    out += sorted((root / "pytorch").glob("*.pt"))
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {msg}"[:200]


def hls4ml_converts(path: Path) -> None:
    """Convert ``path`` with hls4ml alone, as its documentation shows, and write the project (raises on
    failure)."""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory(prefix="model-zoo-hls4ml-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        _hls4ml_convert(path, tmp).write()


def _hls4ml_convert(path: Path, out_dir: str) -> Any:
    import contextlib

    import hls4ml

    kw: dict[str, Any] = {"output_dir": out_dir, "backend": "Vivado"}
    if path.suffix == ".json":
        cfg = hls4ml.utils.config.create_config(**kw)
        cfg.update(KerasJson=str(path), KerasH5=str(path.with_name(f"{path.stem}_weights.h5")))
        cfg["HLSConfig"] = {"Model": {"Precision": "fixed<16,6>", "ReuseFactor": 1}}
        return hls4ml.converters.keras_v2_to_hls(cfg)
    elif path.suffix == ".h5":
        cfg = hls4ml.utils.config.create_config(**kw)
        cfg.update(KerasH5=str(path))
        cfg["HLSConfig"] = {"Model": {"Precision": "fixed<16,6>", "ReuseFactor": 1}}
        return hls4ml.converters.keras_v2_to_hls(cfg)
    elif path.suffix == ".keras":
        import keras

        for plugin in ("hgq", "qkeras"):
            with contextlib.suppress(Exception):
                __import__(plugin)
        model = keras.models.load_model(str(path), compile=False)
        cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
        return hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, **kw)
    elif path.suffix == ".onnx":
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
        from qonnx.transformation.gemm_to_matmul import GemmToMatMul
        from qonnx.util.cleanup import cleanup_model

        m = cleanup_model(ModelWrapper(str(path)))
        m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
        cfg = hls4ml.utils.config.config_from_onnx_model(m, granularity="name", backend="Vivado")
        return hls4ml.converters.convert_from_onnx_model(m, hls_config=cfg, **kw)
    elif path.suffix == ".pt":
        import torch

        from split4ml.frontends.torch import example_shape

        module = torch.load(str(path), map_location="cpu", weights_only=False).eval()
        shape = example_shape(module, None, str(path))
        cfg = hls4ml.utils.config_from_pytorch_model(module, shape, granularity="name", backend="Vivado")
        return hls4ml.converters.convert_from_pytorch_model(module, hls_config=cfg, **kw)
    raise ValueError(f"no hls4ml recipe for {path.suffix}")



def _step(step: str, path: str, samples: int, queue: Any) -> None:
    """One step in a child process; puts (ok, detail) on ``queue``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    detail: dict[str, Any] = {}
    try:
        p = Path(path)
        if step == "hls4ml":
            hls4ml_converts(p)
            queue.put((True, {}))
            return
        from split4ml.plan.dag import import_cpsat_first

        import_cpsat_first()
        from split4ml.boards import get_board
        from split4ml.errors import InfeasibleError
        from split4ml.frontends import load_model
        from split4ml.plan.api import make_plan
        from split4ml.settings import BuildSettings
        from split4ml.verify import random_inputs, verify_plan

        g = load_model(p)
        detail.update(layers=len(g.body), quantized=g.quantized, reader=g.source.reader)
        if step == "inspect":
            queue.put((True, detail))
            return
        plan = None
        board = get_board("pynq-z2")
        attempts = [{"n_stages": 2, "io": "io_parallel"}, {"n_stages": 2, "io": "io_stream"},
                    {"objective": "boards", "io": "io_parallel"}, {"objective": "boards", "io": "io_stream"}]
        for k, a in enumerate(attempts):
            if a["io"] == "io_stream" and not g.is_chain:
                continue
            try:
                plan = make_plan(g, model=p, board=board, n_stages=a.get("n_stages"),
                                 objective=a.get("objective", "throughput"), build=BuildSettings(io_type=a["io"]))
                break
            except InfeasibleError:
                if k == len(attempts) - 1 or (not g.is_chain and k == 2):
                    raise
        detail.update(io_type=plan.build.io_type, boards=plan.n_boards,
                      widest_wire=max((st.output.bytes_per_sample for st in plan.stages[:-1]), default=0))
        if step == "plan":
            queue.put((True, detail))
            return
        x = random_inputs(plan.build.input_precision, g.input.output_shape, samples, seed=0)
        res = verify_plan(plan, g, x)
        detail.update(bit_exact=res.bit_exact, samples=res.samples, max_abs_diff=res.max_abs_diff)
        queue.put((res.bit_exact, detail))
    except BaseException as exc:  # noqa: BLE001 - report every failure as one line
        queue.put((False, {**detail, "error": _first_line(exc)}))


def run_step(step: str, path: Path, samples: int, timeout: float) -> tuple[bool | None, dict[str, Any], float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step, args=(step, str(path), samples, queue))
    t0 = time.perf_counter()
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return False, {"error": f"timed out after {timeout:.0f} s"}, time.perf_counter() - t0
    try:
        ok, detail = queue.get(timeout=5)
    except Exception:  # noqa: BLE001 - the child died without reporting
        return False, {"error": f"process exited with code {proc.exitcode}"}, time.perf_counter() - t0
    return ok, detail, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("collection", type=Path, nargs="?", help="a checkout of fastmachinelearning/example-models")
    ap.add_argument("--samples", type=int, default=100, help="random samples verified per model")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds for split4ml's steps of one model")
    ap.add_argument("--hls4ml-timeout", type=float, default=300.0,
                    help="seconds for hls4ml's own conversion of one model (then also for split4ml's, when hls4ml's "
                         "ran out of time: both wait on the same conversion)")
    ap.add_argument("--only", nargs="*", default=None, help="model file names to run (default: all)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--results", action="store_true",
                    help="also write docs/results/model_zoo.md and .json (the docs' table; a full run only)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite docs/results/model_zoo.md from the figures recorded in model_zoo.json")
    args = ap.parse_args()
    if args.render:
        rec = read_results("model_zoo")
        rerender("model_zoo", render(rec["rows"], rec["summary"]))
        return
    if args.collection is None:
        ap.error("give the path of a checkout of the example-model collection")
    started = machine()
    files = model_files(args.collection)
    if args.only:
        files = [f for f in files if f.name in set(args.only)]
    if not files:
        sys.exit(f"no model files under {args.collection}/keras, /onnx or /pytorch")
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for f in files:
        row: dict[str, Any] = {"model": f"{f.parent.name}/{f.name}"}
        for step in ("hls4ml", "verify"):
            limit = args.hls4ml_timeout if step == "hls4ml" else args.timeout
            if step == "verify" and "timed out" in row["hls4ml_detail"].get("error", ""):
                limit = args.hls4ml_timeout
            ok, detail, secs = run_step(step, f, args.samples, limit)
            row[step] = ok
            row[f"{step}_detail"] = detail
            row[f"{step}_seconds"] = round(secs, 1)
        d = row["verify_detail"]
        err = d.get("error", "")
        # verify runs inspect and plan first: place a failure at its step
        row["inspect"] = "layers" in d
        row["plan"] = "boards" in d
        row["boards"] = d.get("boards")
        row["widest_wire"] = d.get("widest_wire")
        row["why"] = (row["hls4ml_detail"].get("error", "") if not row["hls4ml"] else err)
        rows.append(row)
        if not args.json:
            mark = {True: "yes", False: "no", None: "-"}
            print(f"{row['model']:<48} hls4ml {mark[row['hls4ml']]:<3} inspect {mark[row['inspect']]:<3} "
                  f"plan {mark[row['plan']]:<3} verify {mark[row['verify']]:<3} boards {row['boards'] or '-':<3} "
                  f"wire {row['widest_wire'] or '-':<6} {row['why'][:90]}", flush=True)
    converts = [r for r in rows if r["hls4ml"]]
    summary = {
        "models": len(rows), "hls4ml_converts": len(converts),
        "inspect": sum(r["inspect"] for r in converts), "plan": sum(r["plan"] for r in converts),
        "verify_bit_exact": sum(bool(r["verify"]) for r in converts),
        "split4ml_reads_not_hls4ml": sum(1 for r in rows if r["inspect"] and not r["hls4ml"]),
        "seconds": round(time.perf_counter() - t_all, 1),
        "machine": describe(started),
    }
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2))
    else:
        print()
        print(render(rows, summary))
    if args.results:
        if args.only:
            sys.exit("--results writes the docs' table of the whole collection: run it without --only")
        write_results("model_zoo", render(rows, summary), {"rows": rows, "summary": summary}, started=started,
                      seconds=summary["seconds"], command=command_line(hide={str(args.collection): "PATH"}))


def render(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The docs' table of the collection, and its one-line summary."""
    yn = {True: "yes", False: "no", None: "-"}
    out = ["| model | hls4ml converts | inspect | plan (2 x PYNQ-Z2) | verify bit-exact | boards | widest wire (B) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        short = r["why"] if len(r["why"]) <= 110 else r["why"][:107].rstrip() + "..."
        why = f" ({short})" if r["why"] and not r["verify"] else ""
        out.append(f"| {r['model']} | {yn[r['hls4ml']]} | {yn[r['inspect']]} | {yn[r['plan']]} | "
                   f"{yn[bool(r['verify'])]}{why} | {r['boards'] or '-'} | {r['widest_wire'] or '-'} |")
    out += ["", f"**{summary['hls4ml_converts']} of {summary['models']} files convert in hls4ml; of those split4ml "
            f"reads {summary['inspect']}, plans {summary['plan']} and verifies {summary['verify_bit_exact']} "
            f"bit-exact.**"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
