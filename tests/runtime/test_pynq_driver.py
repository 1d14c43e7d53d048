"""The pynq driver against a mock ``pynq`` whose DMA runs the stage's C-simulation on the raw buffers.

The mock decodes what the driver put in the DMA input buffer with the AXI format hls4ml's
accelerator uses (``int16`` words holding ``value * 2**10`` for ``ap_fixed<16,6>``), runs the
C-simulation, and writes the results back the same way; so the driver's byte handling is checked
for real, against an independent implementation of the format.
"""

from __future__ import annotations

import threading
import types
from pathlib import Path

import numpy as np
import pytest
import zmq

from split4ml.errors import RuntimeFault
from split4ml.fixed import FixedType
from split4ml.runtime.node import NodeOptions, serve_node
from split4ml.runtime.pynq_driver import MAX_BUFFER_SETS, PynqDriver
from split4ml.runtime.spec import spec_from_pipeline
from split4ml.runtime.wire import SINK, SOURCE, decode_frame, encode_frame, encode_stop
from split4ml.stages import linear_pipeline
from split4ml.verify import random_inputs


class Buffer(np.ndarray):
    """Stands in for pynq's PynqBuffer: a numpy array that can be freed."""

    freed = False

    def freebuffer(self) -> None:
        self.freed = True


def make_mock_pynq(predict, in_scale_bits: int, out_scale_bits: int, dma_path: str = "hier_0") -> types.ModuleType:
    mod = types.ModuleType("pynq")
    log: dict[str, list] = {"allocated": [], "sent": [], "received": [], "overlays": []}

    def allocate(shape, dtype):
        buf = np.zeros(shape, dtype=dtype).view(Buffer)
        log["allocated"].append(buf)
        return buf

    class Channel:
        def __init__(self, direction: str) -> None:
            self.direction = direction
            self.buf = None

        def transfer(self, buf) -> None:
            assert isinstance(buf, Buffer) and not buf.freed
            self.buf = buf

        def wait(self) -> None:
            if self.direction == "recv":
                words = np.asarray(dma.sendchannel.buf)
                log["sent"].append(words.copy())
                values = words.astype(np.float64) / 2.0**in_scale_bits
                y = predict(values.reshape(words.shape[0], -1))
                self.buf[:] = np.round(np.asarray(y).reshape(self.buf.shape) * 2.0**out_scale_bits).astype(self.buf.dtype)
                log["received"].append(np.asarray(self.buf).copy())

    dma = types.SimpleNamespace(sendchannel=Channel("send"), recvchannel=Channel("recv"))

    class Overlay:
        def __init__(self, bitfile: str, download: bool = True) -> None:
            if not Path(bitfile).is_file():
                raise OSError(f"no {bitfile}")
            log["overlays"].append((bitfile, download))
            setattr(self, dma_path, types.SimpleNamespace(axi_dma_0=dma))

    mod.Overlay = Overlay
    mod.allocate = allocate
    mod.log = log
    return mod


@pytest.fixture(scope="module")
def stage_and_model(mlp):
    from split4ml.hls.csim import compile_stage

    _, stages, _ = mlp
    st = stages[1]  # 32 -> 16, ap_fixed<16,6> in and out: int16 words, 10 fractional bits
    assert (st.input_type.width, st.input_type.integer, st.output_type.width, st.output_type.integer) == (16, 6, 16, 6)
    return st, compile_stage(st)


@pytest.mark.slow
def test_driver_moves_raw_fixed_point_words_through_the_dma(stage_and_model, monkeypatch, tmp_path) -> None:
    st, model = stage_and_model
    mock = make_mock_pynq(model.predict, 10, 10)
    monkeypatch.setitem(__import__("sys").modules, "pynq", mock)
    bit = tmp_path / "stage_1.bit"
    bit.write_bytes(b"bitstream")
    drv = PynqDriver(bit, st.input_type, st.output_type, st.input_shape, st.output_shape)
    assert mock.log["overlays"] == [(str(bit), True)]
    x = random_inputs(st.input_type, st.input_shape, 12, seed=31)
    y = drv.predict(x)
    np.testing.assert_array_equal(y, model.predict(x))
    sent = mock.log["sent"][-1]
    assert sent.dtype == np.int16 and sent.shape == (12, 32)
    np.testing.assert_array_equal(sent, np.round(x * 1024).astype(np.int16))  # value * 2**(16 - 6)
    assert mock.log["received"][-1].dtype == np.int16
    # buffers are kept per batch size, at most MAX_BUFFER_SETS sizes; the oldest set is freed
    drv.predict(x[:5])
    drv.predict(x[:12])
    assert len(mock.log["allocated"]) == 4
    for n in range(1, MAX_BUFFER_SETS + 2):
        np.testing.assert_array_equal(drv.predict(x[:n]), model.predict(x[:n]))
    assert sum(b.freed for b in mock.log["allocated"]) >= 2
    drv.close()
    assert all(b.freed for b in mock.log["allocated"])


def test_driver_errors_say_what_to_do(monkeypatch, tmp_path) -> None:
    t = FixedType(16, 6)
    bit = tmp_path / "s.bit"
    bit.write_bytes(b"x")
    monkeypatch.setitem(__import__("sys").modules, "pynq", None)  # import pynq -> ImportError
    with pytest.raises(RuntimeFault, match="'pynq' package is not installed"):
        PynqDriver(bit, t, t, (4,), (2,))
    monkeypatch.setitem(__import__("sys").modules, "pynq", make_mock_pynq(lambda v: v, 10, 10))
    with pytest.raises(RuntimeFault, match="does not exist"):
        PynqDriver(tmp_path / "missing.bit", t, t, (4,), (2,))
    monkeypatch.setitem(__import__("sys").modules, "pynq", make_mock_pynq(lambda v: v, 10, 10, dma_path="other"))
    with pytest.raises(RuntimeFault, match="no DMA 'hier_0.axi_dma_0'"):
        PynqDriver(bit, t, t, (4,), (2,))


@pytest.mark.slow
def test_a_node_with_the_pynq_driver(stage_and_model, monkeypatch, tmp_path, ports) -> None:
    """The node loads the pynq driver from its options and serves frames through the (mock) board."""
    st, model = stage_and_model
    monkeypatch.setitem(__import__("sys").modules, "pynq", make_mock_pynq(model.predict, 10, 10))
    bit = tmp_path / "stage_1.bit"
    bit.write_bytes(b"bitstream")
    spec = spec_from_pipeline(linear_pipeline([st]))
    port, sink_port = ports(2)
    ctx = zmq.Context()
    sink = ctx.socket(zmq.PULL)
    sink.bind(f"tcp://127.0.0.1:{sink_port}")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    result: dict = {}
    opts = NodeOptions(node="stage_1", bind=f"tcp://127.0.0.1:{port}", connect={"sink": f"tcp://127.0.0.1:{sink_port}"},
                       driver="pynq", bitstream=str(bit))
    th = threading.Thread(target=lambda: result.update(serve_node(spec, opts, install_signals=False)), daemon=True)
    th.start()
    try:
        x = random_inputs(st.input_type, st.input_shape, 24, seed=32)
        (p_in,) = spec.parts_from(SOURCE)
        (p_out,) = spec.parts_into(SINK)
        for seq in range(0, 24, 8):
            push.send(encode_frame(spec.hash_bytes, SOURCE, 0, 0, seq, x[seq:seq + 8], p_in.wire))
        got = {}
        for _ in range(3):
            assert sink.poll(5000)
            fr = decode_frame(sink.recv(), spec.hash_bytes, SINK, {0: p_out.expect})
            got[fr.seq] = fr.values
        np.testing.assert_array_equal(np.concatenate([got[s] for s in (0, 8, 16)]), model.predict(x))
        push.send(encode_stop(spec.hash_bytes, 0))
        th.join(5)
        assert result["frames"] == 3 and result["samples"] == 24
    finally:
        th.join(0.1)
        ctx.destroy(linger=0)
