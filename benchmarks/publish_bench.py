"""Publish a finished ``bespoke bench`` run: copy its outputs under ``benchmarks/results/<preset>/`` and put its
table, Pareto plot and cost-of-K table in the README (between the ``bench:<preset>`` markers).

    .venv/bin/python benchmarks/publish_bench.py RUN_DIR [--results benchmarks/results] [--readme README.md]

Only a full (non-smoke) run whose every stage finished is published; the README block names the command, the
machine and the date of that run, so the table is always that run's table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bespoke.errors import BespokeError
from bespoke.utils.atomic import write_bytes, write_text

ROOT = Path(__file__).resolve().parents[1]
FILES = ("results.json", "results.md", "pareto.png", "stages.json", "preset.json")
README_SECTIONS = ("Results", "Cost of K targets")


def sections(markdown: str) -> dict[str, str]:
    """``## heading`` -> its body (up to the next ``##`` heading)."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def check_run(run: Path) -> dict[str, Any]:
    """The run's ``results.json``, refused unless it is a full run whose every stage finished."""
    missing = [f for f in FILES if not (run / f).is_file()]
    if missing:
        raise BespokeError(f"{run} is not a finished benchmark run (missing {', '.join(missing)})",
                           "let `bespoke bench` finish (run the same command again to resume)")
    doc = json.loads((run / "results.json").read_text())
    if doc.get("smoke"):
        raise BespokeError(f"{run} is a --smoke run: its figures check plumbing, not the method")
    unfinished = [s["name"] for s in doc.get("stages", []) if s.get("status") not in ("done", "skipped", "failed")]
    if unfinished:
        raise BespokeError(f"stages not finished in {run}: {', '.join(unfinished)}", "resume the run first")
    return doc


def readings(doc: dict[str, Any]) -> tuple[int, int]:
    """The fewest and the most 1-thread latency readings the run's models hold (``--remeasure`` adds one per pass;
    a model rebuilt after some passes holds fewer)."""
    counts = []
    for model in doc.get("models", []):
        card = Path(model.get("path") or "") / "card.json"
        if card.is_file():
            latency = json.loads(card.read_text()).get("latency", {}).get("ort-cpu-1t") or {}
            if latency.get("readings"):  # the reference teacher has its best-of-3 value instead
                counts.append(len(latency["readings"]))
    return (min(counts), max(counts)) if counts else (1, 1)


def readme_block(doc: dict[str, Any], md: str, folder: str) -> str:
    """The README text of one run: provenance line, table, plot, cost of K, link to the full report."""
    m, body = doc["machine"], sections(md)
    preset = doc["preset"]
    fewest, n = readings(doc)
    count = f"{n}" if fewest == n else f"{fewest} to {n} (models rebuilt after earlier passes have fewer)"
    again = (f" then `--remeasure` {n - 1} time(s): each model's latency is the median of its {count} readings, "
             "the reference teacher's is its best of 3" if n > 1 else "")
    lines = [f"Command: `bespoke bench --preset {preset}`{again}; finished "
             f"{doc['created'][:16].replace('T', ' ')} UTC on "
             f"{m['cpu']} ({m['cores']} cores, no GPU), torch {m['torch']}, onnxruntime {m['onnxruntime']}. "
             f"Full report (targets, every stage's cost, recipe): [`{folder}/results.md`]({folder}/results.md), "
             f"machine-readable: `{folder}/results.json`.", ""]
    for name in README_SECTIONS:
        text = body.get(name, "").replace("](pareto.png)", f"]({folder}/pareto.png)")
        lines += [f"#### {name}", "", text, ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_block(readme: str, preset: str, block: str) -> str:
    """``readme`` with the text between ``<!-- bench:<preset>:start -->`` and ``...:end -->`` replaced."""
    start, end = f"<!-- bench:{preset}:start -->", f"<!-- bench:{preset}:end -->"
    if start not in readme or end not in readme:
        raise BespokeError(f"README has no {start} ... {end} block", "add the two marker lines where the table goes")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}{end}{tail}"


def publish(run: Path, results: Path, readme: Path) -> Path:
    """Copy the run's files to ``results/<preset>/`` and refresh the README block; returns that folder."""
    doc = check_run(run)
    dest = results / doc["preset"]
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        write_bytes(dest / name, (run / name).read_bytes())
    folder = dest.resolve().relative_to(readme.resolve().parent).as_posix()
    block = readme_block(doc, (run / "results.md").read_text(), folder)
    write_text(readme, replace_block(readme.read_text(), doc["preset"], block))
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("run", type=Path, help="output folder of a finished `bespoke bench` run")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="committed results folder")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README holding the marker block")
    args = p.parse_args(argv)
    try:
        dest = publish(args.run, args.results, args.readme)
    except BespokeError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    print(f"published {args.run} -> {dest} and {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
