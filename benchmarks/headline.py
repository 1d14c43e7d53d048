"""Write the README's results table from the figures the benchmarks recorded in ``docs/results/*.json``.

    python benchmarks/headline.py          # rewrite the table in README.md and docs/index.md
    python benchmarks/headline.py --check  # exit 1 if the README's table is not the one the figures give

Run it after a benchmark has rewritten its results (``--results``). The README's table sits between
the two ``headline`` comments; nothing else of the README is touched.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from machine import ROOT, binding_bound, read_results  # benchmarks/machine.py

START = "<!-- headline: written by benchmarks/headline.py from docs/results/*.json; do not edit by hand -->"
END = "<!-- /headline -->"


def _exact(v: dict[str, Any], unit: str) -> str:
    return f"{'bit-exact' if v['bit_exact'] else 'NOT bit-exact'}, {v['samples']:,} {unit}"


def _bound(p: dict[str, Any]) -> str:
    which = binding_bound(p)
    if which == "link" and p["source_us"] >= p["link_bound_us"] * (1 - 1e-9):
        return "bound by the input's link from the host"
    return {"fabric": "bound by the fabric", "link": "bound by a link between boards",
            "frame": "bound by the boards' per-frame cost"}[which]


def rows() -> list[tuple[str, str, str]]:
    """(case, plan, verify) for each headline result, from the recorded figures."""
    out = []
    demo = read_results("demo")["demo"]
    p = demo["plan"]
    out.append((f"demo: MNIST 784-16-32-10 on {p['board'].upper()}",
                f"{p['n_boards']} boards, {p['bottleneck_us']:.2f} µs a sample (about {p['throughput_per_s']:,.0f} "
                f"samples/s, {_bound(p)})", _exact(demo["verify"], "digits")))
    zoo = read_results("model_zoo")["summary"]
    out.append(("hls4ml's example models",
                f"of the {zoo['hls4ml_converts']} files hls4ml converts, {zoo['plan']} planned on PYNQ-Z2 boards",
                f"{zoo['verify_bit_exact']} of {zoo['plan']} bit-exact"))
    big = read_results("big_mlp")
    splits = sorted({int(s["split"].split("x")[1]) for s in big["steps"] if "x" in s["split"]})
    ways = f"{splits[0]}–{splits[-1]}" if len(splits) > 1 else str(splits[0]) if splits else "no"
    v = big.get("verify")
    out.append((f"16-500x5-5 MLP, {big['parameters']:,} parameters",
                f"{big['boards']} boards (layers split {ways} ways), {big['bottleneck_us']:.2f} µs (about "
                f"{big['throughput_per_s']:,.0f} samples/s)", _exact(v, "random samples") if v else "not verified"))
    ex = read_results("examples")["examples"]
    for name, case in (("resnet_digits", "ResNet-style MLP, 2 residual blocks"),
                       ("cyber_cnn", "phishing Conv1D CNN")):
        if name not in ex:
            continue
        s = ex[name]
        p = s["plan"]
        splits = [st["shards"][0]["parts"] for st in p["stages"] if st["shards"]]
        how = (f", {len(splits)} layer{'s' if len(splits) > 1 else ''} split "
               f"{'/'.join(str(k) for k in splits)} ways" if splits else "")
        out.append((case, f"{p['n_boards']} boards{how}, {p['bottleneck_us']:.2f} µs ({_bound(p)})",
                    f"{_exact(s['verify'], 'held-out samples')}; emulated run "
                    f"{'bit-exact' if s['run']['bit_exact'] else 'NOT bit-exact'}"))
    return out


def render() -> str:
    lines = [START, "", "| case | plan | verify |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows()]
    return "\n".join([*lines, "", END])


def replace(text: str, table: str) -> str:
    """``text`` with the part between the headline markers (markers included) replaced by ``table``."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"the README has no '{START}' ... '{END}' block to write the table into")
    return text[:i] + table + text[j + len(END):]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the README's table is up to date")
    args = ap.parse_args()
    table = render()
    readme = ROOT / "README.md"
    new = replace(readme.read_text(), table)
    if args.check:
        if new != readme.read_text():
            print("README.md's results table differs from the recorded figures: run benchmarks/headline.py")
            return 1
        return 0
    readme.write_text(new)
    (ROOT / "docs" / "index.md").write_text(new.replace("(docs/report.png)", "(report.png)"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
