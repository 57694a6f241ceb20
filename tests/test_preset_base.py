"""Preset variants: ``base:`` lays a preset over another, and the int8 reference preset is one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bespoke.bench.preset import list_presets, load_preset
from bespoke.errors import BespokeError


def test_the_int8_preset_is_the_reference_one_with_int8_targets() -> None:
    base, int8 = load_preset("fashion-mnist"), load_preset("fashion-mnist-int8")
    assert "fashion-mnist-int8" in list_presets()
    assert (int8.data, int8.recipe, int8.teacher, int8.donors) == (base.data, base.recipe, base.teacher, base.donors)
    assert [(t.precision, str(t.budget)) for t in int8.targets] == [("int8", "0.5x"), ("int8", "0.35x"),
                                                                    ("int8", "0.25x")]
    assert int8.engines == ["bespoke", "tofa"] and not int8.label_scarce and not int8.wants_semi_teacher()
    assert int8.bespoke["qat"] == {} and int8.tofa["select"]["qat_epochs"] == 1
    assert int8.engine_teacher("tofa") == "all" and int8.ptq.enabled
    smoke = load_preset("fashion-mnist-int8", smoke=True)
    assert [t.precision for t in smoke.targets] == ["int8"] and smoke.data.train_images == 120  # base's smoke too
    assert smoke.tofa["space"]["resolutions"] == [32] and smoke.tofa["select"]["qat_epochs"] == 1
    from bespoke.quantize import QATConfig
    from bespoke.search import BlockJob

    for preset, agreement in ((int8, 0.9), (smoke, 0.0)):  # its bespoke: section is a BlockJob, as the bench reads it
        job = BlockJob.model_validate({k: v for k, v in preset.stage_settings("bespoke").items() if k != "teacher"})
        assert job.qat == QATConfig() and job.int8_agreement == agreement


def test_a_base_chain_merges_and_a_cycle_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: fashion-mnist\nname: mine\nrecipe: {epochs: 1}\n")
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nname: child\ndonors: []\n")
    child = load_preset(tmp_path / "child.yaml")
    assert child.name == "child" and child.recipe.epochs == 1 and child.recipe.batch_size == 64 and not child.donors
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(BespokeError, match=r"preset base cycle: a\.yaml -> b\.yaml -> a\.yaml"):
        load_preset(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("base: [fashion-mnist]\nname: bad\n")
    with pytest.raises(BespokeError, match="base must be a preset name"):
        load_preset(tmp_path / "bad.yaml")
