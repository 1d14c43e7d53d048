"""What every process of a distributed run must agree on: the runtime spec (``pipeline.json``).

A :class:`RuntimeSpec` is the :class:`~split4ml.stages.Pipeline` reduced to what the runtime
needs: per node its id, wire types and shapes, its sources (slices of producers' outputs), and
where its driver finds its artifacts (the compiled C-simulation library, the reference model file,
the bitstream); the pipeline input and output; and the plan hash every frame carries. It is a
small JSON file, so a board can run ``split4ml node pipeline.json ...`` without the model, Keras or
hls4ml.

Edges. A consumer (a node, or the sink) receives one *part* per entry of its sources, in order;
part ``k`` is the slice ``start:stop`` (last axis) of producer ``sources[k].node``'s output (the
pipeline input for ``None``). A producer sends each consumer exactly the slices it needs, so an
input split (fan-out of slices), a neuron split (fan-in by concatenation) and a plain chain are the
same mechanism. The wire type of a part is the producer's output type (the pipeline input type
for the source). The consumer concatenates its parts along the last axis, in order.

Plan hash. :func:`pipeline_hash` is a sha256 over the topology, the wire types and shapes, and
every layer's kind, shape, parameters, activation, weights and hls4ml settings: two processes
accept each other's frames only if they run the very same pipeline.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuntimeFault
from ..fixed import FixedType
from ..hashing import file_sha256
from ..stages import Pipeline, Source, Stage
from .wire import MAX_NDIM, SINK, SOURCE, Expect

SPEC_VERSION = 1


@dataclass(frozen=True)
class SourceRef:
    """A slice ``start:stop`` of the last axis of node ``node``'s output (``None``: the pipeline input)."""

    node: str | None
    start: int = 0
    stop: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "start": self.start, "stop": self.stop}


@dataclass(frozen=True)
class NodeSpec:
    """One node: its wires and where its driver's artifacts are.

    ``artifacts`` may hold ``csim`` (``{"library", "project_name"}``), ``reference`` (path of the
    stage's ``.npz``, :func:`split4ml.runtime.drivers.save_reference_model`) and ``bitstream``.
    """

    id: str
    index: int
    input_type: FixedType
    output_type: FixedType
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    sources: tuple[SourceRef, ...]
    board: str = ""
    artifacts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    """One part a consumer receives: which producer, which slice, in which wire type and shape."""

    consumer: int
    part: int
    producer: int
    start: int
    stop: int
    wire: FixedType
    shape: tuple[int, ...]

    @property
    def expect(self) -> Expect:
        return Expect(self.producer, self.wire, self.shape)


@dataclass(frozen=True)
class RuntimeSpec:
    """The pipeline as every runtime process sees it (see the module docstring)."""

    plan_hash: str
    input_type: FixedType
    input_shape: tuple[int, ...]
    nodes: tuple[NodeSpec, ...]
    outputs: tuple[SourceRef, ...]

    # -------------------------------------------------------------------- lookup
    @property
    def hash_bytes(self) -> bytes:
        return bytes.fromhex(self.plan_hash)[:8]

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id or str(n.index) == str(node_id):
                return n
        raise RuntimeFault(f"the pipeline has no node {node_id!r}; its nodes are {[n.id for n in self.nodes]}")

    def index_of(self, node_id: str | None) -> int:
        return SOURCE if node_id is None else self.node(node_id).index

    def name_of(self, index: int) -> str:
        if index == SOURCE:
            return "source"
        if index == SINK:
            return "sink"
        return self.nodes[index].id

    def _producer(self, node_id: str | None) -> tuple[int, FixedType, tuple[int, ...]]:
        if node_id is None:
            return SOURCE, self.input_type, self.input_shape
        n = self.node(node_id)
        return n.index, n.output_type, n.output_shape

    def sources_of(self, consumer: int) -> tuple[SourceRef, ...]:
        return self.outputs if consumer == SINK else self.nodes[consumer].sources

    def parts_into(self, consumer: int) -> list[Part]:
        """The parts consumer ``consumer`` (node index or :data:`SINK`) receives, in order."""
        out = []
        for k, src in enumerate(self.sources_of(consumer)):
            producer, wire, shape = self._producer(src.node)
            last = shape[-1]
            start, stop, step = slice(src.start, src.stop).indices(last)
            if step != 1 or stop <= start:
                raise RuntimeFault(f"{self.name_of(consumer)}: source {k} slices {src.start}:{src.stop} of "
                                   f"{self.name_of(producer)}'s last axis ({last}), which is empty")
            out.append(Part(consumer, k, producer, start, stop, wire, (*shape[:-1], stop - start)))
        return out

    def parts_from(self, producer: int) -> list[Part]:
        """Every part producer ``producer`` (node index or :data:`SOURCE`) must send, consumers in order."""
        consumers = [n.index for n in self.nodes] + [SINK]
        return [p for c in consumers for p in self.parts_into(c) if p.producer == producer]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the pipeline output (its parts concatenated on the last axis)."""
        parts = self.parts_into(SINK)
        return (*parts[0].shape[:-1], sum(p.shape[-1] for p in parts))

    # -------------------------------------------------------------------- checks
    def validate(self) -> RuntimeSpec:
        """Check shapes, types and topology; returns ``self``.

        Raises:
            RuntimeFault: naming the node and what does not fit.
        """
        if not self.nodes:
            raise RuntimeFault("the pipeline has no nodes")
        seen: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.index != i:
                raise RuntimeFault(f"node {n.id} has index {n.index}, expected {i}")
            if n.id in seen or n.id in ("source", "sink"):
                raise RuntimeFault(f"node id {n.id!r} is used twice or reserved; give every node a unique id")
            seen.add(n.id)
            for s in n.sources:
                if s.node is not None and s.node not in seen:
                    raise RuntimeFault(f"{n.id} reads {s.node!r}, which is not an earlier node; nodes must be in "
                                       "topological order")
            for t, what in ((n.input_type, "input"), (n.output_type, "output")):
                if not t.exact_in_float64:
                    raise RuntimeFault(f"{n.id}: its {what} type {t} is wider than 53 bits; the runtime carries "
                                       "values as float64 between wire and driver")
            if len(n.input_shape) > MAX_NDIM or len(n.output_shape) > MAX_NDIM:
                raise RuntimeFault(f"{n.id}: shapes have at most {MAX_NDIM} dimensions")
            parts = self.parts_into(i)
            if not parts:
                raise RuntimeFault(f"{n.id} has no sources")
            lead = {p.shape[:-1] for p in parts}
            width = sum(p.shape[-1] for p in parts)
            got = (*parts[0].shape[:-1], width)
            if len(lead) != 1 or math.prod(got) != math.prod(n.input_shape):
                raise RuntimeFault(f"{n.id} takes {n.input_shape} but its sources give "
                                   f"{[p.shape for p in parts]} (concatenated: {got})")
        if not self.outputs:
            raise RuntimeFault("the pipeline has no outputs")
        for s in self.outputs:
            if s.node is not None and s.node not in seen:
                raise RuntimeFault(f"pipeline output reads unknown node {s.node!r}")
        self.parts_into(SINK)
        used = {s.node for n in self.nodes for s in n.sources} | {s.node for s in self.outputs}
        idle = [n.id for n in self.nodes if n.id not in used]
        if idle:
            raise RuntimeFault(f"nodes {idle} feed nobody; every node's output must reach the pipeline output")
        return self

    # -------------------------------------------------------------------- JSON
    def as_dict(self) -> dict[str, Any]:
        return {
            "split4ml_runtime": SPEC_VERSION,
            "plan_hash": self.plan_hash,
            "input": {"type": str(self.input_type), "shape": list(self.input_shape)},
            "outputs": [s.as_dict() for s in self.outputs],
            "nodes": [{"id": n.id, "index": n.index, "board": n.board, "input_type": str(n.input_type),
                       "output_type": str(n.output_type), "input_shape": list(n.input_shape),
                       "output_shape": list(n.output_shape), "sources": [s.as_dict() for s in n.sources],
                       "artifacts": dict(n.artifacts)} for n in self.nodes],
        }

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.as_dict(), indent=1))
        return p

    def with_artifacts(self, artifacts: Mapping[str, Mapping[str, Any]]) -> RuntimeSpec:
        """A copy whose nodes' artifacts are updated from ``artifacts[node_id]``."""
        nodes = tuple(NodeSpec(n.id, n.index, n.input_type, n.output_type, n.input_shape, n.output_shape, n.sources,
                               n.board, {**n.artifacts, **artifacts.get(n.id, {})}) for n in self.nodes)
        return RuntimeSpec(self.plan_hash, self.input_type, self.input_shape, nodes, self.outputs)


def _ref(d: Any, where: str) -> SourceRef:
    if not isinstance(d, Mapping):
        raise RuntimeFault(f"{where}: expected {{node, start, stop}}")
    stop = d.get("stop")
    return SourceRef(None if d.get("node") is None else str(d["node"]), int(d.get("start", 0)),
                     None if stop is None else int(stop))


def spec_from_dict(d: Any, where: str = "pipeline.json") -> RuntimeSpec:
    """Read the JSON form of a spec.

    Raises:
        RuntimeFault: naming the field that is missing or malformed.
    """
    try:
        if d.get("split4ml_runtime") != SPEC_VERSION:
            raise RuntimeFault(f"{where}: not a split4ml runtime spec of version {SPEC_VERSION} "
                               f"(split4ml_runtime = {d.get('split4ml_runtime')!r})")
        nodes = tuple(
            NodeSpec(id=str(n["id"]), index=int(n["index"]), input_type=FixedType.parse(n["input_type"]),
                     output_type=FixedType.parse(n["output_type"]),
                     input_shape=tuple(int(v) for v in n["input_shape"]),
                     output_shape=tuple(int(v) for v in n["output_shape"]),
                     sources=tuple(_ref(s, f"{where}: nodes[{i}].sources") for s in n["sources"]),
                     board=str(n.get("board", "")), artifacts=dict(n.get("artifacts") or {}))
            for i, n in enumerate(d["nodes"]))
        spec = RuntimeSpec(plan_hash=str(d["plan_hash"]), input_type=FixedType.parse(d["input"]["type"]),
                           input_shape=tuple(int(v) for v in d["input"]["shape"]), nodes=nodes,
                           outputs=tuple(_ref(s, f"{where}: outputs") for s in d["outputs"]))
    except RuntimeFault:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RuntimeFault(f"{where}: malformed runtime spec ({type(exc).__name__}: {exc}); write it again with "
                           "'split4ml run PLAN --hosts hosts.yaml'") from exc
    return spec.validate()


def read_spec(path: str | Path) -> RuntimeSpec:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise RuntimeFault(f"cannot read runtime spec {p}: {exc}") from exc
    except ValueError as exc:
        raise RuntimeFault(f"{p} is not JSON: {exc}; pass a plan .yaml or the pipeline.json that "
                           "'split4ml run' writes") from exc
    return spec_from_dict(data, where=str(p))


# ------------------------------------------------------------------------------ libraries
#: Where a run folder keeps the C-simulation libraries its ``pipeline.json`` names.
LIB_DIR = "lib"


def bundle_libraries(artifacts: Mapping[str, Mapping[str, Any]], run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``artifacts`` with every C-simulation library copied into ``run_dir/lib`` and named there by a path
    relative to ``run_dir``, with its sha256: what :func:`trusted_artifacts` accepts."""
    import shutil

    out: dict[str, dict[str, Any]] = {}
    lib_dir = Path(run_dir) / LIB_DIR
    for node, art in artifacts.items():
        a = dict(art)
        cs = a.get("csim")
        if cs:
            lib_dir.mkdir(parents=True, exist_ok=True)
            dst = lib_dir / f"{node}{Path(cs['library']).suffix or '.so'}"
            shutil.copyfile(cs["library"], dst)
            a["csim"] = {**cs, "library": f"{LIB_DIR}/{dst.name}", "sha256": file_sha256(dst)}
        out[node] = a
    return out


def trusted_artifacts(spec: RuntimeSpec, spec_dir: str | Path, nodes: Sequence[str] | None = None) -> RuntimeSpec:
    """``spec`` (read from a ``pipeline.json`` in ``spec_dir``) with the C-simulation library of each of
    ``nodes`` (default: all) checked before anything loads it: it must lie inside ``spec_dir`` and have
    the sha256 the launcher recorded (:func:`bundle_libraries`). A library is code: a crafted spec
    must not make a node run a shared object from elsewhere.

    Raises:
        RuntimeFault: naming the node and what to do.
    """
    root = Path(spec_dir).resolve()
    arts: dict[str, dict[str, Any]] = {n.id: dict(n.artifacts) for n in spec.nodes}
    for nid in (nodes if nodes is not None else list(arts)):
        cs = arts[nid].get("csim")
        if not cs:
            continue
        lib = Path(str(cs.get("library", "")))
        path = (lib if lib.is_absolute() else root / lib).resolve()
        if not path.is_relative_to(root):
            raise RuntimeFault(f"node {nid}: pipeline.json names a C-simulation library outside its folder ({lib}); "
                               f"a node loads libraries only from {root / LIB_DIR}: write the spec again with "
                               "'split4ml run'")
        want = cs.get("sha256")
        if not isinstance(want, str):
            raise RuntimeFault(f"node {nid}: pipeline.json gives no sha256 for its C-simulation library {lib}; write "
                               "the spec again with 'split4ml run'")
        if not path.is_file():
            raise RuntimeFault(f"node {nid}: its C-simulation library {path} is missing; copy the whole run folder")
        if file_sha256(path) != want:
            raise RuntimeFault(f"node {nid}: the C-simulation library {path} is not the one the launcher recorded "
                               "(sha256 differs); it will not be loaded: write the spec again with 'split4ml run'")
        arts[nid]["csim"] = {**cs, "library": str(path)}
    return spec.with_artifacts(arts)


# ------------------------------------------------------------------------------ from a pipeline
def _stage_digest(h: Any, stage: Stage) -> None:
    def add(obj: Any) -> None:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    add({"in": str(stage.input_type), "out": str(stage.output_type), "io": stage.build.io_type,
         "in_shape": list(stage.input_shape), "out_shape": list(stage.output_shape)})
    for layer in stage.graph.layers:
        add({"name": layer.name, "kind": layer.kind, "in": list(layer.input_shape), "out": list(layer.output_shape),
             "act": layer.activation, "params": {k: layer.params[k] for k in sorted(layer.params)}})
        for wname in sorted(layer.weights):
            arr = np.ascontiguousarray(layer.weights[wname], dtype=np.float64)
            add({"weight": wname, "shape": list(arr.shape)})
            h.update(arr.tobytes())
        s = stage.settings.get(layer.name)
        if s is not None:
            add({"rf": int(s.reuse_factor), "strategy": s.strategy, "precision": s.precision.as_dict()})


def pipeline_hash(pipeline: Pipeline, input_type: FixedType, input_shape: Sequence[int]) -> str:
    """Content hash (64 hex digits) of a pipeline: topology, wires, layers, weights and settings."""
    h = hashlib.sha256()
    head = {"v": SPEC_VERSION, "input": [str(input_type), [int(v) for v in input_shape]],
            "outputs": [[s.node, s.start, s.stop] for s in pipeline.outputs],
            "nodes": [[n.id, [[s.node, s.start, s.stop] for s in n.sources]] for n in pipeline.nodes]}
    h.update(json.dumps(head, sort_keys=True).encode())
    for n in pipeline.nodes:
        _stage_digest(h, n.stage)
    return h.hexdigest()


def pipeline_input(pipeline: Pipeline, whole: Stage | None = None) -> tuple[FixedType, tuple[int, ...]]:
    """The pipeline input's type and per-sample shape: the whole model's, else that of a node that
    reads the whole input.

    Raises:
        RuntimeFault: no whole model is given and every node reads only a slice of the input.
    """
    if whole is not None:
        return whole.input_type, whole.input_shape
    for n in pipeline.nodes:
        if len(n.sources) == 1 and n.sources[0] == Source(None):
            return n.stage.input_type, n.stage.input_shape
    raise RuntimeFault("cannot tell the pipeline's input shape: pass the whole-model stage (whole=...)")


def spec_from_pipeline(pipeline: Pipeline, whole: Stage | None = None,
                       artifacts: Mapping[str, Mapping[str, Any]] | None = None) -> RuntimeSpec:
    """The runtime spec of ``pipeline`` (validated)."""
    in_type, in_shape = pipeline_input(pipeline, whole)
    index = {n.id: i for i, n in enumerate(pipeline.nodes)}

    def ref(s: Source) -> SourceRef:
        if s.node is not None and s.node not in index:
            raise RuntimeFault(f"a source names node {s.node!r}, which is not in the pipeline")
        return SourceRef(s.node, int(s.start), None if s.stop is None else int(s.stop))

    nodes = tuple(
        NodeSpec(id=n.id, index=i, input_type=n.stage.input_type, output_type=n.stage.output_type,
                 input_shape=n.stage.input_shape, output_shape=n.stage.output_shape,
                 sources=tuple(ref(s) for s in n.sources), board=n.stage.board.name,
                 artifacts=dict((artifacts or {}).get(n.id, {})))
        for i, n in enumerate(pipeline.nodes))
    spec = RuntimeSpec(plan_hash=pipeline_hash(pipeline, in_type, in_shape), input_type=in_type,
                       input_shape=tuple(in_shape), nodes=nodes, outputs=tuple(ref(s) for s in pipeline.outputs))
    return spec.validate()


def node_spec(plan_file: Path, stage: str, driver: str) -> RuntimeSpec:
    """The runtime spec for ``split4ml node``: read ``pipeline.json`` (its libraries checked by
    :func:`trusted_artifacts`), or build it from a plan file (compiling only this node's stage for
    the csim driver). A board needs only the first; the plan path imports the planner and hls4ml."""

    if plan_file.suffix == ".json":
        spec = read_spec(plan_file)
        return trusted_artifacts(spec, plan_file.parent, [spec.node(stage).id])
    from ..lower import plan_pipeline
    from ..plan.api import load_plan

    p, g = load_plan(plan_file)
    pipeline, whole = plan_pipeline(p, g)
    spec = spec_from_pipeline(pipeline, whole)
    me = pipeline.node(spec.node(stage).id)
    art: dict[str, Any] = {}
    if driver == "csim":
        from ..hls.csim import compile_stage

        m = compile_stage(me.stage)
        art["csim"] = {"library": str(m.library), "project_name": m.project_name}
    elif driver == "reference":
        import tempfile

        from .drivers import save_reference_model

        art["reference"] = str(save_reference_model(me.stage, Path(tempfile.mkdtemp(prefix="split4ml-node-"))
                                                    / f"{me.id}.npz"))
    return spec.with_artifacts({me.id: art})
