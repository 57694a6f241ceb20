"""``build_house``: plan a model house, distil every alternative, measure latency tables. Resumable.

Killed and rerun with the same arguments, it reopens the house, keeps every finished alternative and trains
only the pending ones (groups are saved as they finish).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bespoke.data import DataSplits
from bespoke.distill import ActivationCache, DistillConfig, DistillJob, distill_group, fit_adapters
from bespoke.distill.activations import teacher_boundaries
from bespoke.distill.adapters import renormalize
from bespoke.errors import BespokeError
from bespoke.export import CARD
from bespoke.graph import Segmentation, enumerate_spans
from bespoke.house import (
    DEFAULT_KIND_WEIGHTS,
    TEACHER,
    Entry,
    House,
    ProposalContext,
    Recipe,
    SourceSet,
    build_alternative,
    build_time_sources,
    propose_all,
    resolve_teacher,
    sample,
)
from bespoke.house.house import META_FILE
from bespoke.search.data import batch_stream, data_record, held_out, resolve_data, validation_split
from bespoke.search.latency import build_latency_table
from bespoke.targets import Target, load_targets
from bespoke.train import cpu_seconds
from bespoke.utils.device import pick_device
from bespoke.utils.seed import seed_everything
from bespoke.zoo import get_pretrained_cfg

log = logging.getLogger(__name__)
DEFAULT_DONORS = ("efficientnet_lite0", "mobilenet_v2")


def build_house(teacher: str | Path | nn.Module, *, donors: Sequence[str] = DEFAULT_DONORS,
                data: DataSplits | str, out: str | Path, targets: Sequence[Target] | str | Path | None = None,
                size: int = 100, max_span: int = 3, distill_steps: int = 200, seed: int = 0,
                kinds: Sequence[str] = ("donor", "prune", "lowrank", "skip"),
                kind_weights: dict[str, float] | None = None, distill: DistillConfig | None = None,
                pretrained_donors: bool = True, fit_adapters_first: bool = True,
                train_limit: int | None = None, test_limit: int | None = None,
                teacher_config: dict[str, Any] | None = None,
                resolution: int | None = None) -> House:
    """Build (or resume) a model house in ``out``.

    Args:
        teacher: a ``bespoke finetune`` model directory, a zoo name, or a module (then ``teacher_config``,
            its arch recipe, and ``resolution`` are needed).
        donors: zoo names of public pretrained networks whose spans become alternatives.
        data: a :class:`DataSplits` or a data set name/path (loaded at the teacher's resolution); training
            images are used without labels, ``val`` for held-out metrics.
        targets: targets (list or YAML path) to measure latency tables for now; more can be added later.
        size: number of alternatives sampled (50-500 is typical).
        max_span: longest span, in segments, an alternative may replace.
        distill_steps: block distillation steps per alternative (overrides ``distill.steps``).
        pretrained_donors: load donors' ImageNet weights (False: random init, for tests).
        fit_adapters_first: least-squares adapter initialisation before distillation.
    """
    cfg = (distill or DistillConfig()).model_copy(update={"steps": distill_steps, "seed": seed})
    root = Path(out)
    house: House | None = None
    info = None
    if (root / META_FILE).is_file():
        house = House.open(root)
        _check_same(house, donors=list(donors), size=size, max_span=max_span, seed=seed, kinds=list(kinds))
        log.info("resuming house %s: %s", root, house.index.counts())
        res = house.resolution
    elif isinstance(teacher, nn.Module) or (Path(teacher) / CARD).is_file():
        info = resolve_teacher(teacher, arch_config=teacher_config, resolution=resolution)
        res = info.resolution
    else:  # a zoo name: the head is sized from the data
        res = resolution or 64
    splits = resolve_data(data, resolution=res, seed=seed, train_limit=train_limit, test_limit=test_limit)
    if house is None and info is None:
        info = resolve_teacher(teacher, resolution=res, num_classes=len(splits.classes))
    if house is None:
        assert info is not None
        cpu0 = cpu_seconds()
        sources = build_time_sources(info.model, info.arch_config, list(donors), res,
                                     pretrained_donors=pretrained_donors)
        seg = sources.segmentation(TEACHER)
        spans = enumerate_spans(seg, max_span)
        pool = propose_all(spans, ProposalContext(seg, sources, tuple(donors), max_span), list(kinds))
        recipes = sample(pool, size, seed, kind_weights or DEFAULT_KIND_WEIGHTS)
        entries = [Entry(id=r.id, recipe=r, provenance=_provenance(r, sources)) for r in recipes]
        settings = {"size": size, "max_span": max_span, "seed": seed, "kinds": list(kinds), "donors": list(donors),
                    "kind_weights": dict(kind_weights or DEFAULT_KIND_WEIGHTS),
                    "pool": {k: len(v) for k, v in pool.items()}, "distill": cfg.model_dump(mode="json"),
                    "fit_adapters": fit_adapters_first}
        house = House.create(root, info, dict(sources.configs), seg, entries, pretrained_donors=pretrained_donors,
                             settings=settings, data=data_record(data, splits, train_limit=train_limit,
                                                             test_limit=test_limit))
        house.index.cost_cpu_s["plan"] = cpu_seconds() - cpu0
        house.save_index()
    else:
        sources = _build_sources_for(house, list(donors), pretrained_donors=house.meta.pretrained_donors)
    distill_pending(house, sources, splits, cfg, fit_adapters_first=fit_adapters_first)
    for target in _targets(targets):
        build_latency_table(house, target)
    return house


def distill_pending(house: House, sources: SourceSet, splits: DataSplits, cfg: DistillConfig, *,
                    fit_adapters_first: bool = True) -> None:
    """Train every pending alternative, group by group (groups are fixed by plan order, so resumes repeat them)."""
    pending = {e.id for e in house.entries("pending")}
    if not pending:
        return
    device = pick_device(cfg.device)
    seg = sources.segmentation(TEACHER)  # stays on CPU: alternatives are built from it
    if device.type != "cpu":
        seg = copy.deepcopy(seg)
        for part in seg.segments:
            part.to(device).eval()
    meta = house.meta.teacher
    images, labels = held_out(validation_split(splits), meta.mean, meta.std, cfg.val_images)
    val = ActivationCache(seg, images.to(device), labels, max_bytes=int(cfg.max_cache_mb * 2**20)) \
        if len(images) else None
    calib = batch_stream(splits.train, meta.mean, meta.std, 64, cfg.seed + 7, kind="eval")()
    entries = house.entries()
    groups = [entries[i:i + cfg.group_size] for i in range(0, len(entries), cfg.group_size)]
    for number, group in enumerate(groups):
        todo = [e for e in group if e.id in pending]
        if not todo:
            continue
        seed_everything(cfg.seed * 7919 + number)
        cpu0 = cpu_seconds()
        jobs = []
        for entry in todo:
            try:
                module = build_alternative(entry.recipe, sources)
            except Exception as exc:  # a candidate that cannot be built is dropped, not fatal
                house.record_dropped(entry, "failed", f"{type(exc).__name__}: {exc}")
                log.warning("alternative %s dropped: %s", entry.id, exc)
                continue
            if fit_adapters_first:
                _fit(module, entry.recipe, sources, seg, calib, house)
            jobs.append(DistillJob(entry.id, module.to(device), *entry.recipe.span))
        if jobs:
            next_batch = batch_stream(splits.train, meta.mean, meta.std, cfg.batch_size, cfg.seed * 7919 + number)
            report = distill_group(seg, jobs, next_batch, cfg, val, device)
            modules = {j.id: j.module for j in jobs}
            for outcome in report.outcomes:
                entry = house.index.get(outcome.id)
                if outcome.status == "done":
                    house.record_done(entry, modules[outcome.id].cpu(), outcome.metrics)
                else:
                    house.record_dropped(entry, outcome.status, outcome.error or outcome.status, outcome.metrics)
                    log.warning("alternative %s %s: %s", outcome.id, outcome.status, outcome.error)
            mem = house.index.memory
            mem["batch_activation_bytes"] = max(mem.get("batch_activation_bytes", 0), report.batch_activation_bytes)
            mem["group_state_bytes"] = max(mem.get("group_state_bytes", 0), report.group_param_bytes)
            mem["val_cache_bytes"] = val.nbytes if val is not None else 0
            mem["val_images"] = len(val) if val is not None else 0
            mem["max_rss_mb"] = max(mem.get("max_rss_mb", 0.0), report.max_rss_mb)
            mem["group_size"] = cfg.group_size
        house.index.cost_cpu_s["distill"] = house.index.cost_cpu_s.get("distill", 0.0) + cpu_seconds() - cpu0
        house.save_index()


@torch.no_grad()
def _fit(module: nn.Module, recipe: Recipe, sources: SourceSet, seg: Segmentation, calib: torch.Tensor,
         house: House) -> None:
    """Least-squares adapter init on a calibration batch (donor features for donor alternatives), on CPU."""
    if recipe.in_adapter is None and recipe.out_adapter is None:
        return
    start, end = recipe.span
    device = next(iter(seg.segments[0].parameters()), torch.empty(0)).device
    acts = [a.cpu() for a in teacher_boundaries(seg, calib.to(device), end)]
    donor_in = None
    if recipe.kind == "donor" and recipe.in_adapter is not None and recipe.source_span is not None:
        dcfg = get_pretrained_cfg(recipe.source)
        meta = house.meta.teacher
        x = renormalize(calib, meta.mean, meta.std, dcfg.mean, dcfg.std)
        donor_in = sources.segmentation(recipe.source).run(x, 0, recipe.source_span[0])
    fit_adapters(module, acts[start], acts[end], donor_in, seed=recipe.seed)


def _provenance(recipe: Recipe, sources: SourceSet) -> dict[str, Any]:
    teacher = sources.segmentation(TEACHER)
    a, b = recipe.span
    out: dict[str, Any] = {"teacher_span": [a, b], "teacher_segments": teacher.names[a:b], "kind": recipe.kind}
    if recipe.kind == "donor" and recipe.source_span is not None:
        dseg = sources.segmentation(recipe.source)
        c, d = recipe.source_span
        out.update({"donor": recipe.source, "donor_span": [c, d], "donor_segments": dseg.names[c:d],
                    "donor_weights": sources.configs[recipe.source].get("name", recipe.source)})
    elif recipe.kind == "prune":
        out["compression"] = {"method": "channel pruning (Torch-Pruning, group L2)", "ratio": recipe.ratio}
    elif recipe.kind == "lowrank":
        out["compression"] = {"method": "truncated SVD", "rank_fraction": recipe.rank_fraction,
                              "ranks": recipe.ranks}
    else:
        out["compression"] = {"method": "skip", "projection": recipe.in_adapter is not None}
    out["adapters"] = {"in": recipe.in_adapter.model_dump() if recipe.in_adapter else None,
                       "out": recipe.out_adapter.model_dump() if recipe.out_adapter else None}
    return out


def _build_sources_for(house: House, donors: list[str], *, pretrained_donors: bool) -> SourceSet:
    return build_time_sources(house.teacher_model(), house.meta.teacher.arch_config, donors, house.resolution,
                              pretrained_donors=pretrained_donors)


def _check_same(house: House, **settings: Any) -> None:
    for key, value in settings.items():
        if house.meta.settings.get(key) != value:
            raise BespokeError(f"the house at {house.root} was planned with {key}={house.meta.settings.get(key)!r}, "
                               f"not {value!r}", "use the same settings to resume, or a fresh --out")


def _targets(targets: Sequence[Target] | str | Path | None) -> list[Target]:
    if targets is None:
        return []
    if isinstance(targets, (str, Path)):
        return load_targets(targets)
    return list(targets)
