"""Carry an unfinished benchmark run to another machine through the repository, then resume it there.

The full ``bespoke bench --preset fashion-mnist`` takes longer on 2 cores than a working session lasts, and a
session's machine is not kept. Every finished stage's figures live in its cards (the bench measures a stage's
models as soon as the stage ends), so a later machine needs little: the run's ledger (``stages.json``), its preset
snapshot, every finished stage's cards, and the weights of the teachers that the remaining stages build on
(the reference teacher also sets the latency scale that every later model is timed against).

    .venv/bin/python benchmarks/carry_run.py save runs/bench-full benchmarks/carry/fashion-mnist
    git add benchmarks/carry/fashion-mnist && git commit ...            # then, on the next machine:
    .venv/bin/python benchmarks/carry_run.py restore benchmarks/carry/fashion-mnist
    nohup .venv/bin/bespoke bench --preset fashion-mnist --out runs/bench-full >> bench.log 2>&1 &

``restore`` rebuilds the run directory at the path it was made at (the ledger names its model directories by that
path), re-exports each carried model's ONNX from its weights and verifies it against PyTorch, and refuses to
overwrite a run directory that already holds a ledger. Model files of finished stages are not carried: their
cards hold accuracy, latency and cost, which is all the final table reads.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
from pathlib import Path

from bespoke.bench.results import machine_info
from bespoke.bench.run import PRESET_SNAPSHOT
from bespoke.errors import BespokeError
from bespoke.export import CARD, CARD_MD, WEIGHTS, load_model_dir, save_model_dir
from bespoke.utils.atomic import write_json

LEDGER = "stages.json"
MANIFEST = "carry.json"
DEFAULT_WEIGHTS = ("models/teacher", "models/teacher-labelled")


def finished_dirs(run: Path) -> list[Path]:
    """Model directories (relative to ``run``) of the ledger's finished stages, each holding a card."""
    ledger = json.loads((run / LEDGER).read_text())
    root = run.resolve()
    dirs: dict[Path, None] = {}
    for record in ledger.values():
        if record["status"] not in ("done", "skipped"):
            continue
        for d in record["dirs"]:  # as the bench wrote them: relative to the directory it ran in
            path = Path(d).resolve()
            if path.is_relative_to(root) and (path / CARD).is_file():
                dirs[path.relative_to(root)] = None
    return list(dirs)


def save(run: Path, dest: Path, weights: list[str]) -> dict:
    """Copy ``run``'s ledger, preset snapshot, finished cards and the ``weights`` directories' weights to ``dest``."""
    if not (run / LEDGER).is_file():
        raise BespokeError(f"{run} holds no benchmark ledger ({LEDGER})", "pass the --out of a bespoke bench run")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    files = [LEDGER, PRESET_SNAPSHOT]
    for d in finished_dirs(run):
        files += [str(d / name) for name in (CARD, CARD_MD) if (run / d / name).is_file()]
    carried = []
    for w in weights:
        if (run / w / WEIGHTS).is_file() and (run / w / CARD).is_file():
            files += [str(Path(w) / WEIGHTS), str(Path(w) / CARD)]
            carried.append(w)
    for f in dict.fromkeys(files):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / f, dest / f)
    manifest = {"run_dir": str(run), "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": machine_info(), "weights": carried, "files": sorted(dict.fromkeys(files))}
    write_json(dest / MANIFEST, manifest)
    return manifest


def restore(src: Path, run: Path | None = None) -> Path:
    """Rebuild the run directory from a carried folder; re-export and verify the carried models' ONNX."""
    manifest = json.loads((src / MANIFEST).read_text())
    run = run or Path(manifest["run_dir"])
    if (run / LEDGER).is_file():
        raise BespokeError(f"{run} already holds a benchmark run", "resume it as it is, or delete it first")
    for f in manifest["files"]:
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f, run / f)
    for w in manifest["weights"]:
        model, card = load_model_dir(run / w)
        card = save_model_dir(run / w, model, card)  # keeps the card's figures; ONNX verified against PyTorch
        print(f"restored {run / w}: ONNX max|diff| {card.onnx_max_abs_diff:.1e}")
    print(f"restored {len(manifest['files'])} files into {run}; resume with: bespoke bench ... --out {run}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="copy what the remaining stages need into a folder of the repository")
    s.add_argument("run", type=Path)
    s.add_argument("dest", type=Path)
    s.add_argument("--weights", default=",".join(DEFAULT_WEIGHTS),
                   help="model directories (relative to the run) whose weights are carried")
    r = sub.add_parser("restore", help="rebuild the run directory from a carried folder")
    r.add_argument("src", type=Path)
    r.add_argument("--run", type=Path, default=None, help="default: the path the run was made at")
    args = parser.parse_args()
    if args.command == "save":
        manifest = save(args.run, args.dest, [w for w in args.weights.split(",") if w])
        print(f"saved {len(manifest['files'])} files to {args.dest} (weights: {', '.join(manifest['weights'])})")
    else:
        restore(args.src, args.run)


if __name__ == "__main__":
    main()
