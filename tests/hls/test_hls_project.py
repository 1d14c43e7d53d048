"""Per-board hls4ml projects: backend choice, conversion, wire types, written files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from split4ml.boards import get_board
from split4ml.errors import BuildError
from split4ml.fixed import FixedType
from split4ml.frontends.keras import graph_from_keras
from split4ml.hls.project import axi_type, backend_for, convert_stage, converter_kwargs, fix_axi_typedefs
from split4ml.networks import mnist_fcnn
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.stages import make_stages

R18 = FixedType(18, 8, rounding="RND_CONV", saturation="SAT")


def test_backend_for_pynq_and_alveo() -> None:
    backend, kw = backend_for(get_board("pynq-z2"))
    assert backend == "VivadoAccelerator"
    assert kw["board"] == "pynq-z2" and kw["clock_period"] == 10
    backend, kw = backend_for(get_board("alveo-u200"))
    assert backend == "Vitis"
    assert kw["part"] == "xcu200-fsgd2104-2-e" and "board" not in kw
    assert kw["clock_period"] == pytest.approx(1000.0 / 300.0)


def test_axi_type_widens_to_storage_bytes_keeping_integer_bits() -> None:
    t = axi_type(R18)
    assert (t.width, t.integer, t.rounding, t.saturation) == (32, 8, "RND_CONV", "SAT")
    assert axi_type(FixedType(16, 6)) == FixedType(16, 6)
    assert axi_type(FixedType(5, 2, signed=False)).width == 8


def _stages(board: str, fc1_result: FixedType = R18):
    graph = graph_from_keras(mnist_fcnn())
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    settings["fc1"] = LayerSettings(reuse_factor=8, strategy="Resource", precision=LayerPrecision(result=fc1_result))
    b = get_board(board)
    return make_stages(graph, [("fc1",), tuple(names[1:])], [b, b], settings, BuildSettings())


def test_convert_stage_writes_a_vivado_accelerator_project(tmp_path: Path) -> None:
    stages = _stages("pynq-z2")
    hm = convert_stage(stages[0], tmp_path / "stage_0")
    prj = tmp_path / "stage_0"
    for f in ("build_prj.tcl", "design.tcl", "project.tcl", "firmware/myproject.cpp", "firmware/myproject_axi.h",
              "hls4ml_config.yml"):
        assert (prj / f).is_file(), f
    assert "auto" not in (prj / "hls4ml_config.yml").read_text()
    assert 'set part "xc7z020clg400-1"' in (prj / "project.tcl").read_text()
    # the AXI wrapper carries the wire types as valid C++ (hls4ml 1.3 would write 'fixed<...>')
    axi_h = (prj / "firmware/myproject_axi.h").read_text()
    assert "typedef ap_fixed<16,6,AP_RND_CONV,AP_SAT> T_in;" in axi_h
    assert "typedef ap_fixed<32,8,AP_RND_CONV,AP_SAT> T_out;" in axi_h
    fc1 = hm.graph["fc1"]
    assert fc1.get_attr("strategy").lower() == "resource" and fc1.get_attr("reuse_factor") == 8
    assert FixedType.parse(str(hm.get_output_variables()[0].type.precision)) == R18


def test_convert_stage_vitis_for_boards_without_hls4ml_board(tmp_path: Path) -> None:
    stages = _stages("alveo-u200")
    backend, kw = converter_kwargs(stages[1])
    assert backend == "Vitis" and kw["io_type"] == "io_parallel" and "input_type" not in kw
    convert_stage(stages[1], tmp_path / "stage_1")
    assert 'xcu200-fsgd2104-2-e' in (tmp_path / "stage_1" / "project.tcl").read_text()


def test_wrong_output_wire_type_is_a_build_error(tmp_path: Path) -> None:
    stage = dataclasses.replace(_stages("pynq-z2")[0], output_type=FixedType(8, 4))
    with pytest.raises(BuildError, match=r"stage_0 on pynq-z2.*output.*ap_fixed<8,4>"):
        convert_stage(stage, tmp_path / "bad")


def test_fix_axi_typedefs_rewrites_only_typedefs(tmp_path: Path) -> None:
    fw = tmp_path / "firmware"
    fw.mkdir()
    header = fw / "p_axi.h"
    header.write_text("typedef fixed<18,8,RND_CONV,SAT,0> T_in;\ntypedef ufixed<8,0> T_out;\n"
                      "typedef float T_other;\n// fixed<4,2> T_in; in a comment stays\n")
    fix_axi_typedefs(tmp_path, "p")
    assert header.read_text() == ("typedef ap_fixed<18,8,AP_RND_CONV,AP_SAT> T_in;\ntypedef ap_ufixed<8,0> T_out;\n"
                                  "typedef float T_other;\n// fixed<4,2> T_in; in a comment stays\n")
