"""The distributed runtime: one ``split4ml node`` process per board, linked by ZeroMQ.

- :mod:`.wire`: the frame format (versioned header, raw fixed-point payload, CRC32);
- :mod:`.spec`: the runtime spec every process agrees on (``pipeline.json``) and the plan hash;
- :mod:`.drivers` / :mod:`.pynq_driver`: what computes a node's piece (``csim``, ``reference``, ``pynq``);
- :mod:`.transport`: ZeroMQ sockets with high-water marks (backpressure);
- :mod:`.node`: one node's receive -> join -> compute -> send loop;
- :mod:`.run`: the launcher (emulated pipeline on one machine, source, sink, faults, report);
- :mod:`.hosts`: real hosts from a hosts file.

Nothing here imports Keras or hls4ml at module level, so a board needs only numpy and pyzmq
(and ``pynq``) to run a node from its ``pipeline.json``.
"""

from .node import NodeOptions, serve_node
from .run import Chaos, RunOptions, RunReport, StageReport, run_pipeline
from .spec import RuntimeSpec, pipeline_hash, read_spec, spec_from_pipeline

__all__ = [
    "Chaos",
    "NodeOptions",
    "RunOptions",
    "RunReport",
    "RuntimeSpec",
    "StageReport",
    "pipeline_hash",
    "read_spec",
    "run_pipeline",
    "serve_node",
    "spec_from_pipeline",
]
