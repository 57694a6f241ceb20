"""``build_house``: plan a model house, distil every alternative, measure latency tables. Resumable.

Killed and rerun with the same arguments, it reopens the house, keeps every finished alternative and trains
only the pending ones (groups are saved as they finish).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from bespoke.data import DataSplits
from bespoke.distill import ActivationCache, DistillConfig, DistillJob, DistillOutcome, distill_group, fit_adapters
from bespoke.distill.activations import teacher_boundaries
from bespoke.distill.adapters import renormalize
from bespoke.errors import BespokeError
from bespoke.export import CARD, build_arch, check_teacher_fits, load_teacher
from bespoke.graph import Segmentation, enumerate_spans
from bespoke.house.alternatives import ProposalContext, build_alternative
from bespoke.house.data import batch_stream, data_record, held_out, resolve_data, validation_split
from bespoke.house.house import META_FILE, TEACHER_FILE, House
from bespoke.house.index import Entry
from bespoke.house.latency import build_latency_table
from bespoke.house.module import count_params
from bespoke.house.plan import DEFAULT_KIND_WEIGHTS, plan_house
from bespoke.house.recipe import Recipe
from bespoke.house.sources import TEACHER, SourceSet, build_time_sources
from bespoke.targets import Target, load_targets
from bespoke.train import cpu_seconds
from bespoke.utils.device import channels_last_safe, pick_device
from bespoke.utils.executor import Executor, LocalExecutor, make_executor
from bespoke.utils.lock import locks_output
from bespoke.utils.seed import check_seed, seed_everything
from bespoke.zoo import apply_state_dict, get_pretrained_cfg

log = logging.getLogger(__name__)
DEFAULT_DONORS = ("efficientnet_lite0", "mobilenet_v2")


@locks_output("out")
def build_house(teacher: str | Path | nn.Module, *, donors: Sequence[str] = DEFAULT_DONORS,
                data: DataSplits | str, out: str | Path, targets: Sequence[Target] | str | Path | None = None,
                size: int = 100, max_span: int = 3, distill_steps: int = 200, seed: int = 0,
                kinds: Sequence[str] = ("donor", "prune", "lowrank", "skip"),
                kind_weights: dict[str, float] | None = None, distill: DistillConfig | None = None,
                pretrained_donors: bool = True, fit_adapters_first: bool = True,
                train_limit: int | None = None, test_limit: int | None = None,
                teacher_config: dict[str, Any] | None = None,
                resolution: int | None = None, executor: Executor | str = "local",
                ray_address: str | None = None) -> House:
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
        executor: where groups of alternatives are distilled: ``"local"`` (this process), ``"ray"`` (Ray tasks
            on the cluster at ``ray_address``; ``None`` starts a local one), or an :class:`Executor`. Every
            executor gives the same house; only this process writes it. Latency tables are always measured here,
            after distillation, so no other work shares the cores while timing.
    """
    cfg = (distill or DistillConfig()).model_copy(update={"steps": distill_steps, "seed": check_seed(seed)})
    if isinstance(executor, str):
        executor = make_executor(executor, address=ray_address)
    root = Path(out)
    house: House | None = None
    info = None
    if (root / META_FILE).is_file():
        house = House.open(root)
        _check_same(house, donors=list(donors), size=size, max_span=max_span, seed=seed, kinds=list(kinds))
        log.info("resuming house %s: %s", root, house.index.counts())
        res = house.resolution
    elif isinstance(teacher, nn.Module) or (Path(teacher) / CARD).is_file():
        teacher_model, info = load_teacher(teacher, arch_config=teacher_config, resolution=resolution)
        res = info.resolution
    else:  # a zoo name: the head is sized from the data
        res = resolution or 64
    splits = resolve_data(data, resolution=res, seed=seed, train_limit=train_limit, test_limit=test_limit)
    if house is None and info is None:
        teacher_model, info = load_teacher(teacher, resolution=res, num_classes=len(splits.classes))
    known = info or house.meta.teacher  # type: ignore[union-attr]
    check_teacher_fits(known, splits)
    if house is None:
        assert info is not None
        cpu0 = cpu_seconds()
        sources = build_time_sources(teacher_model, info.arch_config, list(donors), res,
                                     pretrained_donors=pretrained_donors)
        seg = sources.segmentation(TEACHER)
        spans = enumerate_spans(seg, max_span)
        plan = plan_house(spans, ProposalContext(seg, sources, tuple(donors), max_span), list(kinds), size, seed,
                          kind_weights or DEFAULT_KIND_WEIGHTS)
        entries = [Entry(id=p.recipe.id, recipe=p.recipe, provenance=_provenance(p.recipe, sources),
                         status="failed" if p.error else "pending", error=p.error) for p in plan.alternatives]
        for p in plan.alternatives:
            if p.error:
                log.warning("alternative %s failed: %s", p.recipe.id, p.error)
        settings = {"size": size, "max_span": max_span, "seed": seed, "kinds": list(kinds), "donors": list(donors),
                    "kind_weights": dict(kind_weights or DEFAULT_KIND_WEIGHTS),
                    "pool": plan.pool, "distill": cfg.model_dump(mode="json"),
                    "fit_adapters": fit_adapters_first}
        house = House.create(root, teacher_model, info, dict(sources.configs), seg, entries,
                             pretrained_donors=pretrained_donors, settings=settings,
                             data=data_record(data, splits, train_limit=train_limit, test_limit=test_limit))
        house.index.cost_cpu_s["plan"] = cpu_seconds() - cpu0
        house.save_index()
    else:
        sources = None  # built where the groups are trained
    if cfg.memory_format == "auto":  # traced segments no longer name their blocks: decide on the teacher itself
        net = teacher_model if sources is not None else house.teacher_model()
        layout = "channels_last" if channels_last_safe(pick_device(cfg.device), net) else "contiguous"
        cfg = cfg.model_copy(update={"memory_format": layout})
    distill_pending(house, sources, splits, cfg, fit_adapters_first=fit_adapters_first, executor=executor)
    for target in _targets(targets):
        build_latency_table(house, target)
    return house


@dataclass
class GroupWork:
    """One group of alternatives to train: its number in plan order (seeds its batches) and its pending entries."""

    number: int
    entries: list[Entry]


@dataclass
class GroupResult:
    """What training a group produced; the driver turns it into files and index entries."""

    number: int
    outcomes: list[DistillOutcome]
    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # weights of the ``done`` ones
    memory: dict[str, float | int] = field(default_factory=dict)
    cpu_s: float = 0.0


@dataclass
class GroupSetup:
    """Everything any process needs to train groups of a house: picklable, shipped once to a Ray cluster.

    The teacher travels as its recipe + weights; donors are rebuilt from their zoo names (their pretrained weights
    must be installed wherever a task runs), data as the split objects. The first group a process trains builds the
    sources, the held-out activation cache and the calibration batch; later groups in the same process reuse them.
    """

    teacher_config: dict[str, Any]
    teacher_state: dict[str, torch.Tensor]
    donors: list[str]
    pretrained_donors: bool
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    splits: DataSplits
    cfg: DistillConfig
    fit_adapters_first: bool = True
    sources: SourceSet | None = field(default=None, repr=False)  # this process's, when already built

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["sources"] = None  # modules stay in the process that built them
        state.pop("_context", None)
        return state

    def context(self) -> _GroupContext:
        if "_context" not in self.__dict__:
            self.__dict__["_context"] = _GroupContext(self)
        return self.__dict__["_context"]


class _GroupContext:
    """Per-process state of group training: sources, the teacher segmentation on the device, val cache, calib."""

    def __init__(self, setup: GroupSetup) -> None:
        if setup.sources is None:
            teacher = build_arch(setup.teacher_config)
            apply_state_dict(teacher, setup.teacher_state, source="the house teacher")
            setup.sources = build_time_sources(teacher.eval(), setup.teacher_config, list(setup.donors),
                                               setup.resolution, pretrained_donors=setup.pretrained_donors)
        cfg = setup.cfg
        self.sources = setup.sources
        self.device = pick_device(cfg.device)
        seg = self.sources.segmentation(TEACHER)  # stays on CPU: alternatives are built from it
        if self.device.type != "cpu":
            seg = copy.deepcopy(seg)
            for part in seg.segments:
                part.to(self.device).eval()
        self.seg = seg
        images, labels = held_out(validation_split(setup.splits), setup.mean, setup.std, cfg.val_images)
        self.val = ActivationCache(seg, images.to(self.device), labels, max_bytes=int(cfg.max_cache_mb * 2**20)) \
            if len(images) else None
        self.calib = batch_stream(setup.splits.train, setup.mean, setup.std, 64, cfg.seed + 7, kind="eval")()


def train_group(setup: GroupSetup, work: GroupWork) -> GroupResult:
    """Build, initialise and distil one group of alternatives (in this process or a Ray task); write nothing."""
    cpu0 = cpu_seconds()
    ctx = setup.context()
    cfg = setup.cfg
    seed_everything(cfg.seed * 7919 + work.number)
    outcomes: list[DistillOutcome] = []
    jobs = []
    for entry in work.entries:
        try:
            module = build_alternative(entry.recipe, ctx.sources)
        except Exception as exc:  # a candidate that cannot be built is dropped, not fatal
            outcomes.append(DistillOutcome(entry.id, "failed", {}, f"{type(exc).__name__}: {exc}"))
            continue
        if setup.fit_adapters_first:
            _fit(module, entry.recipe, ctx.sources, ctx.seg, ctx.calib, setup.mean, setup.std)
        jobs.append(DistillJob(entry.id, module.to(ctx.device), *entry.recipe.span))
    result = GroupResult(work.number, outcomes)
    if jobs:
        next_batch = batch_stream(setup.splits.train, setup.mean, setup.std, cfg.batch_size,
                                  cfg.seed * 7919 + work.number)
        report = distill_group(ctx.seg, jobs, next_batch, cfg, ctx.val, ctx.device)
        modules = {j.id: j.module for j in jobs}
        for outcome in report.outcomes:
            if outcome.status == "done":
                module = modules[outcome.id].cpu()
                outcome.metrics = {**outcome.metrics, "params": count_params(module)}
                result.states[outcome.id] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            outcomes.append(outcome)
        result.memory = {"batch_activation_bytes": report.batch_activation_bytes,
                         "group_state_bytes": report.group_param_bytes, "max_rss_mb": report.max_rss_mb,
                         "val_cache_bytes": ctx.val.nbytes if ctx.val is not None else 0,
                         "val_images": len(ctx.val) if ctx.val is not None else 0, "group_size": cfg.group_size}
    order = {e.id: i for i, e in enumerate(work.entries)}
    result.outcomes = sorted(outcomes, key=lambda o: order[o.id])
    result.cpu_s = cpu_seconds() - cpu0
    return result


def distill_pending(house: House, sources: SourceSet | None, splits: DataSplits, cfg: DistillConfig, *,
                    fit_adapters_first: bool = True, executor: Executor | None = None) -> None:
    """Train every pending alternative, group by group (groups are fixed by plan order, so resumes repeat them).

    Groups run on ``executor`` (default: this process, one after another); ``sources`` (built with weights) saves
    this process from rebuilding them. Only this process writes: each finished group's weights, then the index.
    """
    pending = {e.id for e in house.entries("pending")}
    if not pending:
        return
    entries = house.entries()
    groups = [entries[i:i + cfg.group_size] for i in range(0, len(entries), cfg.group_size)]
    work = [GroupWork(n, [e for e in g if e.id in pending]) for n, g in enumerate(groups)]
    work = [w for w in work if w.entries]
    meta = house.meta
    setup = GroupSetup(teacher_config=meta.teacher.arch_config,
                       teacher_state=load_file(str(house.root / TEACHER_FILE)),
                       donors=list(meta.settings.get("donors", [k for k in meta.sources if k != TEACHER])),
                       pretrained_donors=meta.pretrained_donors, resolution=house.resolution,
                       mean=meta.teacher.mean, std=meta.teacher.std, splits=splits, cfg=cfg,
                       fit_adapters_first=fit_adapters_first, sources=sources)
    with executor or LocalExecutor() as ex:
        for _, result in ex.map_unordered(train_group, setup, work):
            _record_group(house, result)


def _record_group(house: House, result: GroupResult) -> None:
    """Weights of the group's finished alternatives first, then the index (atomic): the index is the marker."""
    for outcome in result.outcomes:
        entry = house.index.get(outcome.id)
        if outcome.status == "done":
            house.record_weights(entry, result.states[outcome.id], outcome.metrics)
        else:
            house.record_dropped(entry, outcome.status, outcome.error or outcome.status, outcome.metrics)
            log.warning("alternative %s %s: %s", outcome.id, outcome.status, outcome.error)
    mem = house.index.memory
    for key in ("batch_activation_bytes", "group_state_bytes", "max_rss_mb"):
        if key in result.memory:
            mem[key] = max(mem.get(key, 0), result.memory[key])
    for key in ("val_cache_bytes", "val_images", "group_size"):
        if key in result.memory:
            mem[key] = result.memory[key]
    house.index.cost_cpu_s["distill"] = house.index.cost_cpu_s.get("distill", 0.0) + result.cpu_s
    house.save_index()


@torch.no_grad()
def _fit(module: nn.Module, recipe: Recipe, sources: SourceSet, seg: Segmentation, calib: torch.Tensor,
         mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
    """Least-squares adapter init on a calibration batch (donor features for donor alternatives), on CPU."""
    if recipe.in_adapter is None and recipe.out_adapter is None:
        return
    start, end = recipe.span
    device = next(iter(seg.segments[0].parameters()), torch.empty(0)).device
    acts = [a.cpu() for a in teacher_boundaries(seg, calib.to(device), end)]
    donor_in = None
    if recipe.kind == "donor" and recipe.in_adapter is not None and recipe.source_span is not None:
        dcfg = get_pretrained_cfg(recipe.source)
        x = renormalize(calib, mean, std, dcfg.mean, dcfg.std)
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
