"""bespoke.house: every alternative kind fits its span, rebuilds from JSON + weights, students assemble."""

from __future__ import annotations

import json

import pytest
import torch

from bespoke.errors import BespokeError
from bespoke.export import build_arch
from bespoke.graph import enumerate_spans
from bespoke.house import (
    KINDS,
    TEACHER,
    Entry,
    House,
    ProposalContext,
    Recipe,
    build_alternative,
    build_student,
    build_time_sources,
    make_kind,
    propose_all,
    sample,
    structural_sources,
)
from bespoke.house.student import _assemble, check_non_overlapping
from tests.test_house_helpers import DONOR, R, one_thread, splits, teacher


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def structural(sources):
    return structural_sources(sources.configs, R)


@pytest.fixture(scope="module")
def sources():
    model, config = teacher()
    return build_time_sources(model, config, [DONOR], R, pretrained_donors=False)


@pytest.fixture(scope="module")
def pool(sources):
    seg = sources.segmentation(TEACHER)
    spans = enumerate_spans(seg, 2)
    return propose_all(spans, ProposalContext(seg, sources, (DONOR,), 2), list(KINDS))


def test_every_kind_proposes(pool):
    assert {k for k, v in pool.items() if v} == {"donor", "prune", "lowrank", "skip"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_alternative_output_matches_span_and_rebuilds_from_json(kind, pool, sources, structural):
    picked = pool[kind][:: max(1, len(pool[kind]) // 3)][:3]
    for recipe in picked:
        recipe = recipe.model_copy(update={"id": "t", "seed": 3})
        module = build_alternative(recipe, sources).eval()
        x = torch.randn(2, *recipe.in_shape)
        with torch.no_grad():
            y = module(x)
        assert list(y.shape[1:]) == recipe.out_shape, recipe.label
        # JSON recipe + weights -> the same function, without the original weights
        again = Recipe.model_validate(json.loads(recipe.model_dump_json()))
        rebuilt = build_alternative(again, structural).eval()
        rebuilt.load_state_dict(module.state_dict())
        with torch.no_grad():
            assert torch.equal(rebuilt(x), y), recipe.label


def test_compressed_teacher_spans_start_close_to_the_teacher(pool, sources):
    seg = sources.segmentation(TEACHER)
    x = torch.randn(8, *seg.shapes[0])
    with torch.no_grad():
        acts = seg.activations(x)
        for kind in ("prune", "lowrank"):
            recipe = next(r for r in pool[kind] if r.ratio in (None, 0.5) and r.rank_fraction in (None, 0.5))
            out = build_alternative(recipe, sources).eval()(acts[recipe.span[0]])
            assert torch.isfinite(out).all()
    skip = next(r for r in pool["skip"] if r.in_adapter is None)
    assert skip.in_shape == skip.out_shape
    assert torch.equal(build_alternative(skip, sources)(acts[skip.span[0]]), acts[skip.span[0]])


def test_pruned_recipe_records_kept_channels_and_shrinks(pool, sources):
    recipe = next(r for r in pool["prune"] if r.ratio == 0.5)
    assert recipe.prune and all(step.pruned for step in recipe.prune)
    seg = sources.segmentation(TEACHER)
    before = sum(p.numel() for p in seg.span(*recipe.span).parameters())
    after = sum(p.numel() for p in build_alternative(recipe, sources).parameters())
    assert after < before


def test_sampling_is_seeded_balanced_and_ids_unique(pool):
    a, b, c = sample(pool, 20, seed=1), sample(pool, 20, seed=1), sample(pool, 20, seed=2)
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.model_dump() for r in a] != [r.model_dump() for r in c]
    assert len({r.id for r in a}) == 20
    assert len({r.kind for r in a}) == 4
    with pytest.raises(BespokeError):
        sample(pool, 0, seed=0)


def test_a_kind_that_cannot_be_made_costs_attempts_not_places(pool):
    """Failures are kept with their reason but do not fill the house; a kind failing 3 times in a row is closed."""
    from bespoke.house.plan import CLOSE_AFTER_FAILURES, Planned, _draw

    def complete(recipe):
        return Planned(recipe, "channel shuffle" if recipe.kind == "prune" else None)

    drawn = _draw(pool, 10, 0, None, complete)
    made = [p for p in drawn if p.error is None]
    failed = [p for p in drawn if p.error]
    assert len(made) == 10 and "prune" not in {p.recipe.kind for p in made}
    assert len(failed) == CLOSE_AFTER_FAILURES and {p.recipe.kind for p in failed} == {"prune"}
    assert len({p.recipe.id for p in drawn}) == len(drawn)
    with pytest.raises(BespokeError, match=r"no alternative could be made.*broken"):  # stops after `size` failures
        _draw(pool, 4, 0, None, lambda r: Planned(r, "broken"))


def test_student_without_replacement_is_the_teacher(sources):
    model, _ = teacher()
    student = _assemble(sources, [], len(sources.segmentation(TEACHER)))
    x = torch.randn(3, 3, R, R)
    with torch.no_grad():
        assert torch.equal(student.eval()(x), model(x))


def test_student_rebuilds_from_arch_config_and_exports(pool, sources, tmp_path):
    recipes = [r.model_copy(update={"id": f"s{i}"}) for i, r in
               enumerate([pool["prune"][0], next(r for r in pool["donor"] if r.span[0] >= pool["prune"][0].span[1])])]
    seg = sources.segmentation(TEACHER)
    student = _assemble(sources, recipes, len(seg)).eval()
    config = {"builder": "bespoke-block", "resolution": R, "num_segments": len(seg), "num_classes": 4,
              "sources": sources.configs, "alternatives": [r.model_dump(mode="json") for r in recipes]}
    rebuilt = build_arch(json.loads(json.dumps(config)))
    assert isinstance(rebuilt, type(build_student(config)))
    rebuilt.load_state_dict(student.state_dict())
    x = torch.randn(2, 3, R, R)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), student(x))
    from bespoke.export import export_onnx

    assert export_onnx(student, tmp_path / "s.onnx", (1, 3, R, R)) < 1e-4


def test_overlapping_students_are_refused(pool):
    a = pool["prune"][0].model_copy(update={"id": "x"})
    b = a.model_copy(update={"id": "y"})
    with pytest.raises(BespokeError, match="overlaps"):
        check_non_overlapping([a, b], 20)


def test_house_roundtrip_on_disk(tmp_path, sources, pool):
    from bespoke.export import load_teacher

    model, config = teacher()
    model, info = load_teacher(model, arch_config=config)
    recipes = sample(pool, 3, seed=0)
    seg = sources.segmentation(TEACHER)
    house = House.create(tmp_path, model, info, dict(sources.configs), seg, [Entry(id=r.id, recipe=r) for r in recipes],
                         pretrained_donors=False, settings={"seed": 0}, data={"spec": None})
    module = build_alternative(recipes[0], sources)
    house.record_done(house.index.get(recipes[0].id), module, {"val_loss": 0.5})
    house.save_index()
    again = House.open(tmp_path)
    assert again.index.counts() == {"done": 1, "pending": 2}
    x = torch.randn(2, *recipes[0].in_shape)
    with torch.no_grad():
        assert torch.equal(again.load_alternative(recipes[0].id)(x), module.eval()(x))
    with pytest.raises(BespokeError, match="not trained"):
        again.load_alternative(recipes[1].id)
    assert make_kind("skip").name == "skip"
    assert splits().num_classes == 4
