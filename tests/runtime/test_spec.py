"""The runtime spec: parts of every edge, JSON round trip, the plan hash, and topology checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from runtime_helpers import RESULT, dense_stage

from split4ml.errors import RuntimeFault
from split4ml.fixed import FixedType
from split4ml.ir import Graph
from split4ml.runtime.spec import pipeline_hash, read_spec, spec_from_dict, spec_from_pipeline
from split4ml.runtime.wire import SINK, SOURCE
from split4ml.stages import Node, Pipeline, Source, linear_pipeline


def _chain():
    return linear_pipeline([dense_stage(0, (6, 5)), dense_stage(1, (5, 4, 3), seed=1)])


def test_linear_pipeline_parts_and_json_round_trip(tmp_path) -> None:
    spec = spec_from_pipeline(_chain())
    assert [n.id for n in spec.nodes] == ["stage_0", "stage_1"]
    assert spec.input_type == RESULT and spec.input_shape == (6,) and spec.output_shape == (3,)
    (p0,) = spec.parts_from(SOURCE)
    assert (p0.consumer, p0.part, p0.start, p0.stop, p0.shape) == (0, 0, 0, 6, (6,))
    (p1,) = spec.parts_from(0)
    assert (p1.consumer, p1.producer, p1.shape, p1.wire) == (1, 0, (5,), RESULT)
    (p2,) = spec.parts_into(SINK)
    assert p2.producer == 1 and p2.shape == (3,)
    path = spec.with_artifacts({"stage_1": {"bitstream": "stage_1.bit"}}).write(tmp_path / "pipeline.json")
    back = read_spec(path)
    assert back.as_dict() == json.loads(path.read_text())
    assert back.plan_hash == spec.plan_hash and back.node("stage_1").artifacts == {"bitstream": "stage_1.bit"}
    assert back.node("1").id == "stage_1"  # by index too
    with pytest.raises(RuntimeFault, match="no node 'stage_9'"):
        back.node("stage_9")


def test_slices_and_fan_in() -> None:
    a, b = dense_stage(0, (4, 3), seed=2), dense_stage(1, (4, 2), seed=3)
    c = dense_stage(2, (5, 2), seed=4)
    pipe = Pipeline(nodes=(Node("a", a, (Source(None, 0, 4),)), Node("b", b, (Source(None, 2, None),)),
                           Node("c", c, (Source("a"), Source("b")))), outputs=(Source("c", 1, None), Source("a", 0, 1)))
    spec = spec_from_pipeline(pipe, whole=dense_stage(-1, (6, 2)))
    assert spec.input_shape == (6,)
    src = spec.parts_from(SOURCE)
    assert [(p.consumer, p.start, p.stop) for p in src] == [(0, 0, 4), (1, 2, 6)]
    assert [(p.producer, p.part, p.shape) for p in spec.parts_into(2)] == [(0, 0, (3,)), (1, 1, (2,))]
    assert [(p.consumer, p.part, p.start, p.stop) for p in spec.parts_from(0)] == [(2, 0, 0, 3), (SINK, 1, 0, 1)]
    assert spec.output_shape == (2,)


def test_topology_errors_name_the_node() -> None:
    a = dense_stage(0, (4, 3))
    with pytest.raises(RuntimeFault, match="b takes"):  # 3 values do not feed a 4-input stage
        spec_from_pipeline(Pipeline(nodes=(Node("a", a, (Source(None),)), Node("b", dense_stage(1, (4, 2)),
                                                                             (Source("a"),))),
                                    outputs=(Source("b"),)))
    with pytest.raises(RuntimeFault, match="empty"):
        spec_from_pipeline(Pipeline(nodes=(Node("a", a, (Source(None),)),), outputs=(Source("a", 2, 2),)))
    with pytest.raises(RuntimeFault, match="feed nobody"):
        spec_from_pipeline(Pipeline(nodes=(Node("a", a, (Source(None),)), Node("b", dense_stage(1, (3, 2)),
                                                                             (Source("a"),))),
                                    outputs=(Source("a"),)))
    with pytest.raises(RuntimeFault, match="not in the pipeline"):
        spec_from_pipeline(Pipeline(nodes=(Node("a", a, (Source(None),)),), outputs=(Source("zz"),)))
    wide = dataclasses.replace(a, output_type=FixedType(60, 20))
    with pytest.raises(RuntimeFault, match="53 bits"):
        spec_from_pipeline(Pipeline(nodes=(Node("a", wide, (Source(None),)),), outputs=(Source("a"),)))
    with pytest.raises(RuntimeFault, match="malformed"):
        spec_from_dict({"split4ml_runtime": 1, "nodes": [{"id": "a"}]})
    with pytest.raises(RuntimeFault, match="version"):
        spec_from_dict({"split4ml_runtime": 7})


def test_plan_hash_follows_content_only() -> None:
    pipe = _chain()
    in_t, in_shape = RESULT, (6,)
    h = pipeline_hash(pipe, in_t, in_shape)
    assert len(h) == 64 and h == pipeline_hash(_chain(), in_t, in_shape)  # rebuilt from scratch: same hash
    s1 = pipe.nodes[1].stage
    lyr = s1.graph.layer("d1_1")
    k = np.array(lyr.weights["kernel"], copy=True)
    k[0, 0] += 2.0**-10
    g = Graph(s1.graph.name, tuple(lyr.with_(weights={**lyr.weights, "kernel": k}) if x.name == "d1_1" else x
                                   for x in s1.graph.layers), s1.graph.outputs)
    changed = linear_pipeline([pipe.nodes[0].stage, dataclasses.replace(s1, graph=g)])
    assert pipeline_hash(changed, in_t, in_shape) != h
    other_type = linear_pipeline([pipe.nodes[0].stage, dataclasses.replace(s1, output_type=FixedType(16, 5))])
    assert pipeline_hash(other_type, in_t, in_shape) != h
    assert pipeline_hash(pipe, FixedType(16, 6), in_shape) != h


def test_a_node_loads_only_the_libraries_its_run_folder_holds_with_their_recorded_sha256(tmp_path) -> None:
    """pipeline.json is data: a library outside the run folder, one without a sha256, or one whose bytes
    changed is refused before anything loads it; one bundled by the launcher is accepted."""
    from split4ml.runtime.spec import bundle_libraries, trusted_artifacts
    from split4ml.stages import linear_pipeline

    spec0 = spec_from_pipeline(linear_pipeline([dense_stage(0, (4, 3))]), whole=dense_stage(-1, (4, 3)))
    node = spec0.nodes[0].id
    elsewhere = tmp_path / "cache" / "libmodel.so"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"\x7fELF pretend")
    run = tmp_path / "run"
    run.mkdir()
    arts = bundle_libraries({node: {"csim": {"library": str(elsewhere), "project_name": "p"}}}, run)
    assert arts[node]["csim"]["library"] == f"lib/{node}.so" and (run / "lib" / f"{node}.so").is_file()
    good = read_spec(spec0.with_artifacts(arts).write(run / "pipeline.json"))
    ok = trusted_artifacts(good, run)
    assert ok.node(node).artifacts["csim"]["library"] == str((run / "lib" / f"{node}.so").resolve())

    def refused(art: dict, match: str) -> None:
        bad = spec0.with_artifacts({node: {"csim": art}})
        with pytest.raises(RuntimeFault, match=match):
            trusted_artifacts(bad, run)

    sha = arts[node]["csim"]["sha256"]
    refused({"library": str(elsewhere), "project_name": "p", "sha256": sha}, "outside its folder")
    refused({"library": "lib/../../cache/libmodel.so", "project_name": "p", "sha256": sha}, "outside its folder")
    refused({"library": f"lib/{node}.so", "project_name": "p"}, "no sha256")
    (run / "lib" / f"{node}.so").write_bytes(b"\x7fELF something else")
    refused({"library": f"lib/{node}.so", "project_name": "p", "sha256": sha}, "sha256 differs")
