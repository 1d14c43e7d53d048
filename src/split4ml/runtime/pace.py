"""Pacing an emulated pipeline to the performance model (``split4ml run PLAN --emulate --pace``).

The planner's figures (:mod:`split4ml.plan.metrics`) say how fast a cluster of boards is. A paced run
checks how those figures *compose* against real processes and sockets: the source's link, fan-out
to neuron shards, joins, batching and the slowest step.

Every node process keeps four resources in virtual time, each a first-come first-served server, all
stretched by the pace ``factor``:

- its **receive link** (``link_mbps``): a frame of ``n`` bytes is in no earlier than ``n x 8 /
  link_mbps`` after the previous one was in (the sender's link already took the transfer time);
- its **per-frame cost** (``frame_us``: the processor's software and DMA set-up);
- its **fabric**: a frame of ``count`` samples takes ``(count - 1) x interval + latency``, the
  wrapper's reads and writes included, and starts once the frame is in, its per-frame cost paid and
  the previous frame has left the fabric;
- its **send link**: each outgoing frame (one per consumer) occupies it for its bytes.

An outgoing frame leaves the node when its send link is done with it. Byte counts are those of the
real frames (header and CRC included), so the model's byte accounting is checked too. The node runs
its driver (the C-simulation) as soon as a frame is complete; if the driver is still running when
the paced fabric would be done, the frame is late (``pace_overruns``) and the factor was too small.
The launcher paces the source's sends and the sink's receipts on their links the same way.

The planner predicts ``1 / (bottleneck x factor)`` samples a second at that pace. The launcher
chooses the factor (unless given) from the time each node's driver takes on one frame, measured
before the run: every node's driver time fits :data:`SAFETY` times over inside its paced interval,
all nodes together fit on this machine's cores, and the slowest step's frame lasts at least
:data:`MIN_FRAME_S`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RuntimeFault

if TYPE_CHECKING:
    from ..plan.metrics import BoardLoad, Endpoint
    from ..plan.planfile import Plan
    from ..stages import Pipeline

#: How many times over a node's driver time must fit in its paced interval.
SAFETY = 2.0
#: The slowest step's paced frame lasts at least this long (timer and scheduling resolution).
MIN_FRAME_S = 2e-3
#: A node's work per frame besides its driver (decoding, joining, encoding, sockets), seconds.
NODE_OVERHEAD_S = 4e-4


@dataclass(frozen=True)
class NodePace:
    """One board's figures in the model, microseconds at pace 1.

    Attributes:
        fabric_interval_us / fabric_latency_us: its fabric's interval and latency per sample.
        frame_us: its per-frame fixed cost.
        link_mbps: its link's bandwidth (both ways).
        interval_us: the model's interval of the board (the largest of fabric, links and per-frame
            cost per sample), at the run's batch.
    """

    fabric_interval_us: float
    fabric_latency_us: float
    frame_us: float
    link_mbps: float
    interval_us: float

    def fabric_frame_us(self, count: int) -> float:
        return (max(1, count) - 1) * self.fabric_interval_us + self.fabric_latency_us


@dataclass(frozen=True)
class PaceModel:
    """The model's figures for every node of a run, and what it predicts.

    ``bottleneck_us`` (per sample, at pace 1) and ``bottleneck`` (``source``, ``stage`` or ``sink``)
    are the planner's, for frames of ``batch`` samples; ``factor`` is the pace (None: not chosen yet).
    """

    nodes: Mapping[str, NodePace]
    source_mbps: float
    sink_mbps: float
    batch: int
    bottleneck_us: float
    bottleneck: str
    latency_us: float
    factor: float | None = None

    @property
    def predicted_throughput_per_s(self) -> float:
        """Samples a second the model predicts at this pace."""
        if self.factor is None:
            raise RuntimeFault("the pace factor is not chosen yet")
        return 1e6 / (self.bottleneck_us * self.factor)

    def with_factor(self, factor: float) -> PaceModel:
        if not (factor > 0 and math.isfinite(factor)):
            raise RuntimeFault(f"--pace {factor!r}: the pace factor must be a positive number, e.g. --pace 50")
        return PaceModel(dict(self.nodes), self.source_mbps, self.sink_mbps, self.batch, self.bottleneck_us,
                         self.bottleneck, self.latency_us, float(factor))

    def frames_in_flight(self) -> int:
        """Frames the source must keep in flight so that the slowest step never waits (latency over
        interval, per frame, with room for the source and sink)."""
        return int(math.ceil(self.latency_us / max(self.bottleneck_us * self.batch, 1e-9))) + 4

    def as_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "batch": self.batch, "bottleneck_us": self.bottleneck_us,
                "bottleneck": self.bottleneck, "latency_us": self.latency_us, "source_mbps": self.source_mbps,
                "sink_mbps": self.sink_mbps,
                "nodes": {k: {"fabric_interval_us": v.fabric_interval_us, "fabric_latency_us": v.fabric_latency_us,
                              "frame_us": v.frame_us, "link_mbps": v.link_mbps, "interval_us": v.interval_us}
                          for k, v in self.nodes.items()}}

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.as_dict(), indent=1))
        return p


def read_pace(path: str | Path) -> PaceModel:
    """Read a pace file written by :meth:`PaceModel.write` (the launcher passes it to each node)."""
    try:
        d = json.loads(Path(path).read_text())
        nodes = {str(k): NodePace(**{f: float(v[f]) for f in ("fabric_interval_us", "fabric_latency_us", "frame_us",
                                                                 "link_mbps", "interval_us")})
                 for k, v in d["nodes"].items()}
        return PaceModel(nodes, float(d["source_mbps"]), float(d["sink_mbps"]), int(d["batch"]),
                         float(d["bottleneck_us"]), str(d["bottleneck"]), float(d["latency_us"]),
                         None if d.get("factor") is None else float(d["factor"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeFault(f"--pace {path}: not a pace file written by 'split4ml run --pace' ({exc})") from exc


def pace_from_loads(node_ids: Sequence[Sequence[str]], steps: Sequence[Sequence[BoardLoad]], source: Endpoint,
                    sink: Endpoint, *, batch: int, io_type: str) -> PaceModel:
    """The pace figures of a pipeline whose step ``k`` runs nodes ``node_ids[k]`` with loads ``steps[k]``
    (:func:`split4ml.plan.planfile.stage_loads`), and the model's prediction for it."""
    from ..plan.metrics import group_metrics

    if [len(s) for s in node_ids] != [len(s) for s in steps]:
        raise RuntimeFault(f"the plan's boards per step {[len(s) for s in steps]} are not the pipeline's nodes per "
                           f"step {[len(s) for s in node_ids]}")
    m = group_metrics(steps, source, sink, batch=batch, io_type=io_type)
    nodes: dict[str, NodePace] = {}
    for ids, loads in zip(node_ids, steps, strict=True):
        for nid, load in zip(ids, loads, strict=True):
            ii, lat = load.fabric_us(io_type)
            nodes[nid] = NodePace(ii, lat, load.board.link.latency_us, load.board.link.bandwidth_mbps,
                                  load.interval_us(io_type, batch))
    return PaceModel(nodes, source.link.bandwidth_mbps, sink.link.bandwidth_mbps, batch, m.bottleneck_us,
                     m.bottleneck, m.latency_us)


def link_s(mbps: float, n_bytes: int, factor: float) -> float:
    """Seconds ``n_bytes`` occupy a link of ``mbps`` at pace ``factor``."""
    return n_bytes * 8.0 / mbps * 1e-6 * factor


@dataclass
class Server:
    """One resource in virtual time (monotonic seconds), first come first served."""

    free: float = -math.inf

    def serve(self, ready: float, duration: float) -> float:
        """A job ready at ``ready`` holds the resource for ``duration``; returns when it is done."""
        done = max(ready, self.free) + duration
        self.free = done
        return done

    def pass_through(self, arrival: float, duration: float) -> float:
        """A transfer that arrived at ``arrival`` (its sender already spent the transfer time) is in
        no earlier than ``duration`` after the previous one was in."""
        done = max(arrival, self.free + duration)
        self.free = done
        return done


@dataclass
class NodePacer:
    """The four resources of one paced node (see the module docstring)."""

    pace: NodePace
    factor: float
    recv: Server = field(default_factory=Server)
    frame: Server = field(default_factory=Server)
    fabric: Server = field(default_factory=Server)
    send: Server = field(default_factory=Server)
    overruns: int = 0

    def received(self, arrival: float, n_bytes: int) -> float:
        """When a frame of ``n_bytes`` that arrived at ``arrival`` is in."""
        return self.recv.pass_through(arrival, link_s(self.pace.link_mbps, n_bytes, self.factor))

    def computed(self, ready: float, count: int, driver_done: float) -> float:
        """When the fabric is done with a frame of ``count`` samples that was in at ``ready``; the driver
        finished its work at ``driver_done`` (a frame whose driver ran longer is counted as an overrun)."""
        paid = self.frame.serve(ready, self.pace.frame_us * 1e-6 * self.factor)
        done = self.fabric.serve(paid, self.pace.fabric_frame_us(count) * 1e-6 * self.factor)
        if driver_done > done:
            self.overruns += 1
            done = self.fabric.free = driver_done
        return done

    def sent(self, ready: float, n_bytes: int) -> float:
        """When an outgoing frame of ``n_bytes`` ready at ``ready`` has left on the send link."""
        return self.send.serve(ready, link_s(self.pace.link_mbps, n_bytes, self.factor))


def time_drivers(drivers: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], batch: int,
                 repeats: int = 3) -> dict[str, float]:
    """Median seconds each driver takes on one frame of ``batch`` zero samples (after one warm-up)."""
    out: dict[str, float] = {}
    for nid, drv in drivers.items():
        x = np.zeros((batch, *shapes[nid]))
        drv.predict(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            drv.predict(x)
            times.append(time.perf_counter() - t)
        out[nid] = statistics.median(times)
    return out


def choose_factor(model: PaceModel, frame_s: Mapping[str, float], cores: int | None = None) -> float:
    """The smallest pace at which every node's work on one frame (``frame_s``: its driver, plus
    :data:`NODE_OVERHEAD_S`) fits :data:`SAFETY` times in its paced interval, all nodes' work fits on
    ``cores`` cores within the slowest step's paced frame, and that frame lasts :data:`MIN_FRAME_S`;
    rounded up to two significant digits."""
    cores = max(1, cores or os.cpu_count() or 1)
    b = model.batch
    need = [MIN_FRAME_S / (b * model.bottleneck_us * 1e-6)]
    total = 2 * NODE_OVERHEAD_S  # the source and the sink, in the launcher
    for nid, pace in model.nodes.items():
        work = frame_s.get(nid, 0.0) + NODE_OVERHEAD_S
        total += work
        need.append(SAFETY * work / (b * pace.interval_us * 1e-6))
    need.append(SAFETY * total / (cores * b * model.bottleneck_us * 1e-6))
    f = max(need)
    digits = 10 ** (math.floor(math.log10(f)) - 1)
    return math.ceil(f / digits) * digits


def time_node_drivers(spec_path: str | Path, driver: str, batch: int, reference_mode: str = "fixed",
                      timeout_s: float = 300.0) -> dict[str, float]:
    """:func:`time_drivers` of every node of the runtime spec at ``spec_path``, measured in a child process
    with the environment the launcher gives its nodes (one BLAS thread), so the figures are theirs."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "split4ml.runtime.pace", str(spec_path), driver, str(batch), reference_mode]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFault(f"--pace: timing the nodes' drivers took longer than {timeout_s:g} s; give the factor "
                           "(--pace FACTOR)") from exc
    if res.returncode != 0:
        tail = " | ".join(res.stderr.strip().splitlines()[-3:])
        raise RuntimeFault(f"--pace: timing the nodes' drivers failed ({tail}); give the factor (--pace FACTOR)")
    return {str(k): float(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def _main(argv: Sequence[str]) -> None:
    from .drivers import make_driver
    from .spec import read_spec, trusted_artifacts

    spec_path, driver, batch, reference_mode = argv
    spec = trusted_artifacts(read_spec(spec_path), Path(spec_path).parent)
    drivers: dict[str, Any] = {}
    try:
        for n in spec.nodes:
            drivers[n.id] = make_driver(driver, n.artifacts, n.input_shape, n.output_shape, n.input_type,
                                        n.output_type, reference_mode=reference_mode)
        took = time_drivers(drivers, {n.id: n.input_shape for n in spec.nodes}, int(batch))
    finally:
        for d in drivers.values():
            d.close()
    print(json.dumps(took))


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])


__all__ = ["MIN_FRAME_S", "NODE_OVERHEAD_S", "NodePace", "NodePacer", "PaceModel", "SAFETY", "Server",
           "choose_factor", "link_s", "pace_from_loads", "read_pace", "time_drivers",
           "time_node_drivers"]


def pace_model(plan: Plan, pipeline: Pipeline, batch: int | None = None) -> PaceModel:
    """The model's figures for every node of ``pipeline`` (:func:`~split4ml.lower.plan_pipeline` of
    ``plan``), for a paced run with frames of ``batch`` samples (default: the plan's)."""
    from ..plan.planfile import stage_loads

    steps, source, sink = stage_loads(plan.stages)
    return pace_from_loads([list(s) for s in pipeline.steps], steps, source, sink,
                           batch=plan.batch if batch is None else batch, io_type=plan.build.io_type)
