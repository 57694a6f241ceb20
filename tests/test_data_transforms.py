"""bespoke.data transforms, dataset wrappers and loaders."""

from __future__ import annotations

import pytest
import torch

from bespoke.data import (
    TensorImageDataset,
    TransformedDataset,
    TwoViewDataset,
    build_transform,
    make_loader,
)
from bespoke.errors import BespokeError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def image(seed: int = 0, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)


def dataset(n: int = 24, size: int = 8, classes: int = 4) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return TensorImageDataset(images, torch.arange(n) % classes, resolution=size)


@pytest.mark.parametrize("kind", ["eval", "flip", "weak", "strong"])
def test_transform_shapes_and_dtype(kind: str) -> None:
    x = image()
    out = build_transform(kind, MEAN, STD)(x)  # type: ignore[arg-type]
    assert out.dtype == torch.float32 and out.shape == (3, 16, 16)
    assert torch.isfinite(out).all()
    assert x.dtype == torch.uint8  # input untouched


def test_eval_is_exact_normalisation() -> None:
    x = image()
    expected = (x.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(build_transform("eval", MEAN, STD)(x), expected)


def test_flip_is_the_image_or_its_mirror() -> None:
    x = image()
    norm = build_transform("eval", MEAN, STD)(x)
    flip = build_transform("flip", MEAN, STD)
    torch.manual_seed(0)
    views = [flip(x) for _ in range(12)]
    assert all(torch.equal(v, norm) or torch.equal(v, norm.flip(-1)) for v in views)
    assert any(torch.equal(v, norm) for v in views) and any(torch.equal(v, norm.flip(-1)) for v in views)


def test_weak_differs_from_strong_and_is_random() -> None:
    x = image(size=32)
    weak, strong = build_transform("weak", MEAN, STD), build_transform("strong", MEAN, STD)
    torch.manual_seed(0)
    weak_views = [weak(x) for _ in range(6)]
    torch.manual_seed(0)
    strong_views = [strong(x) for _ in range(6)]
    assert all(not torch.equal(w, s) for w, s in zip(weak_views, strong_views, strict=True))
    assert any(not torch.equal(weak_views[0], w) for w in weak_views[1:])


def test_bad_transform_arguments() -> None:
    with pytest.raises(BespokeError, match="unknown transform"):
        build_transform("medium", MEAN, STD)  # type: ignore[arg-type]
    with pytest.raises(BespokeError, match="mean/std"):
        build_transform("eval", (0.5, 0.5), STD)
    with pytest.raises(BespokeError, match="mean/std"):
        build_transform("eval", MEAN, (0.2, 0.0, 0.2))


def test_wrappers() -> None:
    ds = dataset()
    weak, strong = build_transform("weak", MEAN, STD), build_transform("strong", MEAN, STD)
    x, y = TransformedDataset(ds, weak)[5]
    assert x.dtype == torch.float32 and y == 1
    w, s, y = TwoViewDataset(ds, weak, strong)[6]
    assert w.shape == s.shape == (3, 8, 8) and y == 2
    assert len(TwoViewDataset(ds, weak, strong)) == len(ds)


def test_items_are_copies() -> None:
    ds = dataset()
    x, _ = ds[0]
    x.zero_()
    assert ds[0][0].any()


def test_loader_is_seeded() -> None:
    ds = dataset()
    order = lambda seed: torch.cat([y for _, y in make_loader(ds, None, 5, shuffle=True, seed=seed)])  # noqa: E731
    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    batches = list(make_loader(ds, None, 5, shuffle=False, seed=0, drop_last=True))
    assert len(batches) == 4 and batches[0][0].dtype == torch.uint8
    assert batches[0][1].tolist() == [0, 1, 2, 3, 0]


def test_loader_with_workers_augments_deterministically() -> None:
    ds = dataset(n=8)
    strong = build_transform("strong", MEAN, STD)

    def run() -> torch.Tensor:
        loader = make_loader(ds, strong, 4, shuffle=True, seed=3, num_workers=2)
        return torch.cat([x for x, _ in loader])

    first = run()
    assert first.dtype == torch.float32 and first.shape == (8, 3, 8, 8)
    assert torch.equal(first, run())


def test_loader_two_views() -> None:
    ds = TwoViewDataset(dataset(), build_transform("weak", MEAN, STD), build_transform("strong", MEAN, STD))
    weak, strong, y = next(iter(make_loader(ds, None, 6, shuffle=True, seed=0)))
    assert weak.shape == strong.shape == (6, 3, 8, 8) and y.shape == (6,)


def test_loader_bad_arguments() -> None:
    with pytest.raises(BespokeError, match="batch_size"):
        make_loader(dataset(), None, 0, shuffle=False, seed=0)
    with pytest.raises(BespokeError, match="num_workers"):
        make_loader(dataset(), None, 2, shuffle=False, seed=0, num_workers=-1)
