"""Accuracy of a candidate student on held-out images, evaluated incrementally.

The estimator keeps the activations at every cut point for the current (last committed) student. A candidate
that differs from it first at segment ``k`` reuses everything before ``k`` and recomputes only from there on.
Results are memoised per set of alternatives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bespoke.distill import teacher_boundaries
from bespoke.graph import Segmentation

Solution = frozenset[str]


@dataclass(frozen=True)
class Estimate:
    """Top-1 on the held-out images, agreement with the teacher's top-1, mean KL(teacher || student)."""

    accuracy: float
    agreement: float
    kl: float


class AccuracyEstimator:
    """Incremental held-out evaluation of students made of ``seg`` and alternatives on ``images`` (normalised)
    with ``labels``.

    ``spans`` maps alternative ids to their teacher span ``(start, end)``; ``load(id)`` returns the module (eval
    mode), called the first time a student uses it.
    """

    def __init__(self, seg: Segmentation, spans: Mapping[str, tuple[int, int]], load: Callable[[str], nn.Module],
                 images: torch.Tensor, labels: torch.Tensor, *, chunk: int = 256) -> None:
        self.seg = seg
        self.spans = dict(spans)
        self._load = load
        self.modules: dict[str, nn.Module] = {}
        self.labels = labels
        self.chunk = chunk
        with torch.no_grad():
            parts = [teacher_boundaries(seg, images[i:i + chunk]) for i in range(0, len(images), chunk)]
        self._acts: dict[int, torch.Tensor] = {k: torch.cat([p[k] for p in parts]) for k in range(len(seg) + 1)}
        self.teacher_logits = self._acts[len(seg)]
        self._state: Solution = frozenset()
        self._pending: tuple[Solution, dict[int, torch.Tensor]] | None = None
        self.memo: dict[Solution, Estimate] = {}
        self.evaluations = 0
        self.segments_run = 0
        self.teacher = self._score(self.teacher_logits)
        self.memo[self._state] = self.teacher

    def __len__(self) -> int:
        return len(self.labels)

    def _score(self, logits: torch.Tensor) -> Estimate:
        acc = (logits.argmax(1) == self.labels).float().mean().item()
        agree = (logits.argmax(1) == self.teacher_logits.argmax(1)).float().mean().item()
        kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(self.teacher_logits, 1), log_target=True,
                      reduction="batchmean").item()
        return Estimate(acc, agree, kl)

    def module(self, alt_id: str) -> nn.Module:
        if alt_id not in self.modules:
            self.modules[alt_id] = self._load(alt_id).eval()
        return self.modules[alt_id]

    @torch.no_grad()
    def evaluate(self, solution: Iterable[str]) -> Estimate:
        """Estimate of the student using alternatives ``solution`` (non-overlapping)."""
        sol = frozenset(solution)
        if sol in self.memo:
            return self.memo[sol]
        changed = sol ^ self._state
        first = min(self.spans[a][0] for a in changed)
        acts = {k: v for k, v in self._acts.items() if k <= first}
        starts = {self.spans[a][0]: a for a in sol}
        pos, n = first, len(self.seg)
        while pos < n:
            x = acts[pos]
            if pos in starts:
                module, end = self.module(starts[pos]), self.spans[starts[pos]][1]
                out = torch.cat([module(x[i:i + self.chunk]) for i in range(0, len(x), self.chunk)])
                pos = end
            else:
                out = torch.cat([self.seg.segments[pos](x[i:i + self.chunk]) for i in range(0, len(x), self.chunk)])
                pos += 1
            self.segments_run += 1
            acts[pos] = out
        estimate = self._score(acts[n])
        self.evaluations += 1
        self.memo[sol] = estimate
        self._pending = (sol, acts)
        return estimate

    def commit(self, solution: Iterable[str]) -> None:
        """Make ``solution`` the base later candidates are computed from (call after accepting a move)."""
        sol = frozenset(solution)
        if sol == self._state:
            return
        if self._pending is None or self._pending[0] != sol:
            self.memo.pop(sol, None)
            self.evaluate(sol)
        assert self._pending is not None
        self._state, self._acts = self._pending[0], self._pending[1]
        self._pending = None
