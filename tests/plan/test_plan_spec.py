"""Plan file form checks: every error names its YAML path."""

import pytest

from split4ml.errors import PlanError
from split4ml.plan.planfile import spec_from_dict


def minimal(**extra):
    d = {"model": "m.keras", "board": "pynq-z2", "stages": [{"layers": ["fc1"]}, {"layers": ["fc2", "softmax"]}]}
    d.update(extra)
    return d


def test_minimal_plan_gets_defaults():
    s = spec_from_dict(minimal())
    assert s.cap == 0.85 and s.objective == "throughput" and s.estimator == "analytic"
    assert [st.board for st in s.stages] == ["pynq-z2", "pynq-z2"]
    assert [ls.name for ls in s.stages[1].layers] == ["fc2", "softmax"]
    assert s.build.io_type == "io_parallel"


def test_layer_mapping_with_settings():
    d = minimal(stages=[{"layers": [{"name": "fc1", "reuse_factor": 4, "strategy": "resource",
                                     "precision": {"weight": "ap_fixed<8,3>"}}]}])
    ls = spec_from_dict(d).stages[0].layers[0]
    assert ls.reuse_factor == 4 and ls.strategy == "Resource"
    assert str(ls.precision.weight) == "ap_fixed<8,3>"


@pytest.mark.parametrize(
    "data,path",
    [
        ({"board": "pynq-z2", "stages": [["fc1"]]}, "model"),
        (minimal(stages=[]), "stages"),
        (minimal(stages=[{"board": "pynq-z2"}]), r"stages\[0\]\.layers"),
        (minimal(stages=[{"layers": ["fc1"], "bord": "x"}]), r"stages\[0\]: unknown field"),
        (minimal(stages=[{"layers": [{"name": "fc1", "reuse_factor": 0}]}]), r"stages\[0\]\.layers\[0\]\.reuse_factor"),
        (minimal(stages=[{"layers": ["a"]}, {"layers": [{"name": "b", "strategy": "Fast"}]}]),
         r"stages\[1\]\.layers\[0\]\.strategy"),
        (minimal(stages=[{"layers": [{"name": "fc1", "precision": {"weight": "float"}}]}]),
         r"stages\[0\]\.layers\[0\]\.precision"),
        (minimal(cap=1.5), "cap"),
        (minimal(objective="speed"), "objective"),
        (minimal(hls={"io_type": "io_serial"}), r"hls\.io_type"),
        (minimal(hls={"default_precision": "double"}), r"hls\.default_precision"),
        (minimal(split4ml_plan=7), "split4ml_plan"),
        ([1, 2], "plan"),
    ],
)
def test_errors_name_the_yaml_path(data, path):
    with pytest.raises(PlanError, match=path):
        spec_from_dict(data)
