"""The block engine on any CNN a user brings: span enumeration and a tiny house over timm/torchvision families.

Parametrised over architectures the way timm's own tests run over its registry: random init, 32 px, a house of a
few alternatives with one distillation step each. Each one either builds or records why an alternative failed.
"""

from __future__ import annotations

import pytest
import torch

from bespoke.export import zoo_arch_config
from bespoke.graph import enumerate_spans, segment_model
from bespoke.house import TEACHER, ProposalContext, SourceSet, build_alternative, build_house, make_kind, plan_house
from bespoke.house.alternatives.donor import DonorKind
from bespoke.zoo import create_model
from tests.test_house_helpers import CLASSES, DONOR, R, one_thread, splits

# architecture -> (segments, spans of at most 3 segments) measured at 32 px; the cut rule must not lose any
ARCHS = {
    "timm:resnet18": (10, 24),
    "timm:resnet50": (18, 48),
    "timm:mobilenetv3_large_100": (19, 51),
    "timm:mobilenetv3_small_100": (15, 39),
    "timm:efficientnet_b0": (19, 51),
    "timm:mnasnet_100": (20, 54),
    "timm:regnetx_002": (15, 39),     # was 6 / 12: cut per stage only
    "timm:ghostnet_100": (20, 54),
    "timm:convnext_atto": (16, 42),   # was 6 / 12
    "timm:repvgg_a0": (23, 63),
    "timm:densenet121": (9, 21),      # was 2 / 1
    "torchvision:resnet18": (10, 24),
    "torchvision:shufflenet_v2_x0_5": (19, 51),
    "torchvision:mobilenet_v3_small": (14, 36),
    "timm:tf_efficientnet_lite0": (19, 51),
    "timm:mobilenetv2_100": (20, 54),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(arch, pretrained=False, num_classes=len(CLASSES), resolution=R).eval()


def _sources(arch: str, donors: tuple[str, ...] = ()) -> tuple[SourceSet, ProposalContext]:
    model = _model(arch)
    configs = {TEACHER: zoo_arch_config(arch, len(CLASSES), R),
               **{d: zoo_arch_config(d, 1000, R) for d in donors}}
    sources = SourceSet(configs, (3, R, R), lambda key: model if key == TEACHER else _model_of(key))
    seg = sources.segmentation(TEACHER)
    return sources, ProposalContext(seg, sources, donors, 2)


def _model_of(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model(name, pretrained=False, resolution=R).eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_spans_cover_the_network(arch):
    seg = segment_model(_model(arch), (3, R, R))
    segments, spans = ARCHS[arch]
    assert len(seg) >= segments, seg.names
    assert len(enumerate_spans(seg, 3)) >= spans
    x = torch.randn(2, 3, R, R)
    with torch.no_grad():
        assert torch.allclose(seg.run(x), _model(arch)(x), atol=1e-5), "the segments are the model"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_tiny_house_builds_or_records_why(arch, tmp_path):
    house = build_house(_model(arch), teacher_config=zoo_arch_config(arch, len(CLASSES), R), resolution=R,
                        donors=[DONOR], data=splits(), out=tmp_path / "house", size=4, max_span=2,
                        distill_steps=1, seed=0, pretrained_donors=False)
    entries = house.entries()
    assert len(entries) == 4
    assert all(e.status == "done" or e.error for e in entries), [(e.id, e.status) for e in entries]
    assert house.entries("done"), [(e.recipe.label, e.error) for e in entries]


def test_planning_completes_only_what_it_samples(monkeypatch):
    """A small house dry-runs a handful of donor spans, not the whole described pool."""
    _, ctx = _sources("timm:resnet18", (DONOR,))
    spans = enumerate_spans(ctx.teacher, 2)
    calls = []
    real = DonorKind._dry_run

    def counting(self, *args):
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(DonorKind, "_dry_run", counting)
    plan = plan_house(spans, ctx, ["donor", "prune", "lowrank", "skip"], 4, seed=3)
    assert len(plan.alternatives) == 4
    assert plan.pool["donor"] > 50
    assert len(calls) < plan.pool["donor"] // 4, "planning cost follows the size, not the pool"
    again = plan_house(spans, ctx, ["donor", "prune", "lowrank", "skip"], 4, seed=3)
    assert [p.recipe.model_dump() for p in again.alternatives] == [p.recipe.model_dump() for p in plan.alternatives]


def test_a_small_house_replaces_the_spans_that_hold_the_teachers_macs_first():
    """Span order is weighted by MACs: 6 alternatives cover a larger share of the MACs than in uniform order."""
    from bespoke.house.plan import teacher_span_macs

    _, ctx = _sources("torchvision:shufflenet_v2_x0_5")
    spans = enumerate_spans(ctx.teacher, 2)
    segment = teacher_span_macs(ctx, {(i, i + 1) for i in range(len(ctx.teacher))})
    assert teacher_span_macs(ctx, {(0, 2)})[(0, 2)] == segment[(0, 1)] + segment[(1, 2)]

    def covered(plan) -> float:
        touched = {i for p in plan.alternatives for i in range(*p.recipe.span)}
        return sum(segment[(i, i + 1)] for i in touched)

    weighted = [covered(plan_house(spans, ctx, ["prune", "skip"], 6, seed=s)) for s in range(4)]
    uniform = []
    for s in range(4):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("bespoke.house.plan.SPAN_WEIGHT_POWER", 0.0)  # every span weighs 1
            uniform.append(covered(plan_house(spans, ctx, ["prune", "skip"], 6, seed=s)))
    assert sum(weighted) > sum(uniform), (weighted, uniform)


def _prune_all(arch: str, spans_limit: int, max_span: int = 2) -> list[tuple[object, str | None]]:
    """Plan and build prune alternatives over the first spans; (recipe, error) for each drawn candidate."""
    sources, ctx = _sources(arch)
    spans = enumerate_spans(ctx.teacher, max_span)[:spans_limit]
    plan = plan_house(spans, ctx, ["prune"], 3 * len(spans), seed=0)
    out = []
    for planned in plan.alternatives:
        if planned.error is None:
            module = build_alternative(planned.recipe, sources).eval()
            assert all(p.numel() for p in module.parameters()), "no layer is pruned to zero channels"
            with torch.no_grad():
                y = module(torch.randn(2, *planned.recipe.in_shape))
            assert list(y.shape[1:]) == planned.recipe.out_shape
        out.append((planned.recipe, planned.error))
    return out


def test_grouped_convs_are_pruned_per_block():
    """RegNet's grouped 3x3 convs lose the same offsets in every group, so their groups still divide."""
    made = _prune_all("timm:regnetx_002", 6)
    assert made and all(error is None for _, error in made), made
    sources, _ = _sources("timm:regnetx_002")
    grouped = 0
    for recipe, _ in made:
        for m in build_alternative(recipe, sources).modules():
            if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.in_channels:
                grouped += 1
                assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
    assert grouped


def test_ghost_modules_keep_a_channel_in_every_conv():
    made = _prune_all("timm:ghostnet_100", 6, max_span=3)
    assert made and all(error is None for _, error in made), made


def test_channel_shuffle_fails_its_alternatives_not_the_build():
    """Torch-Pruning cannot follow two channel shuffles in a row: those prune alternatives fail with the reason,
    the others are made."""
    made = _prune_all("torchvision:shufflenet_v2_x0_5", 6, max_span=3)
    errors = [error for _, error in made if error]
    assert errors and all("Torch-Pruning cannot follow the channels" in e for e in errors), made
    assert any(error is None for _, error in made)
    kind = make_kind("prune")
    _, ctx = _sources("torchvision:shufflenet_v2_x0_5")
    described = [r for s in enumerate_spans(ctx.teacher, 2) for r in kind.describe(s, ctx)]
    assert described and all(r.prune is None for r in described), "describing runs no Torch-Pruning"
