"""``benchmarks/carry_run.py``: an unfinished bench run survives a move to a new machine through a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bespoke.errors import BespokeError
from bespoke.export import CARD, ONNX, WEIGHTS, ModelCard, read_card, save_model_dir, update_card, write_card
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet
from tests.conftest import load_benchmark_script


def _run(root: Path) -> Path:
    """A bench run as the ledger names it (paths relative to the working directory, like ``--out runs/x``)."""
    run = root / "runs" / "bench"
    teacher = run / "models" / "teacher"
    save_model_dir(teacher, tiny_efficientnet(), ModelCard(
        arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3, resolution=32,
        mean=(0.5,) * 3, std=(0.5,) * 3, accuracy=0.9))
    update_card(teacher, latency_ms={"ort-cpu-1t": 1.25})
    donor = run / "models" / "donor"
    donor.mkdir(parents=True)
    (donor / ONNX).write_bytes(b"large model file")
    write_card(donor, read_card(teacher).model_copy(update={"accuracy": 0.8, "latency_ms": {"ort-cpu-1t": 0.5}}))
    failed = run / "models" / "pruned"
    failed.mkdir()
    ledger = {
        "teacher": {"name": "teacher", "status": "done", "dirs": [str(teacher)]},
        "donor": {"name": "donor", "status": "skipped", "dirs": [str(donor)]},
        "pruned": {"name": "pruned", "status": "failed", "dirs": [str(failed)]},
    }
    (run / "stages.json").write_text(json.dumps(ledger))
    (run / "preset.json").write_text("{}")
    return run


def test_save_then_restore_rebuilds_what_the_remaining_stages_need(tmp_path: Path) -> None:
    carry = load_benchmark_script("carry_run")
    run = _run(tmp_path)
    saved = carry.save(run, tmp_path / "carried", ["models/teacher"])
    assert saved["weights"] == ["models/teacher"]
    files = set(saved["files"])
    assert {"stages.json", "preset.json", "models/donor/card.json", "models/teacher/model.safetensors"} <= files
    assert not any(f.endswith(ONNX) for f in files)  # finished models travel as cards only
    assert not any("pruned" in f for f in files)  # failed stages are rerun, not carried

    moved = tmp_path / "new-machine" / "runs" / "bench"
    carry.restore(tmp_path / "carried", moved)
    teacher = read_card(moved / "models" / "teacher")
    assert teacher.latency_ms == {"ort-cpu-1t": 1.25} and teacher.accuracy == 0.9  # figures kept
    assert (moved / "models" / "teacher" / ONNX).is_file() and teacher.onnx_max_abs_diff is not None
    assert (moved / "models" / "teacher" / WEIGHTS).is_file()
    assert read_card(moved / "models" / "donor").latency_ms == {"ort-cpu-1t": 0.5}
    assert not (moved / "models" / "donor" / ONNX).exists() and (moved / "models" / "donor" / CARD).is_file()

    with pytest.raises(BespokeError, match="already holds"):
        carry.restore(tmp_path / "carried", moved)
    with pytest.raises(BespokeError, match="no benchmark ledger"):
        carry.save(tmp_path, tmp_path / "x", [])
