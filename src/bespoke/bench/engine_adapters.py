"""The two engines as benchmark stages: the block engine (``bespoke.search``) and TOFA (``bespoke.supernet``).

Both get the benchmark's targets as written: a relative budget (``0.5x``) stays relative, and each engine resolves
it against its own teacher (the same architecture as the bench's reference), measured alongside its own models, so
that a drift of the machine's speed between the bench's reference measurement and the engine's work cannot move
the target. The delivered cards keep the engine's own delivery section; the bench times every model alongside its
reference teacher and judges it against the bench's own absolute budget, so every method is judged against the same
number on the same scale. The engine packages are
imported when their stage runs: an engine that does not import makes only its own stage fail, never the baselines.

Settings come from the preset's ``bespoke:`` / ``tofa:`` sections (keys checked by the preset):

* ``bespoke``: ``teacher`` (``all`` | ``labelled`` | ``semi``, default ``all``), ``house`` (HouseSettings), ``qat``,
  ``search`` (SearchSettings), ``retrain`` (overrides of DEFAULT_RETRAIN): the fields of
  ``bespoke.search.BlockJob``, the recipe ``bespoke house build`` / ``bespoke search --config`` read too;
* ``bespoke_label_scarce``: keys of ``bespoke`` laid over it (its ``teacher`` aside: ``semi`` by default), for the
  block engine trained on the labelled share's labels + unlabelled images;
* ``tofa``: ``teacher`` (default ``labelled``: the semi-supervised engine sees only the labelled share's
  labels), ``space`` (SpaceOptions), ``train`` (SupernetTrainConfig), ``select`` (SelectConfig);
* ``tofa_labelled_only``: keys of ``tofa`` laid over it, for the ablation trained with ``semi_supervised: false``;
* ``tofa_sweep``: ``targets`` budgets spread over ``range``, selected on the ``tofa`` stage's supernet;
* ``extract_finetune``: ``teacher``, ``space``, ``select`` and ``finetune`` (overrides of the shared recipe) of
  per-target extraction from the untrained supernet + fine-tune (``bespoke.baselines.extract``).

Which of these run, in which order, is the preset's ``engines:`` list (default: ``bespoke``, ``tofa``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bespoke.bench.context import BenchContext
from bespoke.bench.engines import register_engine_stage
from bespoke.errors import BespokeError
from bespoke.export import CARD, read_card, update_card
from bespoke.targets import Target


def engine_targets(ctx: BenchContext) -> list[Target]:
    """The benchmark's targets that have a budget, as written (relative budgets stay relative)."""
    return [t for t in ctx.targets if t.name in ctx.budgets]


def _teacher(ctx: BenchContext, engine: str) -> tuple[Path, str]:
    """The teacher directory an engine asked for and its kind (``teacher: all | labelled | semi``; the preset
    checked the value)."""
    kind = ctx.preset.engine_teacher(engine)
    return ctx.teacher(kind), kind


_TEACHER_LABEL = {"all": "", "labelled": "{share} labels teacher", "semi": "{share} labels, semi-supervised teacher"}


def _teacher_suffix(ctx: BenchContext, kind: str) -> str:
    label = _TEACHER_LABEL[kind].format(share=f"{ctx.preset.data.label_fraction:.0%}")
    return f" ({label})" if label else ""


def _label(dirs: list[Path], method: str) -> list[Path]:
    """Give the engine's cards the benchmark's method label. Their delivery sections stay the engine's own: the
    benchmark judges every model against its own absolute budgets (``BenchContext.budgets``) when it reports."""
    for d in dirs:
        if read_card(d).method != method:
            update_card(d, method=method)
    return dirs


def _delivered(out: Path, targets: list[Target], exc: BespokeError, ctx: BenchContext) -> list[Path]:
    """The target directories under ``out`` that hold a delivered model (a card with its delivery section);
    re-raise ``exc`` when there are none."""
    dirs = [out / t.name for t in targets
            if (out / t.name / CARD).is_file() and read_card(out / t.name).delivery is not None]
    if not dirs:
        raise exc
    ctx.log(f"[bench] engine delivered {len(dirs)} of {len(targets)} target(s): {exc}")
    return dirs


def _block_engine(ctx: BenchContext, stage: str, label_scarce: bool) -> list[Path]:
    search = importlib.import_module("bespoke.search")
    teacher, kind = _teacher(ctx, stage)
    job = search.BlockJob.model_validate({k: v for k, v in ctx.engine_settings(stage).items() if k != "teacher"})
    targets, out = engine_targets(ctx), ctx.stage_dir(stage)
    data = ctx.label_scarce_splits() if label_scarce else ctx.splits
    try:
        dirs = search.run_block_engine(teacher, targets, data=data, out=out, job=job)
    except BespokeError as exc:  # a budget the house cannot reach: keep the targets already delivered
        dirs = _delivered(out, targets, exc, ctx)
    name = "bespoke block engine, label-scarce" if label_scarce else "bespoke block engine"
    return _label([Path(d) for d in dirs], name + _teacher_suffix(ctx, kind))


def block_engine_stage(ctx: BenchContext) -> list[Path]:
    """House + block distillation + annealing search + KD retraining, one model per target."""
    return _block_engine(ctx, "bespoke", label_scarce=False)


def block_engine_label_scarce_stage(ctx: BenchContext) -> list[Path]:
    """The block engine in label-scarce mode: the house distilled from the semi-supervised teacher (block
    distillation needs no labels), each student retrained on every training image with KD from that teacher and
    cross-entropy on the labelled share only (the other images' labels hidden)."""
    return _block_engine(ctx, "bespoke-label-scarce", label_scarce=True)


def _supernet_data(ctx: BenchContext) -> dict[str, Any]:
    """The bench's data as the supernet engine's job fields (same images, splits and labelled share)."""
    data = ctx.preset.data.load_kwargs()
    return {"data": ctx.preset.data.spec, "labels": ctx.preset.data.label_fraction, "resolution": ctx.resolution,
            "train_limit": data["train_limit"], "val_fraction": data["val_fraction"], "test_limit": data["test_limit"]}


def _tofa(ctx: BenchContext, stage: str, s: dict[str, Any], targets: list[Target], out: Path,
          supernet_dir: Path) -> list[Path]:
    """Train (or reuse) the supernet of settings ``s`` in ``supernet_dir`` and select a subnet per target."""
    supernet = importlib.import_module("bespoke.supernet")
    teacher, _ = _teacher(ctx, stage)
    job = supernet.SupernetJob(**_supernet_data(ctx), teacher=str(teacher), out=supernet_dir,
                               space=s.get("space", {}), train={"seed": ctx.preset.data.seed, **s.get("train", {})})
    supernet.train_supernet(job)
    try:
        result = supernet.select_subnets(supernet_dir, targets, out,
                                         config=supernet.SelectConfig(**s.get("select", {})))
        return [Path(c.model_dir) for c in result.choices]
    except BespokeError as exc:  # some budgets infeasible: keep the targets it did deliver
        return _delivered(out, targets, exc, ctx)


def _labels(ctx: BenchContext) -> str:
    return f"{ctx.preset.data.label_fraction:.0%} labels"


def supernet_engine_stage(ctx: BenchContext) -> list[Path]:
    """TOFA: one supernet trained semi-supervised, then a subnet per target (no per-target training)."""
    out = ctx.stage_dir("tofa")
    dirs = _tofa(ctx, "tofa", ctx.engine_settings("tofa"), engine_targets(ctx), out / "models", out / "supernet")
    semi = ", semi-supervised teacher" if ctx.preset.engine_teacher("tofa") == "semi" else ""
    return _label(dirs, f"tofa supernet ({_labels(ctx)}{semi})")


def tofa_labelled_only_stage(ctx: BenchContext) -> list[Path]:
    """TOFA's ablation: the same recipe trained on the labelled share only (``semi_supervised: false``)."""
    name = "tofa-labelled-only"
    out = ctx.stage_dir(name)
    dirs = _tofa(ctx, name, ctx.engine_settings(name), engine_targets(ctx), out / "models", out / "supernet")
    return _label(dirs, f"tofa supernet, labelled only ({_labels(ctx)})")


def sweep_targets(ctx: BenchContext) -> list[Target]:
    """The sweep's targets (``tofa_sweep:``), on the settings of the bench's first target."""
    base = ctx.targets[0].model_dump(mode="json")
    return [Target.model_validate({**base, "name": f"sweep-{f:g}x", "budget": f"{f:g}x", "description": ""})
            for f in ctx.preset.tofa_sweep.factors()]


def tofa_sweep_stage(ctx: BenchContext) -> list[Path]:
    """TOFA's selection on the ``tofa`` stage's supernet for the sweep's targets: the cost of K measured on many
    targets (the supernet is trained once, by whichever of the two stages runs first)."""
    s = ctx.engine_settings("tofa-sweep")
    dirs = _tofa(ctx, "tofa", s["tofa"], sweep_targets(ctx), ctx.stage_dir("tofa-sweep") / "models",
                 ctx.stage_dir("tofa") / "supernet")
    return _label(dirs, f"tofa supernet ({_labels(ctx)}), sweep")


def extract_finetune_stage(ctx: BenchContext) -> list[Path]:
    """Per-target extraction from the untrained supernet + fine-tune on the labelled share
    (:func:`bespoke.baselines.extract.extract_and_finetune`)."""
    extract = importlib.import_module("bespoke.baselines.extract")
    supernet = importlib.import_module("bespoke.supernet")
    name = "extract-finetune"
    s, out = ctx.engine_settings(name), ctx.stage_dir(name)
    teacher, _ = _teacher(ctx, name)
    job = extract.untrained_supernet_job(teacher, out / "supernet", space=supernet.SpaceOptions(**s.get("space", {})),
                                         seed=ctx.preset.data.seed, **_supernet_data(ctx))
    return extract.extract_and_finetune(job, engine_targets(ctx), ctx.train_data(labelled_only=True),
                                        ctx.preset.extract_config(), out,
                                        select=supernet.SelectConfig(**s.get("select", {})),
                                        method=f"extract + fine-tune ({_labels(ctx)})", log=ctx.log)


def register_builtin_engines() -> None:
    """Register the engine stages under the names presets list in ``engines:`` (the two engines by default)."""
    register_engine_stage("bespoke", block_engine_stage)
    register_engine_stage("bespoke-label-scarce", block_engine_label_scarce_stage)
    register_engine_stage("tofa", supernet_engine_stage)
    register_engine_stage("tofa-labelled-only", tofa_labelled_only_stage)
    register_engine_stage("tofa-sweep", tofa_sweep_stage)
    register_engine_stage("extract-finetune", extract_finetune_stage)
