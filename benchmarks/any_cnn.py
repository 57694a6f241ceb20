"""Issue 23's done-when, end to end: 19 timm/torchvision architectures through the CLI as a user runs it.

For each architecture, in a subprocess each: ``bespoke finetune`` (random init, a few hundred Fashion-MNIST images,
small resolution, 1 epoch) -> ``bespoke house build --size 8`` (tiny distillation) -> ``bespoke search`` under a MACs
budget -> and for inverted-residual models ``bespoke supernet train`` (few steps) + ``bespoke supernet select`` under
the same budget. Per step it records the exit code, wall seconds, the error line when it stopped (and whether the
stop was one clean ``error:`` line or a traceback), and the delivered model's MACs against its budget from its card.
It also times ``bespoke house build --size 8`` for resnet18 with the default distillation ("< 2 minutes").

Resumable: a step whose record is in the results JSON is skipped (``--redo ARCH`` forgets one architecture). Every
results write is atomic. Run the architectures one after another (the machine is shared)::

    python benchmarks/any_cnn.py [--work runs/any_cnn] [--only resnet18,...] [--redo ...]

Writes benchmarks/results/any_cnn.json and any_cnn.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bespoke.export.card import ModelCard
from bespoke.utils.atomic import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = "macs-0.7x"
TARGETS_YAML = f"targets:\n  - {{name: {TARGET}, runtime: macs, budget: 0.7x}}\n"
RANDOM_INIT_YAML = "pretrained: false\n"

#: (label, zoo name, extra finetune arguments, inverted-residual: runs the supernet engine too)
ARCHS: list[tuple[str, str, list[str], bool]] = [
    ("resnet18", "timm:resnet18", [], False),
    ("resnet50", "timm:resnet50", [], False),
    ("mobilenetv3_large_100", "timm:mobilenetv3_large_100", [], True),
    ("mobilenetv3_small_100", "timm:mobilenetv3_small_100", [], True),
    ("efficientnet_b0", "timm:efficientnet_b0", [], True),
    ("mnasnet_100", "timm:mnasnet_100", [], True),
    ("regnetx_002", "timm:regnetx_002", [], False),
    ("ghostnet_100", "timm:ghostnet_100", [], True),
    ("convnext_atto", "timm:convnext_atto", [], False),
    ("repvgg_a0", "timm:repvgg_a0", [], False),
    ("densenet121", "timm:densenet121", [], False),
    ("vit_tiny_patch16_224@64", "timm:vit_tiny_patch16_224", ["--model-args", "img_size=64", "--resolution", "64"],
     False),
    ("mobilevit_xxs", "timm:mobilevit_xxs", [], False),
    ("tv:resnet18", "torchvision:resnet18", [], False),
    ("tv:shufflenet_v2_x0_5", "torchvision:shufflenet_v2_x0_5", [], False),
    ("tv:mobilenet_v3_small", "torchvision:mobilenet_v3_small", [], True),
    ("tv:squeezenet1_0", "torchvision:squeezenet1_0", [], False),
    ("efficientnet_lite0", "timm:efficientnet_lite0", [], True),
    ("tv:mobilenet_v2", "torchvision:mobilenet_v2", [], True),
]

RESOLUTION, TRAIN, TEST = 32, 300, 100
STEP_TIMEOUT_S = 900


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cli(args: list[str], log: Path, timeout: int = STEP_TIMEOUT_S) -> dict[str, Any]:
    """Run ``bespoke ARGS`` in a subprocess; its record: rc, wall seconds, the error line and its kind."""
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    try:
        proc = subprocess.run([sys.executable, "-m", "bespoke.cli.main", *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, str(e.stdout or ""), str(e.stderr or "") + f"\ntimed out after {timeout} s"
    wall = round(time.perf_counter() - t0, 1)
    write_text(log, f"$ bespoke {' '.join(args)}\n--- stdout\n{out}\n--- stderr\n{err}\n")
    rec: dict[str, Any] = {"rc": rc, "wall_s": wall, "cpu_s": round(_children_cpu_s() - cpu0, 1),
                           "load_avg_1min": round(os.getloadavg()[0], 1), "log": str(log)}
    if rc != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        rec["error"] = (errors[-1] if errors else lines[-1] if lines else "")[:300]
        rec["clean_error"] = len(errors) == 1 and "Traceback" not in err
    return rec


def _delivered(out: Path) -> dict[str, Any]:
    """MACs of the model delivered for the target against its budget, from its card."""
    card_path = out / TARGET / "card.json"
    if not card_path.exists():
        return {"delivered": False}
    card = ModelCard.model_validate(json.loads(card_path.read_text()))
    d = card.delivery
    return {"delivered": True, "macs": card.macs, "measured": d.measured if d else None,
            "budget": d.budget_resolved if d else None, "reference": d.reference if d else None,
            "meets_budget": d.meets_budget if d else None}


def _steps(label: str, zoo: str, extra: list[str], inverted: bool, work: Path) -> list[tuple[str, list[str], Path]]:
    """(step name, CLI arguments, output directory) of one architecture's pipeline."""
    w = work / label.replace(":", "_").replace("@", "_")
    res = extra[extra.index("--resolution") + 1] if "--resolution" in extra else str(RESOLUTION)
    data = ["--data", "fashion-mnist"]
    ft, house, targets = w / "ft", w / "house", work / "targets.yaml"
    random_init = ["--config", str(work / "random-init.yaml")]
    steps = [
        ("finetune", ["finetune", *random_init, "--model", zoo, *data, "--resolution", res, "--epochs", "1",
                      "--train-limit",
                      str(TRAIN), "--test-limit", str(TEST), "--batch-size", "32", "--seed", "0", "--device", "cpu",
                      *[a for a in extra if a not in ("--resolution", res)], "--out", str(ft)], ft),
        ("house", ["house", "build", "--teacher", str(ft), *data, "--out", str(house), "--size", "8",
                   "--distill-steps", "10", "--batch-size", "16", "--train-limit", str(TRAIN), "--device", "cpu",
                   "--seed", "0"], house),
        ("search", ["search", str(house), "--targets", str(targets), "--out", str(w / "search"), "--iterations",
                    "100", "--eval-images", "64", "--epochs", "1", "--seed", "0"], w / "search"),
    ]
    if inverted:
        steps += [
            ("supernet_train", ["supernet", "train", "--teacher", str(ft), *data, "--out", str(w / "sn"), "--steps",
                                "6", "--batch-size", "16", "--train-limit", str(TRAIN), "--test-limit", str(TEST),
                                "--device", "cpu", "--seed", "0"], w / "sn"),
            ("supernet_select", ["supernet", "select", str(w / "sn"), "--targets", str(targets), "--out",
                                 str(w / "tofa"), "--predictor-samples", "10", "--eval-limit", str(TEST),
                                 "--device", "cpu", "--seed", "0"], w / "tofa"),
        ]
    return steps


def _fmt(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    if rec["rc"] != 0:
        return f"stopped ({rec['wall_s']:.0f} s)" + ("" if rec.get("clean_error") else ", NOT one line")
    s = f"ok {rec['wall_s']:.0f} s"
    if "cpu_s" in rec:
        s += f" ({rec['cpu_s']:.0f} CPU-s)"
    if "meets_budget" in rec:
        m, b = rec.get("measured"), rec.get("budget")
        ok = {True: "meets", False: "MISSES", None: "?"}[rec["meets_budget"]]
        s += f", {m / 1e6:.1f}M / {b / 1e6:.1f}M MACs {ok}" if m and b else f", {ok}"
    elif rec.get("delivered") is False:
        s += ", nothing delivered"
    return s


def _markdown(results: dict[str, Any]) -> str:
    rows = ["| arch | finetune | house | search (MACs / budget) | supernet (MACs / budget) | note |",
            "|---|---|---|---|---|---|"]
    for label, _, _, inverted in ARCHS:
        r = results["archs"].get(label, {})
        sn = r.get("supernet_select") or r.get("supernet_train")
        notes = [f"{k}: {v['error']}" for k, v in r.items() if isinstance(v, dict) and v.get("error")]
        rows.append(f"| {label} | {_fmt(r.get('finetune'))} | {_fmt(r.get('house'))} | {_fmt(r.get('search'))} | "
                    f"{_fmt(sn) if inverted else 'n/a'} | {'; '.join(notes).replace('|', '/')} |")
    t = results.get("resnet18_house_size8")
    timed = (f"resnet18 `house build --size 8` (default --distill-steps 200, {RESOLUTION} px, 2 shared cores): "
             f"{t['wall_s']:.0f} s wall, {t.get('cpu_s', 0):.0f} CPU-s, "
             f"load average {t.get('load_avg_1min')} at the end, "
             f"rc {t['rc']}" if t else "resnet18 house timing: not run")
    return ("# Any CNN end to end (issue 23)\n\n"
            f"`python benchmarks/any_cnn.py`; random init, Fashion-MNIST {TRAIN} train / {TEST} test images, "
            f"{RESOLUTION} px (ViT 64 px), finetune 1 epoch, house --size 8 --distill-steps 10, target "
            f"`{TARGET}` (runtime macs, budget 0.7x).\n\n" + "\n".join(rows) + f"\n\n{timed}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/any_cnn"))
    ap.add_argument("--only", default="", help="comma-separated labels to run")
    ap.add_argument("--redo", default="", help="comma-separated labels whose records are forgotten first")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    write_text(a.work / "targets.yaml", TARGETS_YAML)
    write_text(a.work / "random-init.yaml", RANDOM_INIT_YAML)
    js = RESULTS / "any_cnn.json"
    results: dict[str, Any] = json.loads(js.read_text()) if js.exists() else {"archs": {}}
    for label in filter(None, a.redo.split(",")):
        results["archs"].pop(label, None)
        if label == "resnet18":
            results.pop("resnet18_house_size8", None)
    only = set(filter(None, a.only.split(",")))

    def save() -> None:
        write_json(js, results)
        write_text(RESULTS / "any_cnn.md", _markdown(results))

    for label, zoo, extra, inverted in ARCHS:
        if only and label not in only:
            continue
        rec = results["archs"].setdefault(label, {})
        for name, args, out in _steps(label, zoo, extra, inverted, a.work):
            if name in rec:
                if rec[name]["rc"] != 0:
                    break
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {label} {name} ...", flush=True)
            rec[name] = _cli(args, a.work / f"{label.replace(':', '_')}.{name}.log")
            if name in ("search", "supernet_select") and rec[name]["rc"] == 0:
                rec[name].update(_delivered(out))
            print(f"    {_fmt(rec[name])} {rec[name].get('error', '')}", flush=True)
            save()
            if rec[name]["rc"] != 0:
                break
        if label == "resnet18" and "resnet18_house_size8" not in results and rec.get("finetune", {}).get("rc") == 0:
            print(f"[{time.strftime('%H:%M:%S')}] resnet18 house --size 8 (default distillation) ...", flush=True)
            house = a.work / "resnet18" / "house-timed"
            results["resnet18_house_size8"] = _cli(
                ["house", "build", "--teacher", str(a.work / "resnet18" / "ft"), "--data", "fashion-mnist", "--out",
                 str(house), "--size", "8", "--device", "cpu", "--seed", "0"], a.work / "resnet18.house-timed.log")
            print(f"    {_fmt(results['resnet18_house_size8'])}", flush=True)
            save()
    save()


if __name__ == "__main__":
    main()
