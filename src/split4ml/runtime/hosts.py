"""Real hosts: ``split4ml run PLAN --hosts hosts.yaml``.

A hosts file says where each node runs and how the launcher (this machine, which runs the source
and the sink) is reached::

    controller: 192.168.2.1        # this machine's address as the boards see it
    launch: print                  # print | ssh | local (default print)
    command: split4ml              # the split4ml executable on the hosts
    workdir: /home/xilinx/split4ml # where pipeline.json and the bitstreams are on the hosts
    sink_port: 5600                # the launcher's ports (defaults 5600 and 5601)
    stats_port: 5601
    keys: keys                     # 'split4ml keys' folder: CURVE on every link (same path on the hosts);
                                   # required, unless 'insecure: true' (plain TCP, with a warning)
    # bind: 0.0.0.0                # every process binds all interfaces (default: its own address)
    nodes:
      stage_0: {host: 192.168.2.10, driver: pynq, bitstream: stage_0.bit}
      stage_1: {host: 192.168.2.11, port: 5555, ssh: xilinx@192.168.2.11}
      stage_2: {host: 192.168.2.12}

Every node of the pipeline must be listed. Per node: ``host`` (required), ``port`` (5555),
``driver`` (``pynq``), ``bitstream`` (``<node id>.bit``, relative to ``workdir``), ``ssh``
(``user@host`` for ``launch: ssh``; default ``xilinx@<host>``), ``plan`` (for ``csim`` or
``reference`` nodes on other hosts: the plan file there, from which the node compiles its stage;
default: the plan path given to ``run``, else ``pipeline.json`` with the library compiled here, for
hosts that share this file system). Nodes bind ``tcp://<host>:<port>``, their own address, and the
launcher binds its sink and statistics on ``controller``: never every interface, unless ``bind:
0.0.0.0`` asks for it (then every process binds that address, and ``run`` warns). Producers connect
to ``tcp://<host>:<port>``.

``launch: print`` prints each host's ``split4ml node`` command and waits (``--start-timeout``) for
every node to report; ``ssh`` starts them with ``ssh -o BatchMode=yes`` (keys must be set up) and
restarts them over ssh with ``--restart``; ``local`` starts them as local processes (hosts on this
machine, e.g. for a try-out with ``host: 127.0.0.1``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuntimeFault
from ..settings import choice
from ..stages import Pipeline, Stage
from ..yamlio import read_yaml
from .drivers import DRIVERS
from .run import (
    NodeLaunch,
    Progress,
    RunOptions,
    RunReport,
    chaos_args,
    node_argv,
    run_with_launches,
)
from .spec import RuntimeSpec, bundle_libraries, spec_from_pipeline

LAUNCH_MODES = ("print", "ssh", "local")


@dataclass(frozen=True)
class HostNode:
    """Where and how one node runs."""

    node: str
    host: str
    port: int = 5555
    driver: str = "pynq"
    bitstream: str | None = None
    ssh: str | None = None
    plan: str | None = None

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True)
class HostsFile:
    """A parsed hosts file (see the module docstring)."""

    controller: str
    nodes: Mapping[str, HostNode]
    launch: str = "print"
    command: str = "split4ml"
    workdir: str | None = None
    sink_port: int = 5600
    stats_port: int = 5601
    #: the address every process binds instead of its own (``bind``; None: each its own)
    bind_host: str | None = None
    #: the keys directory (``split4ml keys``): CURVE on every link; the same path on the hosts,
    #: relative to ``workdir`` (None: plain TCP)
    keys: str | None = None
    #: run with plain TCP links, without keys (``insecure: true``; run warns)
    insecure: bool = False

    def node_bind(self, node: str) -> str:
        """Where node ``node`` binds its input."""
        hn = self.nodes[node]
        return f"tcp://{self.bind_host or hn.host}:{hn.port}"

    def launcher_bind(self, port: int) -> str:
        """Where the launcher binds its sink or statistics ``port``."""
        return f"tcp://{self.bind_host or self.controller}:{port}"

    def warnings(self) -> list[str]:
        """What the user should know about this file (every interface bound, plain links)."""
        out = []
        if self.bind_host in ALL_INTERFACES:
            out.append(f"bind: {self.bind_host} makes every node, the sink and the statistics listen on all "
                       "interfaces; leave 'bind' out to bind each host's own address")
        if self.insecure and self.keys is None:
            out.append("insecure: true: the links are plain TCP, neither encrypted nor authenticated; anyone who "
                       "reaches these ports can read and inject frames")
        return out

    @property
    def sink_address(self) -> str:
        return f"tcp://{self.controller}:{self.sink_port}"

    @property
    def stats_address(self) -> str:
        return f"tcp://{self.controller}:{self.stats_port}"


def _port(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise RuntimeFault(f"{where}: expected a TCP port 1..65535, got {value!r}")
    return value


def hosts_from_dict(d: Any, where: str = "hosts") -> HostsFile:
    """Check and read a hosts mapping; errors name the field (``hosts.yaml: nodes.stage_1.port``)."""
    if not isinstance(d, Mapping):
        raise RuntimeFault(f"{where}: expected a mapping with 'controller' and 'nodes'")
    known = {"controller", "nodes", "launch", "command", "workdir", "sink_port", "stats_port", "bind", "bind_host",
             "keys", "insecure"}
    unknown = set(d) - known
    if unknown:
        raise RuntimeFault(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
    if not d.get("controller"):
        raise RuntimeFault(f"{where}: controller: missing: this machine's address as the hosts reach it")
    launch = choice(d.get("launch", "print"), LAUNCH_MODES, f"{where}: launch:", RuntimeFault)
    raw = d.get("nodes")
    if not isinstance(raw, Mapping) or not raw:
        raise RuntimeFault(f"{where}: nodes: expected a mapping node id -> {{host, port, driver, ...}}")
    nodes = {}
    for nid, nd in raw.items():
        w = f"{where}: nodes.{nid}"
        if not isinstance(nd, Mapping) or not nd.get("host"):
            raise RuntimeFault(f"{w}: expected a mapping with at least 'host'")
        extra = set(nd) - {"host", "port", "driver", "bitstream", "ssh", "plan"}
        if extra:
            raise RuntimeFault(f"{w}: unknown field(s) {sorted(extra)}; allowed: host, port, driver, bitstream, ssh, plan")
        driver = choice(nd.get("driver", "pynq"), DRIVERS, f"{w}.driver:", RuntimeFault)
        nodes[str(nid)] = HostNode(node=str(nid), host=str(nd["host"]), port=_port(nd.get("port", 5555), f"{w}.port"),
                                   driver=driver, bitstream=nd.get("bitstream"), ssh=nd.get("ssh"), plan=nd.get("plan"))
    return HostsFile(controller=str(d["controller"]), nodes=nodes, launch=launch,
                     command=str(d.get("command", "split4ml")), workdir=d.get("workdir"),
                     sink_port=_port(d.get("sink_port", 5600), f"{where}: sink_port"),
                     stats_port=_port(d.get("stats_port", 5601), f"{where}: stats_port"),
                     bind_host=_bind(d, where), keys=None if d.get("keys") is None else str(d["keys"]),
                     insecure=_flag(d, "insecure", where))


def _flag(d: Mapping[str, Any], key: str, where: str) -> bool:
    value = d.get(key, False)
    if not isinstance(value, bool):
        raise RuntimeFault(f"{where}: {key}: expected true or false, got {value!r}")
    return value


#: Addresses that bind every interface.
ALL_INTERFACES = ("0.0.0.0", "*", "::", "[::]")


def _bind(d: Mapping[str, Any], where: str) -> str | None:
    """``bind`` (``bind_host``, its older name), or None: every process binds its own address."""
    value = d.get("bind", d.get("bind_host"))
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c in value for c in "/ \t\n"):
        raise RuntimeFault(f"{where}: bind: expected an address such as 0.0.0.0 or 192.168.2.1, got {value!r}")
    return value


def read_hosts(path: str | Path) -> HostsFile:
    """Read a hosts YAML file."""
    return hosts_from_dict(read_yaml(path, "hosts file", RuntimeFault), where=str(path))


def host_launches(hosts: HostsFile, spec: RuntimeSpec, spec_path: str, plan_path: str | None,
                  options: RunOptions) -> list[NodeLaunch]:
    """The ``split4ml node`` command of every node, and how it is started.

    Raises:
        RuntimeFault: a node of the pipeline is missing from the hosts file (or vice versa).
    """
    ids = [n.id for n in spec.nodes]
    missing = [i for i in ids if i not in hosts.nodes]
    extra = [i for i in hosts.nodes if i not in ids]
    if missing or extra:
        raise RuntimeFault(f"hosts file: nodes {missing} are missing and {extra} are not in the pipeline; "
                           f"list exactly the pipeline's nodes {ids}")
    from .node import consumer_ids

    addr = {i: hosts.nodes[i].address for i in ids}
    addr["sink"] = hosts.sink_address
    mode = {"print": "manual", "ssh": "ssh", "local": "local"}[hosts.launch]
    out = []
    for n in spec.nodes:
        hn = hosts.nodes[n.id]
        source = spec_path
        if hn.driver in ("csim", "reference") and hosts.launch != "local":
            source = hn.plan or plan_path or spec_path  # the host compiles (or reads) its own stage
        argv = node_argv(source, n.id, hn.driver, hosts.node_bind(n.id),
                         {c: addr[c] for c in consumer_ids(spec, n.id)}, hosts.stats_address, hwm=options.hwm,
                         reference_mode=options.reference_mode,
                         bitstream=(hn.bitstream or f"{n.id}.bit") if hn.driver == "pynq" else None,
                         parent_pid=os.getpid() if hosts.launch == "local" else None,
                         executable=shlex.split(hosts.command), max_batch=options.batch,
                         keys=hosts.keys if options.keys is None else options.keys)
        out.append(NodeLaunch(n.id, argv, hn.address, mode, ssh=hn.ssh or f"xilinx@{hn.host}", workdir=hosts.workdir,
                              chaos_args=chaos_args(options.chaos, spec, n.id)))
    return out


def format_launches(launches: list[NodeLaunch]) -> list[str]:
    """One shell line per node (what to run on each host)."""
    lines = []
    for la in launches:
        cmd = " ".join(shlex.quote(a) for a in la.command(0))
        where = la.address.removeprefix("tcp://").rsplit(":", 1)[0]
        lines.append(f"# {la.node} on {where}\n{cmd}")
    return lines


def run_hosts(pipeline: Pipeline, x: np.ndarray, hosts: HostsFile, whole: Stage | None = None,
              plan_path: str | None = None, options: RunOptions | None = None, progress: Progress | None = None,
              announce: Callable[[list[NodeLaunch]], None] | None = None,
              out_dir: str | Path = "split4ml-run") -> RunReport:
    """Drive the hosts of ``hosts``: write ``out_dir/pipeline.json``, start or print the node
    commands, run the source and sink here, and check the outputs against the whole model's
    C-simulation (compiled here).
    """
    from ..hls import csim
    from .drivers import save_reference_model

    options = options or RunOptions()
    if options.keys is None and hosts.keys is None and not hosts.insecure:
        raise RuntimeFault("a --hosts run encrypts and authenticates every link: make the keys with 'split4ml keys "
                           "DIR --plan PLAN', name the folder in the hosts file ('keys: DIR', the same path on the "
                           "hosts, each with only its own secret key) or pass --keys DIR; or write 'insecure: true' "
                           "to run plain TCP on a network only the boards and this machine reach")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec0 = spec_from_pipeline(pipeline, whole)
    artifacts: dict[str, dict[str, Any]] = {}
    local = hosts.launch == "local"
    want = [whole] if whole is not None else [n.stage for n in pipeline.nodes]
    csim_nodes = [n for n in pipeline.nodes if hosts.nodes.get(n.id, HostNode(n.id, "")).driver == "csim"]
    want = want + [n.stage for n in csim_nodes]

    def cb(done: int, total: int) -> None:
        if progress is not None:
            progress("compile C-simulations", done, total)

    models = csim.compile_stages(want, progress=cb)
    by_id = dict(zip([id(s) for s in want], models, strict=True))
    for n in pipeline.nodes:
        hn = hosts.nodes.get(n.id)
        art: dict[str, Any] = {}
        if id(n.stage) in by_id:
            m = by_id[id(n.stage)]
            art["csim"] = {"library": str(m.library), "project_name": m.project_name}
        if hn is not None and hn.driver == "reference":
            art["reference"] = str(save_reference_model(n.stage, out / f"{n.id}.npz"))
        if hn is not None and hn.driver == "pynq":
            art["bitstream"] = hn.bitstream or f"{n.id}.bit"
        artifacts[n.id] = art
    spec = spec0.with_artifacts(bundle_libraries(artifacts, out))
    spec_path = spec.write(out / "pipeline.json")
    xq_spec = spec
    from .run import prepare_inputs

    xq = prepare_inputs(x, xq_spec)
    if whole is not None:
        reference, ref_name = by_id[id(whole)].predict(xq), "whole model C-simulation"
    else:
        chain = {n.id: by_id[id(n.stage)].predict for n in pipeline.nodes}
        reference, ref_name = pipeline.run(xq, chain), "chained C-simulation"
    on_hosts = str(spec_path) if local else "pipeline.json"
    launches = host_launches(hosts, spec, on_hosts, plan_path, options)
    opts = options if options.workdir is not None else replace(options, workdir=out)
    if opts.keys is None and hosts.keys is not None:
        opts = replace(opts, keys=Path(hosts.keys))
    return run_with_launches(spec, launches, xq, reference, ref_name, opts,
                             sink_bind=hosts.launcher_bind(hosts.sink_port),
                             stats_bind=hosts.launcher_bind(hosts.stats_port),
                             progress=progress, announce=announce)
