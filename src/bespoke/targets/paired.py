"""Paired timing: a model timed in alternation with a reference model, so that their ratio survives drift.

On a shared or throttled CPU the speed drifts by tens of percent within minutes (seen on the 2-core benchmark
machine: one EfficientNet-Lite0 ONNX file at 6.6 ms, then 4.1 ms a quarter of an hour later, each measurement with a
spread of 10-40 %). A budget of ``0.5x`` the teacher and a latency predicted from a table measured an hour earlier
are both *ratios* to the teacher; judging them with two absolute measurements taken at different times mixes the
model's speed with the machine's. Timing the model and the reference in turn (A B A B ..., each block warm) keeps
every pair close in time: each model's session is opened once and warmed up, then the models take turns in short
blocks of runs (``BLOCK_RUNS``, each after ``BLOCK_WARMUP`` untimed runs that refill the caches the other model
evicted), so the speed swings of a shared machine, which last from a fraction of a second to minutes, fall on
both models alike. And

    value = median over turns of (model's turn median / reference's next turn median) x reference value

puts the model on the scale on which the reference was measured when the budgets were set. A burst of load that
slows a few turns moves this ratio far less than it moves the ratio of the two overall medians (on the 2-core
benchmark machine, one graph timed against itself: sd 2.2 % vs 4.1 %, ``benchmarks/paired_noise.py``). The raw
median, the reference's median now, both ratios and the number of turns stay in ``details``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from bespoke.errors import BespokeError
from bespoke.targets import device_profiler as protocol
from bespoke.targets.measure import Measurement
from bespoke.targets.spec import Target

OnnxSource = bytes | str | os.PathLike[str]


#: Timed runs of one model before the next model takes its turn, and untimed runs at the start of each turn.
BLOCK_RUNS = 10
BLOCK_WARMUP = 2


def _runner(model: OnnxSource, target: Target, what: str) -> Callable[[], object]:
    """One inference of ``model`` on an onnxruntime ``target`` (session opened once, seeded random input)."""
    data = model if isinstance(model, bytes) else os.fspath(model)
    try:
        session = protocol.make_session(data, target.threads, target.opt_level)
        feed = protocol.input_feed(session, target.batch)
    except Exception as exc:  # onnxruntime refuses the model
        raise BespokeError(f"onnxruntime cannot run {what}: {str(exc).splitlines()[0]}") from None
    return lambda: session.run(None, feed)


def time_onnx(model: OnnxSource, target: Target, repeats: int | None = None, *, what: str = "a model") -> list[float]:
    """Per-run ms of one ONNX model (bytes or a file) on an onnxruntime ``target``: warm-up, then timed runs."""
    return protocol.time_runs(_runner(model, target, what), target.warmup, repeats or target.repeats)


def time_alternating(models: Mapping[str, OnnxSource], target: Target, *,
                     block: int = BLOCK_RUNS) -> dict[str, list[float]]:
    """Per-run ms of several whole models: each session opened once and warmed up (``target.warmup`` runs), then
    the models take turns (A B A B ...) in blocks of ``block`` timed runs until each has ``target.repeats``."""
    if block < 1:
        raise BespokeError(f"block must be >= 1, got {block}")
    runners = {key: _runner(model, target, key) for key, model in models.items()}
    for run in runners.values():
        for _ in range(target.warmup):
            run()
    samples: dict[str, list[float]] = {k: [] for k in models}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        done = 0
        while done < target.repeats:
            n = min(block, target.repeats - done)
            for key, run in runners.items():
                samples[key] += protocol.time_runs(run, BLOCK_WARMUP, n)
            done += n
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def turn_ratios(model: list[float], reference: list[float], block: int = BLOCK_RUNS) -> list[float]:
    """Per turn of :func:`time_alternating` (``block`` runs each), model median / reference median."""
    return [float(np.median(model[i:i + block]) / np.median(reference[i:i + block]))
            for i in range(0, min(len(model), len(reference)), block)]


def measure_paired(model: OnnxSource, reference: OnnxSource, target: Target, *, reference_value: float | None,
                   block: int = BLOCK_RUNS) -> Measurement:
    """``model`` on an onnxruntime ``target``, timed in alternation with ``reference`` and expressed on the scale
    where ``reference`` takes ``reference_value`` ms (see the module docstring); ``None``: on the scale of this
    measurement (the reference's median now, kept in ``details["reference_now_ms"]``)."""
    if target.runtime != "onnxruntime":
        raise BespokeError(f"paired timing needs an onnxruntime target, {target.name!r} is {target.runtime}")
    if reference_value is not None and not reference_value > 0:
        raise BespokeError(f"reference value must be positive, got {reference_value}")
    for source in (model, reference):
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise BespokeError(f"ONNX file not found: {source}")
    samples = time_alternating({"model": model, "reference": reference}, target, block=block)
    raw, ref_now = float(np.median(samples["model"])), float(np.median(samples["reference"]))
    ratios = turn_ratios(samples["model"], samples["reference"], block)
    ratio = float(np.median(ratios))
    reference_value = ref_now if reference_value is None else reference_value
    scale = ratio * reference_value / raw  # the model's runs, put on the reference's scale
    stats = protocol.summarize([s * scale for s in samples["model"]])
    details = {"timed": f"warm, alternating with the reference in blocks of {block} runs (A B A B)",
               "source": "bytes" if isinstance(model, bytes) else str(model),
               "reference": "bytes" if isinstance(reference, bytes) else str(reference),
               "raw_median_ms": round(raw, 4), "reference_now_ms": round(ref_now, 4),
               "reference_value_ms": round(reference_value, 6), "ratio": round(ratio, 5),
               "ratio_of_medians": round(raw / ref_now, 5), "turns": len(ratios),
               "threads": target.threads, "opt_level": target.opt_level, "warmup": target.warmup}
    return Measurement.from_stats(stats, runtime="onnxruntime", details=details)
