"""Compiled hls4ml C-simulation of a stage, cached by content.

Compiling an hls4ml project takes seconds (g++ on the generated C++), so every compiled stage is
kept in a content-addressed cache and reused by tests, ``verify`` and the runtime node:

- the key (:func:`cache_key`) is a sha256 over everything that changes the generated C++: the
  model file(s) the stage is cut from (their sha256), the graph (layer names, hls4ml nodes, kinds,
  shapes, params, activations, weight bytes), the settings of every layer, the wire types, the build settings, the hls4ml backend and io type, the hls4ml version and
  :data:`CACHE_FORMAT`. The board's part and clock do not change the C-simulation and are not
  part of the key (the cached project may therefore name another board of the same backend);
- the cache root is ``$SPLIT4ML_CACHE`` if set, else ``~/.cache/split4ml/csim``; entry ``<key>/``
  holds the hls4ml project (``prj/``), its compiled library and ``manifest.json``;
- a compile holds an exclusive file lock (``.locks/<key>.lock``), so concurrent processes
  compiling the same key compile it once; :func:`compile_stages` runs g++ for several stages in
  parallel; ``manifest.json`` is written last (atomically), so an
  entry without it is an interrupted compile and is redone. The library loads its weights from
  ``prj/firmware/weights`` by absolute path: do not move cache entries.

:class:`CsimModel` loads the library with ctypes and calls the same bridge function hls4ml's own
``ModelGraph.predict`` calls, ``<project>_double(double *in, double *out)``, once per sample.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BuildError, DataError, Split4mlError
from ..stages import Stage
from .project import DEFAULT_PROJECT_NAME, convert_stage, converter_kwargs

#: Bumped whenever the way split4ml writes projects changes (invalidates old cache entries).
CACHE_FORMAT = "split4ml-csim-5"
CACHE_ENV = "SPLIT4ML_CACHE"
MANIFEST = "manifest.json"


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$SPLIT4ML_CACHE``, else ``~/.cache/split4ml/csim``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "split4ml" / "csim"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def cache_key(stage: Stage) -> str:
    """The content hash (64 hex digits) identifying ``stage``'s compiled C-simulation."""
    import hls4ml

    backend, kwargs = converter_kwargs(stage)
    h = hashlib.sha256()

    def add(obj: Any) -> None:
        data = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    add({"format": CACHE_FORMAT, "hls4ml": hls4ml.__version__, "backend": backend,
         "io_type": stage.build.io_type, "axi": {k: kwargs.get(k) for k in ("input_type", "output_type")},
         "project": DEFAULT_PROJECT_NAME})
    b = stage.build
    add({"default": str(b.default_precision), "result": str(b.result_precision),
         "accum": str(b.accum_precision), "input": str(b.input_precision),
         "wire_in": str(stage.input_type), "wire_out": str(stage.output_type)})
    add({"outputs": list(stage.graph.outputs)})
    source = stage.graph.source
    add({"model": source.digest() if source is not None else None})
    for layer in stage.graph.layers:
        add({"name": layer.name, "kind": layer.kind, "in": list(layer.input_shape),
             "out": list(layer.output_shape), "inputs": list(layer.inputs), "act": layer.activation,
             "params": layer.params, "hls_nodes": list(layer.hls_nodes),
             "precision": layer.precision.as_dict() if layer.precision is not None else None})
        for wname in sorted(layer.weights):
            arr = np.ascontiguousarray(layer.weights[wname])
            add({"weight": wname, "dtype": arr.dtype.str, "shape": list(arr.shape)})
            h.update(arr.tobytes())
        if layer.name in stage.settings:
            s = stage.settings[layer.name]
            add({"rf": int(s.reuse_factor), "strategy": s.strategy, "precision": s.precision.as_dict()})
    return h.hexdigest()


class CsimModel:
    """A stage's compiled C-simulation library, loaded with ctypes.

    Attributes:
        key: the cache key of the stage.
        library: path of the compiled shared library.
        project_dir: the hls4ml project it was compiled from.
        input_shape / output_shape: per-sample shapes (no batch dimension).
        from_cache: True when the library was already in the cache (no compile happened).
    """

    def __init__(self, library: Path, project_name: str, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...], key: str = "", project_dir: Path | None = None,
                 from_cache: bool = False) -> None:
        self.library = Path(library)
        self.project_name = project_name
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = tuple(int(d) for d in output_shape)
        self.key = key
        self.project_dir = project_dir
        self.from_cache = from_cache
        self.n_in = int(np.prod(self.input_shape))
        self.n_out = int(np.prod(self.output_shape))
        try:
            self._lib = ctypes.CDLL(str(self.library))
            fn = getattr(self._lib, f"{project_name}_double")
        except (OSError, AttributeError) as exc:
            raise BuildError(f"cannot load C-simulation library {self.library}: {exc}; delete its cache entry "
                             f"{self.library.parent} and run again") from exc
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._fn = fn

    def __repr__(self) -> str:
        return f"CsimModel({self.library}, in={self.input_shape}, out={self.output_shape})"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the C-simulation on a batch: ``x`` is ``(n, *input_shape)`` (or ``(n, n_in)``),
        returns ``(n, *output_shape)`` float64.

        Values are passed as float64 (exact for fixed-point types up to 53 bits); the library
        converts them to the stage's input type, as the board's AXI input does.
        """
        a = np.asarray(x, dtype=np.float64)
        if a.ndim >= 1 and a.shape[1:] == self.input_shape:
            n = a.shape[0]
        elif a.ndim == 2 and a.shape[1] == self.n_in:
            n = a.shape[0]
        else:
            raise DataError(
                f"C-simulation input has shape {a.shape}; expected (n, {', '.join(map(str, self.input_shape))}) "
                f"or (n, {self.n_in})"
            )
        flat = np.ascontiguousarray(a.reshape(n, self.n_in))
        out = np.zeros((n, self.n_out), dtype=np.float64)
        in_ptr, out_ptr = flat.ctypes.data, out.ctypes.data
        in_step, out_step = 8 * self.n_in, 8 * self.n_out
        fn = self._fn
        for i in range(n):
            fn(in_ptr + i * in_step, out_ptr + i * out_step)
        return out.reshape((n, *self.output_shape))

    __call__ = predict


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock held on ``path`` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    """The manifest of a complete cache entry, or None if the entry is missing or incomplete."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    lib = entry / str(manifest.get("library", ""))
    if not lib.is_file() or not (entry / "prj" / "firmware" / "weights").is_dir():
        return None
    return manifest


def _load(entry: Path, manifest: dict[str, Any], from_cache: bool) -> CsimModel:
    return CsimModel(
        library=entry / manifest["library"], project_name=manifest["project_name"],
        input_shape=tuple(manifest["input_shape"]), output_shape=tuple(manifest["output_shape"]),
        key=manifest["key"], project_dir=entry / "prj", from_cache=from_cache,
    )


@dataclass
class _Pending:
    """A stage whose project is written and locked, waiting for g++."""

    stage: Stage
    key: str
    entry: Path
    lock: contextlib.ExitStack
    library: Path | None = None
    t0: float = 0.0


def _write_project(stage: Stage, entry: Path) -> tuple[Path, str]:
    """Write ``stage``'s hls4ml project in ``entry/prj``; returns (project dir, library stamp). A
    :class:`~split4ml.hls.reference.Reference` writes its own (hls4ml's direct conversion)."""
    if entry.exists():
        shutil.rmtree(entry)
    prj = entry / "prj"
    writer = getattr(stage, "write_project", None)
    if writer is not None:
        return prj, writer(prj, DEFAULT_PROJECT_NAME)
    hls_model = convert_stage(stage, prj, project_name=DEFAULT_PROJECT_NAME, write=True)
    return prj, str(hls_model.config.get_config_value("Stamp"))


def _key(stage: Any) -> str:
    own = getattr(stage, "cache_key", None)
    return own() if own is not None else cache_key(stage)


def _backend(stage: Any) -> str:
    own = getattr(stage, "backend", None)
    return own if isinstance(own, str) else converter_kwargs(stage)[0]


def _run_gxx(stage: Stage, prj: Path, stamp: str) -> Path:
    """Compile the written project with hls4ml's ``build_lib.sh`` (g++); returns the library path."""
    proc = subprocess.run(["bash", "build_lib.sh"], cwd=prj, capture_output=True, text=True)
    lib = prj / "firmware" / f"{DEFAULT_PROJECT_NAME}-{stamp}.so"
    if proc.returncode != 0 or not lib.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BuildError(
            f"{stage.name} on {stage.board.name}: g++ failed to compile the C-simulation of {prj} "
            f"(exit {proc.returncode}):\n{tail}"
        )
    return lib


def _write_manifest(p: _Pending) -> dict[str, Any]:
    import hls4ml

    assert p.library is not None
    backend = _backend(p.stage)
    manifest = {
        "key": p.key,
        "format": CACHE_FORMAT,
        "library": str(p.library.resolve().relative_to(p.entry.resolve())),
        "project_name": DEFAULT_PROJECT_NAME,
        "input_shape": list(p.stage.input_shape),
        "output_shape": list(p.stage.output_shape),
        "input_type": str(p.stage.input_type),
        "output_type": str(p.stage.output_type),
        "stage": p.stage.name,
        "board": p.stage.board.name,
        "backend": backend,
        "io_type": p.stage.build.io_type,
        "hls4ml_version": hls4ml.__version__,
        "compile_seconds": round(time.perf_counter() - p.t0, 3),
    }
    tmp = p.entry / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, p.entry / MANIFEST)
    return manifest


def compile_stages(stages: Sequence[Stage], cache_dir: Path | str | None = None, jobs: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[CsimModel]:
    """The compiled C-simulations of ``stages`` (same order), from the cache or compiled now.

    Stages not in the cache are converted one after the other, then compiled by g++ ``jobs`` at a
    time (default: the number of CPUs). Each compile holds its cache entry's file lock, taken in key
    order, so concurrent processes never compile the same stage twice nor deadlock.
    ``progress(done, total)`` is called as stages become ready.

    Raises:
        BuildError: conversion or compilation failed (naming stage, board and layer where known).
    """
    root = cache_root(cache_dir)
    keys = [_key(st) for st in stages]
    total = len(stages)
    ready: dict[str, CsimModel] = {}

    def tick() -> None:
        if progress is not None:
            progress(sum(1 for k in keys if k in ready), total)

    for key in keys:
        manifest = _read_manifest(root / key)
        if manifest is not None and key not in ready:
            ready[key] = _load(root / key, manifest, from_cache=True)
    tick()
    todo = {k: st for k, st in zip(keys, stages, strict=True) if k not in ready}
    if todo:
        try:
            (root / ".locks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BuildError(f"cannot create the C-simulation cache {root}: {exc}; set {CACHE_ENV} to a "
                             "writable directory") from exc
        pending: list[_Pending] = []
        try:
            for key in sorted(todo):  # one global lock order: no deadlock between processes
                lock = contextlib.ExitStack()
                lock.enter_context(_locked(root / ".locks" / f"{key}.lock"))
                entry = root / key
                manifest = _read_manifest(entry)  # another process may have compiled it meanwhile
                if manifest is not None:
                    lock.close()
                    ready[key] = _load(entry, manifest, from_cache=True)
                    tick()
                    continue
                pending.append(_Pending(todo[key], key, entry, lock))
            stamps: dict[str, tuple[Path, str]] = {}
            for p in pending:
                p.t0 = time.perf_counter()
                stamps[p.key] = _write_project(p.stage, p.entry)
            n_jobs = max(1, min(len(pending), jobs if jobs else (os.cpu_count() or 1)))
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                futures = {pool.submit(_run_gxx, p.stage, *stamps[p.key]): p for p in pending}
                errors: list[BuildError] = []
                for fut in as_completed(futures):
                    p = futures[fut]
                    try:
                        p.library = fut.result()
                    except BuildError as exc:
                        errors.append(exc)
                        continue
                    manifest = _write_manifest(p)
                    ready[p.key] = _load(p.entry, manifest, from_cache=False)
                    tick()
                if errors:
                    raise errors[0]
        except Split4mlError:
            for p in pending:
                if p.key not in ready:
                    shutil.rmtree(p.entry, ignore_errors=True)
            raise
        finally:
            for p in pending:
                p.lock.close()
    return [ready[k] for k in keys]


def compile_stage(stage: Stage, cache_dir: Path | str | None = None) -> CsimModel:
    """The compiled C-simulation of ``stage``, from the cache or compiled now (then cached).

    Raises:
        BuildError: conversion or compilation failed (naming stage, board and layer where known).
    """
    return compile_stages([stage], cache_dir=cache_dir, jobs=1)[0]
