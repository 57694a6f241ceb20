"""Scale-out paths against the local ones (issue 6): the same jobs through the CLI, run both ways, timed.

    .venv/bin/python benchmarks/scaleout.py [--out runs/scaleout] [--results benchmarks/results]

1. ``bespoke house build`` with ``--executor local`` and with ``--executor ray`` (a local Ray cluster, one task per
   group of alternatives): wall time, and how the two houses agree (alternatives, statuses, metrics);
2. ``bespoke supernet train`` as one process and as ``torchrun --nproc_per_node 2`` (gloo): wall time and the
   largest difference between the two loss histories;
3. ``bespoke finetune`` likewise: wall time and test top-1 of both.

A single process uses every core of the machine (torch threads = cores); each of the N ranks or Ray tasks uses
cores / N threads, so each pair runs on the same hardware. On one 2-core machine the data-parallel paths are about
correctness and overhead, not speed: the speed-up comes from more machines (or GPUs). Writes
``RESULTS/scaleout.json`` and ``scaleout.md``; every job resumes (or is skipped) when run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bespoke.bench.results import cpu_model_name
from bespoke.utils.atomic import write_json, write_text

BIN = Path(sys.executable).parent
HOUSE = ["--teacher", "efficientnet_lite0", "--resolution", "64", "--donors", "mobilenet_v2", "--data",
         "fashion-mnist", "--train-limit", "1000", "--size", "12", "--distill-steps", "40", "--group-size", "3",
         "--batch-size", "32", "--seed", "0"]
SUPERNET = ["--teacher", "efficientnet_lite0", "--resolution", "64", "--data", "fashion-mnist", "--train-limit",
            "1000", "--test-limit", "500", "--labels", "0.2", "--steps", "16", "--batch-size", "16", "--seed", "0"]
FINETUNE = ["--model", "mobilenet_v2", "--resolution", "64", "--data", "fashion-mnist", "--train-limit", "2000",
            "--test-limit", "1000", "--epochs", "1", "--batch-size", "32", "--seed", "0"]


def run(argv: list[str], *, threads: int, log: Path) -> float:
    """Run one command (output to ``log``) with ``threads`` torch threads per process; its wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BESPOKE_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}); see {log}")
    return round(wall, 1)


def timed(out: Path, name: str, argv: list[str], threads: int) -> float:
    """Wall seconds of ``argv``, cached in ``out/<name>.wall`` (a finished job is not rerun)."""
    marker = out / f"{name}.wall"
    if marker.is_file():
        return float(marker.read_text())
    wall = run(argv, threads=threads, log=out / f"{name}.log")
    write_text(marker, str(wall))
    return wall


def house_agreement(a: Path, b: Path) -> dict[str, Any]:
    """How two houses built the same way agree: same alternatives and statuses, and the largest relative difference
    of their metrics (bit-for-bit equality needs equal thread counts: ``tests/test_distributed_ray.py`` checks it)."""
    ea, eb = (json.loads((h / "index.json").read_text())["entries"] for h in (a, b))
    same = [(x["id"], x["status"]) for x in ea] == [(y["id"], y["status"]) for y in eb]
    gaps = [abs(x["metrics"][k] - y["metrics"][k]) / max(abs(x["metrics"][k]), 1e-9)
            for x, y in zip(ea, eb, strict=True) for k in x.get("metrics", {})
            if isinstance(x["metrics"][k], float) and isinstance(y.get("metrics", {}).get(k), float)]
    return {"same_alternatives_and_status": same, "done": sum(x["status"] == "done" for x in ea),
            "max_metric_rel_diff": round(max(gaps), 5) if gaps else None}


def supernet_history(path: Path) -> list[dict[str, float]]:
    return json.loads((path / "supernet.json").read_text())["history"]


def max_loss_gap(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    gaps = [abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in x if k.startswith("loss") and k in y]
    return max(gaps) if gaps else float("nan")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/scaleout"), help="work directory (resumable)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="where the JSON/MD go")
    parser.add_argument("--ranks", type=int, default=2, help="torchrun processes / concurrent Ray tasks")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    per_rank = max(1, cores // args.ranks)
    bespoke, torchrun = str(BIN / "bespoke"), [str(BIN / "torchrun"), "--nproc_per_node", str(args.ranks),
                                                 "-m", "bespoke.cli.main"]
    doc: dict[str, Any] = {"machine": {"cpu": cpu_model_name(), "cores": cores,
                                       "torch": torch.__version__}, "ranks": args.ranks}

    local = timed(out, "house-local", [bespoke, "house", "build", *HOUSE, "--out", str(out / "house-local")], cores)
    ray = timed(out, "house-ray", [bespoke, "house", "build", *HOUSE, "--out", str(out / "house-ray"),
                                   "--executor", "ray", "--task-cpus", str(per_rank)], per_rank)
    doc["house_build"] = {"command": "bespoke house build " + " ".join(HOUSE), "local_wall_s": local,
                          "ray_wall_s": ray, **house_agreement(out / "house-local", out / "house-ray")}

    single = timed(out, "supernet-1", [bespoke, "supernet", "train", *SUPERNET, "--out", str(out / "sn-1")], cores)
    multi = timed(out, f"supernet-{args.ranks}", [*torchrun, "supernet", "train", *SUPERNET, "--out",
                                                  str(out / f"sn-{args.ranks}")], per_rank)
    gap = max_loss_gap(supernet_history(out / "sn-1"), supernet_history(out / f"sn-{args.ranks}"))
    doc["supernet_train"] = {"command": "bespoke supernet train " + " ".join(SUPERNET), "single_wall_s": single,
                             "ddp_wall_s": multi, "max_loss_gap": round(gap, 5)}

    single = timed(out, "finetune-1", [bespoke, "finetune", *FINETUNE, "--out", str(out / "ft-1")], cores)
    multi = timed(out, f"finetune-{args.ranks}", [*torchrun, "finetune", *FINETUNE, "--out",
                                                  str(out / f"ft-{args.ranks}")], per_rank)
    acc = [json.loads((out / d / "card.json").read_text())["accuracy"] for d in ("ft-1", f"ft-{args.ranks}")]
    doc["finetune"] = {"command": "bespoke finetune " + " ".join(FINETUNE), "single_wall_s": single,
                       "ddp_wall_s": multi, "single_accuracy": acc[0], "ddp_accuracy": acc[1]}
    doc["cuda"] = torch.cuda.is_available()

    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "scaleout.json", doc)
    write_text(args.results / "scaleout.md", render(doc))
    print(render(doc))
    return doc


def render(doc: dict[str, Any]) -> str:
    m, r = doc["machine"], doc["ranks"]
    h, s, f = doc["house_build"], doc["supernet_train"], doc["finetune"]
    lines = [
        "# Scale-out paths vs local (issue 6)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA {'yes' if doc['cuda'] else 'no'}. "
        f"{r} ranks / Ray tasks share the cores. Reproduce: `.venv/bin/python benchmarks/scaleout.py`.", "",
        "| job | local | scale-out path | scale-out | agreement |", "|---|---|---|---|---|",
        f"| house build | {h['local_wall_s']} s | Ray, {r} tasks at once | {h['ray_wall_s']} s | "
        f"{h['done']} alternatives, same statuses: {'yes' if h['same_alternatives_and_status'] else 'NO'}, "
        f"max metric rel. diff {h['max_metric_rel_diff']} |",
        f"| supernet train | {s['single_wall_s']} s | torchrun {r} ranks (gloo) | {s['ddp_wall_s']} s | "
        f"max loss gap {s['max_loss_gap']} |",
        f"| finetune | {f['single_wall_s']} s | torchrun {r} ranks (gloo) | {f['ddp_wall_s']} s | "
        f"top-1 {f['single_accuracy']:.4f} vs {f['ddp_accuracy']:.4f} |", "",
        "Commands:", "",
        f"- `{h['command']} --executor local|ray`",
        f"- `{s['command']}` (and `torchrun --nproc_per_node {r} -m bespoke.cli.main supernet train ...`)",
        f"- `{f['command']}` (and `torchrun --nproc_per_node {r} -m bespoke.cli.main finetune ...`)", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if shutil.which("torchrun") is None and not (BIN / "torchrun").exists():
        raise SystemExit("torchrun not found next to this Python")
    main()
