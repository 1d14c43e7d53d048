import pytest

from split4ml.boards import catalogue, get_board, load_board_file
from split4ml.errors import BoardError


def test_builtin_catalogue_has_the_issue_boards():
    cat = catalogue()
    for name in ("pynq-z2", "zcu102", "alveo-u200", "alveo-u250"):
        assert name in cat
    z = cat["pynq-z2"]
    assert (z.part, z.lut, z.ff, z.dsp, z.bram18, z.uram) == ("xc7z020clg400-1", 53200, 106400, 220, 280, 0)
    assert z.clock_mhz == 100 and z.backend == "VivadoAccelerator" and z.hls4ml_board == "pynq-z2"
    assert z.link.bandwidth_mbps > 0 and z.link.latency_us > 0


def test_link_times():
    z = get_board("pynq-z2")
    # 940 Mb/s: 1,000 bytes = 8,000 bits = 8.51 us
    assert z.link.transfer_us(1000) == pytest.approx(8000 / 940)
    assert z.link.hop_us(1000) == pytest.approx(z.link.latency_us + 8000 / 940)


def test_user_board_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(
        "boards:\n"
        "  - name: tiny\n    part: xc7z010clg400-1\n    resources: {lut: 17600, ff: 35200, dsp: 80, bram18: 120}\n"
        "    clock_mhz: 100\n    backend: VivadoAccelerator\n    hls4ml_board: null\n"
        "    link: {bandwidth_mbps: 100, latency_us: 500}\n"
    )
    b = get_board("tiny", [f])
    assert b.lut == 17600 and b.link.bandwidth_mbps == 100
    assert get_board(str(f)).name == "tiny"  # a path in place of a name


def test_board_names_are_read_in_any_case_unless_two_differ_only_in_case(tmp_path):
    """As hls4ml reads its options: ``--board PYNQ-Z2`` is the catalogue's pynq-z2. A board file may
    add a board whose name differs from another only in case; then only the exact name picks it."""
    assert get_board("PYNQ-Z2") == get_board("pynq-z2") and get_board("Alveo-U250").name == "alveo-u250"
    f = tmp_path / "twins.yaml"
    f.write_text(
        "boards:\n"
        "  - name: Pynq-Z2\n    part: xc7z020clg400-1\n    resources: {lut: 53200, ff: 106400, dsp: 220, bram18: 280}\n"
        "    clock_mhz: 100\n    backend: VivadoAccelerator\n    hls4ml_board: pynq-z2\n"
        "    link: {bandwidth_mbps: 100, latency_us: 500}\n"
    )
    assert get_board("Pynq-Z2", [f]).link.bandwidth_mbps == 100  # the exact name
    assert get_board("pynq-z2", [f]).link.bandwidth_mbps != 100
    with pytest.raises(BoardError, match="differ only in case"):
        get_board("PYNQ-Z2", [f])


def test_board_errors_name_the_field(tmp_path):
    with pytest.raises(BoardError, match="unknown board 'nope'.*pynq-z2"):
        get_board("nope")
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\npart: x\nresources: {lut: 1, ff: 1, dsp: 1}\nclock_mhz: 100\n"
                 "link: {bandwidth_mbps: 1, latency_us: 1}\n")
    with pytest.raises(BoardError, match=r"resources: missing field 'bram18'"):
        load_board_file(f)


@pytest.mark.parametrize("field, value", [("name", "evil\ntouch /tmp/pwned"), ("name", "a b"), ("name", "x;rm -rf ~"),
                                          ("part", "xc7z020$(id)"), ("hls4ml_board", "pynq`id`")])
def test_names_written_into_scripts_hold_no_shell(tmp_path, field, value):
    """A board's name, part and hls4ml board go into build.sh and hls4ml's Tcl: a newline or shell
    character in them is refused, naming the field (the audit ran a command hidden in a name)."""
    import yaml

    d = {"name": "ok", "part": "xc7z020clg400-1", "resources": {"lut": 1, "ff": 1, "dsp": 1, "bram18": 1},
         "clock_mhz": 100, "hls4ml_board": "pynq-z2", "link": {"bandwidth_mbps": 1, "latency_us": 1}}
    d[field] = value
    f = tmp_path / "evil.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(BoardError, match=rf"{field} .* may hold only letters, digits"):
        load_board_file(f)


def test_stage_script_refuses_an_unsafe_name_even_from_code():
    import dataclasses

    from split4ml.errors import BuildError
    from split4ml.hls.scripts import stage_script
    from split4ml.settings import BuildSettings
    from split4ml.stages import Stage

    evil = dataclasses.replace(get_board("pynq-z2"), name="z2\necho pwned")
    stage = Stage(index=0, board=evil, graph=None, settings={}, input_type=None, output_type=None,
                  build=BuildSettings())
    with pytest.raises(BuildError, match="board name .* may hold only"):
        stage_script(stage)
