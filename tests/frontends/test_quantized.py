"""Quantized models: HGQ2 and Brevitas/QONNX, planned with their own types, built, verified, run.

Both models are made here (``makers.py``): an HGQ2 MLP trained one epoch, and a Brevitas MLP
exported to QONNX. They are planned on PYNQ-Z2 boards, their projects are written, and the chained
board C-simulations are checked bit for bit against the whole model as hls4ml converts it directly
from the file (and, for HGQ2, against Keras's own outputs), then streamed through ``run --emulate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("hgq")
pytest.importorskip("brevitas")

from model_makers import brevitas_mlp, hgq2_mlp  # noqa: E402

from cli_helpers import run_cli  # noqa: E402
from split4ml.boards import get_board  # noqa: E402
from split4ml.errors import PlanError  # noqa: E402
from split4ml.fixed import FixedType  # noqa: E402
from split4ml.frontends import load_model  # noqa: E402
from split4ml.plan.api import load_plan, make_plan  # noqa: E402
from split4ml.settings import DEFAULT_PRECISION  # noqa: E402

PYNQ = get_board("pynq-z2")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quantized")
    return {"hgq2": hgq2_mlp(d / "hgq2_mlp.keras"), "qonnx": brevitas_mlp(d / "brevitas_mlp.onnx")}


@pytest.mark.parametrize("which", ["hgq2", "qonnx"])
def test_types_come_from_the_quantizers(which: str, models) -> None:
    g = load_model(models[which])
    assert g.quantized
    dense = [lyr for lyr in g.body if lyr.kind == "Dense"]
    assert len(dense) == 3 and all(lyr.precision is not None for lyr in g.layers)
    # narrow weights: HGQ2 learns them per layer, Brevitas was told 6 bits
    assert all(lyr.precision.weight.width < DEFAULT_PRECISION.width for lyr in dense)
    assert len({str(lyr.precision.weight) for lyr in dense} | {str(lyr.precision.result) for lyr in dense}) > 1
    # each layer reads what its producer gives
    for lyr in g.body:
        if lyr.precision.input is not None and len(lyr.inputs) == 1:
            assert lyr.precision.input == g.layer(lyr.inputs[0]).precision.result, lyr.name


@pytest.mark.parametrize("which", ["hgq2", "qonnx"])
def test_plan_keeps_the_models_types_and_narrow_wires(which: str, models, tmp_path: Path) -> None:
    g = load_model(models[which])
    plan = make_plan(g, model=models[which], board=PYNQ, n_stages=3)
    assert len(plan.stages) == 3
    assert plan.build.input_precision == g.input.precision.result  # the model's input type, not a default
    for name, s in plan.settings.items():
        assert s.precision == g.layer(name).precision, name
    for st in plan.stages[:-1]:  # what crosses a board is the layer's own (narrow) result type
        last = st.layers[-1]
        assert st.output.type == g.layer(last).precision.result and st.output.type.width < 16
        assert st.output.bytes_per_sample == g.layer(last).n_out * st.output.type.storage_bytes
    plan.write(tmp_path / "plan.yaml")
    again, _ = load_plan(tmp_path / "plan.yaml")
    assert again.settings == plan.settings


def test_precision_options_are_refused_for_a_quantized_model(models, tmp_path: Path, monkeypatch, capsys) -> None:
    rc, out, err = run_cli(monkeypatch, capsys, "plan", str(models["hgq2"]), "--precision", "ap_fixed<12,4>")
    assert rc == 2 and "quantized" in err and "--precision" in err and "Traceback" not in err
    g = load_model(models["hgq2"])
    layer = next(lyr for lyr in g.body if lyr.kind == "Dense").name
    plan_file = tmp_path / "hand.yaml"
    plan_file.write_text(f"model: {models['hgq2']}\nboard: pynq-z2\nstages:\n"
                         f"  - layers: [{{name: {layer}, precision: 'ap_fixed<16,6>'}}]\n")
    with pytest.raises(PlanError, match="quantized.*remove 'precision'"):
        load_plan(plan_file)


def test_inspect_shows_the_quantized_types(models, monkeypatch, capsys) -> None:
    rc, out, _ = run_cli(monkeypatch, capsys, "inspect", str(models["qonnx"]), "--json")
    d = json.loads(out)
    assert rc == 0 and d["quantized"] and d["reader"] == "onnx"
    widths = {FixedType.parse(r["precision"]["result"]).width for r in d["layers"] if r["precision"]}
    assert min(widths) <= 8


@pytest.mark.slow
@pytest.mark.parametrize("which,converter", [("hgq2", "convert_from_keras_model"),
                                             ("qonnx", "convert_from_onnx_model")])
def test_quantized_model_plans_builds_verifies_and_runs(which: str, converter: str, models, tmp_path: Path,
                                                        monkeypatch, capsys) -> None:
    plan = tmp_path / "plan.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(models[which]), "--stages", "3", "-o", str(plan), "--json")
    assert rc == 0, out
    assert json.loads(out)["n_stages"] == 3
    rc, out, _ = run_cli(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "build"), "--json")
    assert rc == 0, out
    built = json.loads(out)
    assert [s["backend"] for s in built["stages"]] == ["VivadoAccelerator"] * 3
    p, _ = load_plan(plan)
    for i, st in enumerate(built["stages"]):  # the AXI wrapper carries the stage's own wire types
        axi = (Path(st["project_dir"]) / "firmware" / "myproject_axi.h").read_text()
        want = p.stages[i].output.type
        t_out = next(line for line in axi.splitlines() if "T_out;" in line)
        assert f"ap_{'' if want.signed else 'u'}fixed<{8 * want.storage_bytes},{want.integer}" in t_out, axi
    rc, out, err = run_cli(monkeypatch, capsys, "verify", str(plan), "--samples", "200", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["mismatched_samples"] == 0 and v["samples"] == 200, out + err
    assert v["reference"]["converter"] == f"hls4ml.converters.{converter}"
    assert v["reference"]["kind"] == "hls4ml" and v["reference"]["model"] == str(models[which])
    if which == "hgq2":  # HGQ2 is bit-exact to Keras by design: so is the pipeline
        assert v["framework_agreement"]["bit_exact"] and v["framework_agreement"]["framework"] == "keras"
    rc, out, err = run_cli(monkeypatch, capsys, "run", str(plan), "--emulate", "--samples", "60", "--batch", "4",
                           "--json")
    r = json.loads(out)
    assert rc == 0 and r["bit_exact"] and r["delivered"] == 60 and r["lost"] == 0, out + err


@pytest.mark.slow
def test_binary_net_keeps_its_xnor_wires_bit_exact(tmp_path: Path) -> None:
    """A binary net's activations are 1-bit values that hls4ml's XNOR Dense reads as -1/+1: a board
    receiving them must give its input that very type, not a plain 1-bit unsigned one."""
    from model_makers import keras2_binary_mlp

    from split4ml.verify import random_inputs, verify_plan

    g = load_model(keras2_binary_mlp(tmp_path))
    assert g.quantized
    plan = make_plan(g, model=tmp_path / "bnn.json", board=PYNQ, n_stages=3)
    one_bit = [st for st in plan.stages[:-1] if st.output.type.width == 1]
    assert one_bit, [str(st.output.type) for st in plan.stages]  # a binary wire crosses a board
    res = verify_plan(plan, g, random_inputs(plan.build.input_precision, (16,), 100, seed=3))
    assert res.bit_exact and res.mismatched_samples == 0, res.as_dict()


@pytest.mark.slow
def test_quantized_scales_run_on_the_shards_bit_exact(models, tmp_path: Path, monkeypatch, capsys) -> None:
    """A QONNX Dense reads as hls4ml's Dense, an ApplyAlpha (the bias), a ReLU and an ApplyAlpha (the
    activation quantizer's scale). Split by neurons, each shard runs all four on its slice: the ApplyAlphas
    with their channels' factors and the types hls4ml gave them (3 hls4ml compiles)."""
    g = load_model(models["qonnx"])
    unit = next(u for u in g.units() if u[0].kind == "Dense")
    assert [lyr.kind for lyr in unit] == ["Dense", "ApplyAlpha", "Activation", "ApplyAlpha"]
    names = [lyr.name for lyr in unit]
    first = g.units()[0]
    rest = [lyr.name for u in g.units()[len(g.units()) - 2:] for lyr in u]
    assert [lyr.name for u in g.units() for lyr in u] == [*[lyr.name for lyr in first], *names, *rest]
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"split4ml_plan: 1\nmodel: {models['qonnx']}\nboard: pynq-z2\nstages:\n"
                    f"  - layers: {[lyr.name for lyr in first]}\n"
                    f"  - layers: {names}\n    split: {{layer: {names[0]}, kind: neuron, parts: 2}}\n"
                    f"  - layers: {rest}\n")
    rc, out, err = run_cli(monkeypatch, capsys, "check", str(plan), "--json")
    assert rc == 0, err
    shards = json.loads(out)["stages"][1]["shards"]
    assert [sh["layers"] for sh in shards] == [[f"{n}__n{i}" for n in names] for i in range(2)]
    rc, out, err = run_cli(monkeypatch, capsys, "verify", str(plan), "--samples", "100", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["mismatched_samples"] == 0, out + err
