"""bespoke.distill: one teacher pass feeds a whole group; diverging alternatives are dropped; adapters fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bespoke.distill import ActivationCache, DistillConfig, DistillJob, distill_group, fit_adapters
from bespoke.distill.adapters import fit_projection, renormalize
from bespoke.graph import segment_model
from bespoke.house import Alternative
from tests.test_house_helpers import R, one_thread, teacher


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def seg():
    model, _ = teacher()
    return segment_model(model, (3, R, R))


class NaNBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w * float("nan")


def _span(seg, length_ok=lambda s, e: True):
    for start in range(1, len(seg) - 2):
        if seg.shapes[start] == seg.shapes[start + 1]:
            return start, start + 1
    raise AssertionError("no shape-preserving segment")


def test_group_shares_one_teacher_pass_and_drops_nan(seg):
    start, end = _span(seg)
    calls = {"n": 0}
    hook = seg.segments[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    c = seg.shapes[start][0]
    good = Alternative(nn.Conv2d(c, c, 1))
    also = Alternative(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)))
    jobs = [DistillJob("good", good, start, end), DistillJob("nan", Alternative(NaNBlock()), start, end),
            DistillJob("also", also, start, end)]
    gen = torch.Generator().manual_seed(0)
    batches = lambda: torch.randn(8, 3, R, R, generator=gen)  # noqa: E731
    val = ActivationCache(seg, torch.randn(16, 3, R, R, generator=gen), torch.randint(0, 4, (16,), generator=gen))
    cfg = DistillConfig(steps=6, batch_size=8, lr=1e-2)
    try:
        report = distill_group(seg, jobs, batches, cfg, val)
    finally:
        hook.remove()
    first_calls = calls["n"] - len(val) // val.chunk - (1 if len(val) % val.chunk else 0)
    assert first_calls == cfg.steps, "one teacher pass per step for the whole group"
    by_id = {o.id: o for o in report.outcomes}
    assert by_id["nan"].status == "diverged" and by_id["nan"].metrics["step"] == 0
    assert "nan" in by_id["nan"].error.lower()
    for name in ("good", "also"):
        assert by_id[name].status == "done"
        m = by_id[name].metrics
        assert m["val_loss"] >= 0 and 0 <= m["val_accuracy"] <= 1 and m["val_images"] == 16
    assert report.batch_activation_bytes == 2 * 8 * 4 * torch.Size(seg.shapes[start]).numel()
    assert report.group_param_bytes > 0 and report.max_rss_mb > 0


def test_distillation_lowers_the_feature_loss(seg):
    start, end = _span(seg)
    c = seg.shapes[start][0]
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(32, 3, R, R, generator=gen)
    val = ActivationCache(seg, data[:16], torch.zeros(16, dtype=torch.long))
    module = Alternative(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.Conv2d(c, c, 1)))
    job = DistillJob("a", module, start, end)
    from bespoke.distill import validate

    before = validate(seg, job, val)["val_loss"]
    distill_group(seg, [job], lambda: data[torch.randint(0, 32, (8,), generator=gen)],
                  DistillConfig(steps=40, lr=5e-3), None)
    assert validate(seg, job, val)["val_loss"] < before


def test_activation_cache_is_capped(seg):
    images = torch.randn(40, 3, R, R)
    full = ActivationCache(seg, images, torch.zeros(40, dtype=torch.long))
    capped = ActivationCache(seg, images, torch.zeros(40, dtype=torch.long), max_bytes=full.nbytes // 4)
    assert len(full) == 40 and 0 < len(capped) <= 10 and capped.nbytes <= full.nbytes // 4


def test_least_squares_adapters():
    torch.manual_seed(0)
    x = torch.randn(16, 6, 4, 4)
    true = nn.Conv2d(6, 3, 1)
    layer = nn.Conv2d(6, 3, 1)
    with torch.no_grad():
        assert fit_projection(layer, x, true(x), ridge=1e-8)
        assert torch.allclose(layer(x), true(x), atol=1e-4)
    # a projection-only skip is fitted from span input to span output
    skip = Alternative(nn.Identity(), nn.Conv2d(6, 3, 1))
    assert fit_adapters(skip, x, true(x)) == ["in"]
    body = nn.Conv2d(5, 5, 1)
    donor = Alternative(body, nn.Conv2d(6, 5, 1), nn.Conv2d(5, 3, 1))
    assert fit_adapters(donor, x, true(x), donor_in=torch.randn(16, 5, 8, 8)) == ["in", "out"]
    img = torch.rand(2, 3, 4, 4)
    back = renormalize(renormalize(img, (0.5,) * 3, (0.5,) * 3, (0.4, 0.4, 0.4), (0.2,) * 3),
                       (0.4, 0.4, 0.4), (0.2,) * 3, (0.5,) * 3, (0.5,) * 3)
    assert torch.allclose(back, img, atol=1e-6)
