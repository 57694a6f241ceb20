"""The two engines as benchmark stages: the block engine (``bespoke.search``) and TOFA (``bespoke.supernet``).

Both get the benchmark's targets as written: a relative budget (``0.5x``) stays relative, and each engine resolves
it against its own teacher (the same architecture as the bench's reference), measured alongside its own models, so
that a drift of the machine's speed between the bench's reference measurement and the engine's work cannot move
the target. The delivered cards keep the engine's own delivery section; the bench times every model alongside its
reference teacher and judges it against the bench's own absolute budget, so every method is judged against the same
number on the same scale. The engine packages are
imported when their stage runs: an engine that does not import makes only its own stage fail, never the baselines.

Settings come from the preset's ``bespoke:`` / ``tofa:`` sections (keys checked by the preset):

* ``bespoke``: ``teacher`` (``all`` | ``labelled``, default ``all``), ``house`` (HouseSettings), ``search``
  (SearchSettings), ``retrain`` (overrides of DEFAULT_RETRAIN): the fields of ``bespoke.search.BlockJob``, the
  recipe ``bespoke house build`` / ``bespoke search --config`` read too;
* ``tofa``: ``teacher`` (default ``labelled``: the semi-supervised engine sees only the labelled share's
  labels), ``space`` (SpaceOptions), ``train`` (SupernetTrainConfig), ``select`` (SelectConfig).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from bespoke.bench.context import BenchContext
from bespoke.bench.engines import register_engine_stage
from bespoke.errors import BespokeError
from bespoke.export import CARD, read_card, update_card
from bespoke.targets import Target


def engine_targets(ctx: BenchContext) -> list[Target]:
    """The benchmark's targets that have a budget, as written (relative budgets stay relative)."""
    return [t for t in ctx.targets if t.name in ctx.budgets]


def _teacher(ctx: BenchContext, engine: str) -> tuple[Path, bool]:
    """The teacher directory an engine asked for (``teacher: all | labelled``; the preset checked the value)."""
    labelled = ctx.preset.engine_teacher(engine) == "labelled"
    return ctx.teacher(labelled_only=labelled), labelled


def _label(dirs: list[Path], method: str) -> list[Path]:
    """Give the engine's cards the benchmark's method label. Their delivery sections stay the engine's own: the
    benchmark judges every model against its own absolute budgets (``BenchContext.budgets``) when it reports."""
    for d in dirs:
        if read_card(d).method != method:
            update_card(d, method=method)
    return dirs


def _delivered(out: Path, targets: list[Target], exc: BespokeError, ctx: BenchContext) -> list[Path]:
    """The target directories under ``out`` that hold a card; re-raise ``exc`` when there are none."""
    dirs = [out / t.name for t in targets if (out / t.name / CARD).is_file()]
    if not dirs:
        raise exc
    ctx.log(f"[bench] engine delivered {len(dirs)} of {len(targets)} target(s): {exc}")
    return dirs


def block_engine_stage(ctx: BenchContext) -> list[Path]:
    """House + block distillation + annealing search + KD retraining, one model per target."""
    search = importlib.import_module("bespoke.search")
    teacher, labelled = _teacher(ctx, "bespoke")
    job = search.BlockJob.model_validate({k: v for k, v in ctx.engine_settings("bespoke").items() if k != "teacher"})
    targets, out = engine_targets(ctx), ctx.stage_dir("bespoke")
    try:
        dirs = search.run_block_engine(teacher, targets, data=ctx.splits, out=out, job=job)
    except BespokeError as exc:  # a budget the house cannot reach: keep the targets already delivered
        dirs = _delivered(out, targets, exc, ctx)
    suffix = f" ({ctx.preset.data.label_fraction:.0%} labels teacher)" if labelled else ""
    return _label([Path(d) for d in dirs], f"bespoke block engine{suffix}")


def supernet_engine_stage(ctx: BenchContext) -> list[Path]:
    """TOFA: one supernet trained semi-supervised, then a subnet per target (no per-target training)."""
    supernet = importlib.import_module("bespoke.supernet")
    s = ctx.engine_settings("tofa")
    teacher, _ = _teacher(ctx, "tofa")
    data = ctx.preset.data.load_kwargs()
    out = ctx.stage_dir("tofa")
    job = supernet.SupernetJob(
        teacher=str(teacher), data=ctx.preset.data.spec, labels=ctx.preset.data.label_fraction,
        resolution=ctx.resolution, train_limit=data["train_limit"], val_fraction=data["val_fraction"],
        test_limit=data["test_limit"], out=out / "supernet", space=s.get("space", {}),
        train={"seed": ctx.preset.data.seed, **s.get("train", {})})
    supernet.train_supernet(job)
    try:
        result = supernet.select_subnets(out / "supernet", engine_targets(ctx), out / "models",
                                         config=supernet.SelectConfig(**s.get("select", {})))
        dirs = [Path(c.model_dir) for c in result.choices]
    except BespokeError as exc:  # some budgets infeasible: keep the targets it did deliver
        dirs = _delivered(out / "models", engine_targets(ctx), exc, ctx)
    return _label(dirs, f"tofa supernet ({ctx.preset.data.label_fraction:.0%} labels)")


def register_builtin_engines() -> None:
    """Register both engine stages under the names the benchmark expects (``bespoke``, ``tofa``)."""
    register_engine_stage("bespoke", block_engine_stage)
    register_engine_stage("tofa", supernet_engine_stage)
