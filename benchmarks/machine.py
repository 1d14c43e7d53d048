"""What machine a benchmark ran on, and where a benchmark writes the results tables of the docs.

Every results table of the documentation (``docs/results/*.md``, included by ``docs/results.md``)
is written by the benchmark that measured it, run with ``--results``: the table, the figures the text
quotes, and a last line naming the command, the machine, the date and the machine's load. Beside it,
``docs/results/NAME.json`` keeps the measured figures, which ``benchmarks/headline.py`` turns into the
README's results table. Nothing in those files is typed by hand: to change one, rerun its benchmark
(the JSON records the Markdown's SHA-256, and the test suite checks that the two still match).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "docs" / "results"
GENERATED = "<!-- Written by {script} --results. Do not edit by hand: rerun the benchmark. -->"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's best guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """The machine's memory in GiB, from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def commit() -> str | None:
    """The split4ml commit the benchmark runs (``+changes`` when ``src/`` or ``benchmarks/`` differ from
    it); None outside a git checkout."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks"], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")


def machine() -> dict[str, Any]:
    """The machine a benchmark runs on, with its 1-minute load average now and the code's commit."""
    mem = memory_gib()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": None if mem is None else round(mem, 1),
            "python": platform.python_version(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "commit": commit()}


def describe(m: dict[str, Any]) -> str:
    """One line for a machine dict from :func:`machine`."""
    mem = f", {m['memory_gib']:.0f} GiB" if m.get("memory_gib") else ""
    return f"{m['cpu']}, {m['cores']} cores{mem}, Python {m['python']}"


def command_line(argv: list[str] | None = None, *, hide: dict[str, str] | None = None) -> str:
    """The command that ran this benchmark, as a user would type it from the repository's root.

    ``hide`` maps an argument to what the docs show in its place (a local path, say).
    """
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    shown = f"benchmarks/{script.name}" if script.parent.name == "benchmarks" else str(script)
    rest = [(hide or {}).get(a) or shlex.quote(a) for a in argv[1:]]
    return " ".join(["python", shown, *rest])


def write_results(name: str, markdown: str, data: dict[str, Any], *, started: dict[str, Any],
                  seconds: float, command: str | None = None, date: str | None = None) -> Path:
    """Write ``docs/results/NAME.md`` (for the docs) and ``NAME.json`` (the figures) for one benchmark.

    ``started`` is :func:`machine` taken when the benchmark began, so the load average is the one the
    measurements met; ``seconds`` is the benchmark's wall time. ``date`` is today unless the figures
    are an earlier run's, re-rendered (:func:`rerender`).
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    command = command or command_line()
    via = "" if script in command else f" (run by `{script} --results`)"
    date = date or _dt.date.today().isoformat()
    at = f" at commit {started['commit']}" if started.get("commit") else ""
    footer = (f"*Measured by `{command}`{via}{at} on {date}: {describe(started)}; load average "
              f"{started['load_avg_1min']:.2f} when it started; {seconds:,.0f} s.*")
    md = RESULTS_DIR / f"{name}.md"
    text = f"{GENERATED.format(script=script)}\n\n{markdown.strip()}\n\n{footer}\n"
    md.write_text(text)
    record = {**data, "benchmark": script, "command": command, "date": date, "machine": started,
              "seconds": round(seconds, 1), "markdown_sha256": hashlib.sha256(text.encode()).hexdigest()}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {md} and {md.with_suffix('.json').name}", file=sys.stderr)
    return md


def rerender(name: str, markdown: str) -> Path:
    """Rewrite ``docs/results/NAME.md`` from the figures already recorded in ``NAME.json``.

    For a change of how a table is shown, not of what was measured: the command, machine, date and
    figures stay the recorded run's.
    """
    rec = read_results(name)
    data = {k: v for k, v in rec.items()
            if k not in ("benchmark", "command", "date", "machine", "seconds", "markdown_sha256")}
    return write_results(name, markdown, data, started=rec["machine"], seconds=rec["seconds"],
                         command=rec["command"], date=rec["date"])


def read_results(name: str) -> dict[str, Any]:
    """The figures a benchmark wrote with :func:`write_results`."""
    return json.loads((RESULTS_DIR / f"{name}.json").read_text())


def binding_bound(plan: dict[str, Any]) -> str:
    """Which bound sets a plan's bottleneck (from its ``--json``): ``fabric``, ``link`` or ``frame``
    (the boards' per-frame cost); the first of them on a tie."""
    bounds = {"fabric": plan["fabric_bound_us"], "link": plan["link_bound_us"], "frame": plan["frame_bound_us"]}
    return max(bounds, key=lambda k: bounds[k])


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (cells already formatted as the docs show them)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def seconds_text(s: float) -> str:
    """A duration as the docs show it: ms below a second, s above."""
    return f"{s * 1000:,.0f} ms" if s < 1 else f"{s:,.1f} s"
