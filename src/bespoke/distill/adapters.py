"""Least-squares initialisation of adapters before distillation.

A donor span expects the donor's own features. Fitting the input adapter so it maps the teacher's activation to
the donor's activation on the same images (ridge regression per pixel), then the output adapter so it maps the
donor body's output to the teacher's span output, starts distillation close to a working block instead of from
a random projection. A projection-only skip is fitted straight from the span input to the span output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def renormalize(x: torch.Tensor, mean_from: Sequence[float], std_from: Sequence[float],
                mean_to: Sequence[float], std_to: Sequence[float]) -> torch.Tensor:
    """Images normalised with one mean/std, re-normalised with another."""
    def col(v: Sequence[float]) -> torch.Tensor:
        return torch.tensor(list(v), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    return ((x * col(std_from) + col(mean_from)) - col(mean_to)) / col(std_to)


def _rows(t: torch.Tensor, max_rows: int, gen: torch.Generator) -> torch.Tensor:
    rows = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) if t.dim() == 4 else t.reshape(len(t), -1)
    if len(rows) > max_rows:
        rows = rows[torch.randperm(len(rows), generator=gen)[:max_rows]]
    return rows


def _match(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``src`` resized to ``like``'s spatial size (area average down, bilinear up)."""
    if src.dim() != 4 or src.shape[2:] == like.shape[2:]:
        return src
    if src.shape[2] >= like.shape[2]:
        return F.adaptive_avg_pool2d(src, like.shape[2:])
    return F.interpolate(src, size=like.shape[2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def fit_projection(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, *, ridge: float = 1e-2,
                   max_rows: int = 32768, seed: int = 0) -> bool:
    """Set a 1x1 conv / linear ``layer`` to the ridge least-squares map from ``x`` to ``y``; False if not one."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)) or layer.bias is None:
        return False
    gen = torch.Generator().manual_seed(seed)
    y = _match(y, x)
    state = gen.get_state()
    xr = _rows(x, max_rows, gen).double()
    gen.set_state(state)  # same rows of x and y
    yr = _rows(y, max_rows, gen).double()
    xm, ym = xr.mean(0), yr.mean(0)
    xc, yc = xr - xm, yr - ym
    gram = xc.T @ xc
    gram += ridge * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram), dtype=gram.dtype)
    w = torch.linalg.solve(gram, xc.T @ yc).T  # [out, in]
    b = ym - w @ xm
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        return False
    layer.weight.copy_(w.reshape(layer.weight.shape).to(layer.weight.dtype))
    layer.bias.copy_(b.to(layer.bias.dtype))
    return True


@torch.no_grad()
def fit_adapters(module: nn.Module, teacher_in: torch.Tensor, teacher_out: torch.Tensor,
                 donor_in: torch.Tensor | None = None, *, seed: int = 0) -> list[str]:
    """Fit ``module.in_adapter`` / ``module.out_adapter`` (an :class:`~bespoke.house.Alternative`) in place.

    Args:
        teacher_in / teacher_out: teacher activations at the span's input / output on a calibration batch.
        donor_in: the donor's own activation at its span input on the same images (donor alternatives).

    Returns the adapters fitted (``"in"``, ``"out"``).
    """
    fitted = []
    in_ad, body, out_ad = (getattr(module, n, None) for n in ("in_adapter", "body", "out_adapter"))
    if body is None:
        return fitted
    was_training = module.training
    module.eval()
    try:
        if donor_in is not None:
            target = donor_in
        elif isinstance(body, nn.Identity) and isinstance(out_ad, nn.Identity):
            target = teacher_out
        else:
            target = None
        if target is not None and fit_projection(in_ad, teacher_in, target, seed=seed):
            fitted.append("in")
        if not isinstance(out_ad, nn.Identity):
            hidden = body(in_ad(teacher_in))
            if fit_projection(out_ad, hidden, teacher_out, seed=seed + 1):
                fitted.append("out")
    finally:
        module.train(was_training)
    return fitted
