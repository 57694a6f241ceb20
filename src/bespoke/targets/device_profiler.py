#!/usr/bin/env python3
"""bespoke device profiler: measure ONNX parts on the board itself and write a latency table.

This file is STANDALONE: it imports only onnxruntime, numpy and the Python standard library (3.8+), so it
can be copied to a board next to the exported parts and run there::

    pip install onnxruntime numpy
    python device_profiler.py PARTS_DIR --threads 1 --repeats 50 --out latencies.csv

Every ``PARTS_DIR/*.onnx`` is measured with the same protocol bespoke uses on the host (this file is the one
source of that protocol: ``bespoke.targets.measure`` imports it from here):

* session: CPUExecutionProvider, ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``,
  sequential execution, graph optimisation level from ``--opt-level``;
* input: float32 random normal numbers (seed 0) of the model's input shape (a symbolic batch dimension becomes
  ``--batch``);
* ``--warmup`` untimed runs, then ``--repeats`` runs timed one by one with ``time.perf_counter_ns``, garbage
  collection paused;
* statistics: median, p10, p90 (linear interpolation), mean, sample standard deviation.

The key of a part is its file stem (bespoke names the files by ``part_key``). The table is a CSV with the
header ``key,median_ms,p10_ms,p90_ms,n``, written atomically; a sidecar ``<out>.json`` records the settings
and the machine. A part named ``__overhead__.onnx`` (a trivial graph) gives the fixed per-call cost of a
session run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

CSV_COLUMNS = ("key", "median_ms", "p10_ms", "p90_ms", "n")
OVERHEAD_KEY = "__overhead__"
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


class ProfilerError(Exception):
    """A problem with the parts or the settings (bespoke turns it into a BespokeError on the host)."""


# ----------------------------------------------------------------------------------------------------
# the measurement protocol (shared with the host)
# ----------------------------------------------------------------------------------------------------


def time_runs(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed one by one; return ms per run.

    The garbage collector is kept out of the timed runs (collected before, off during); a caller that switched it
    off already manages it around several calls.
    """
    if repeats < 1 or warmup < 0:
        raise ProfilerError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    gc_was_enabled = gc.isenabled()
    if gc_was_enabled:
        gc.collect()
        gc.disable()
    samples = []
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """median, mean, p10, p90, stdev (sample), spread = (p90 - p10) / median, and n of a list of timings."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ProfilerError("no finite timings to summarise")
    p10, median, p90 = (float(v) for v in np.percentile(arr, [10.0, 50.0, 90.0]))
    stdev = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    spread = (p90 - p10) / median if median > 0 else 0.0
    return {
        "median": median,
        "mean": float(np.mean(arr)),
        "p10": p10,
        "p90": p90,
        "stdev": stdev,
        "spread": spread,
        "n": int(arr.size),
    }


def make_session(model: str | bytes | os.PathLike, threads: int, opt_level: str = "all") -> Any:
    """An InferenceSession on CPUExecutionProvider: ``threads`` intra-op threads, sequential execution."""
    if opt_level not in OPT_LEVELS:
        raise ProfilerError(f"unknown opt level {opt_level!r}; one of {', '.join(OPT_LEVELS)}")
    if threads < 1:
        raise ProfilerError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def input_shapes(session: Any, batch: int) -> dict[str, list[int]]:
    """Concrete input shapes: a symbolic first dimension becomes ``batch``; other symbolic dims fail."""
    shapes = {}
    for inp in session.get_inputs():
        shape = []
        for i, dim in enumerate(inp.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif i == 0:
                shape.append(int(batch))
            else:
                raise ProfilerError(f"input {inp.name!r} has a symbolic dimension {dim!r} at axis {i}")
        shapes[inp.name] = shape
    return shapes


def input_feed(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs (normal, seeded) of the session's input shapes and types."""
    rng = np.random.default_rng(seed)
    types = {inp.name: inp.type for inp in session.get_inputs()}
    feed = {}
    for name, shape in input_shapes(session, batch).items():
        dtype = _NUMPY_TYPES.get(types[name])
        if dtype is None:
            raise ProfilerError(f"input {name!r} has unsupported type {types[name]}")
        if np.issubdtype(dtype, np.floating):
            feed[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[name] = np.zeros(shape, dtype=dtype)
    return feed


def profile_session(session: Any, batch: int, warmup: int, repeats: int) -> dict[str, float]:
    """Time ``session.run`` on random inputs with the protocol above; return :func:`summarize`'s dict."""
    feed = input_feed(session, batch)
    samples = time_runs(lambda: session.run(None, feed), warmup, repeats)
    return summarize(samples)


# ----------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------


def format_row(key: str, stats: dict[str, float]) -> str:
    return f"{key},{stats['median']:.6f},{stats['p10']:.6f},{stats['p90']:.6f},{int(stats['n'])}"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_table(path: str | os.PathLike, rows: dict[str, dict[str, float]]) -> None:
    """Write ``{key: stats}`` as the latency CSV (header ``key,median_ms,p10_ms,p90_ms,n``), sorted by key."""
    for key in rows:
        if not key or "," in key or "\n" in key or key != key.strip():
            raise ProfilerError(f"part key {key!r} cannot be written to the table")
    lines = [",".join(CSV_COLUMNS)] + [format_row(key, rows[key]) for key in sorted(rows)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def machine_info() -> dict[str, str]:
    return {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": str(os.cpu_count()),
        "node": platform.node(),
    }


def profile_dir(
    parts_dir: str | os.PathLike,
    out: str | os.PathLike,
    threads: int = 1,
    repeats: int = 50,
    warmup: int = 10,
    batch: int = 1,
    opt_level: str = "all",
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Measure every ``*.onnx`` in ``parts_dir``; write the CSV ``out`` and ``<out>.json``; return the rows.

    A part that fails to load or run is reported and left out; ``ProfilerError`` is raised at the end naming
    them (the table of the parts that worked is written first).
    """
    if not Path(parts_dir).is_dir():
        raise ProfilerError(f"{parts_dir} is not a folder")
    parts = sorted(Path(parts_dir).glob("*.onnx"))
    if not parts:
        raise ProfilerError(f"no *.onnx files in {parts_dir}")
    rows = {}
    failed = []
    started = time.time()
    for i, part in enumerate(parts, 1):
        key = part.stem
        try:
            session = make_session(part, threads, opt_level)
            stats = profile_session(session, batch, warmup, repeats)
        except Exception as exc:  # a broken part must not cost the whole table
            failed.append(key)
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log(f"[{i}/{len(parts)}] {key} FAILED: {first_line}")
            continue
        rows[key] = stats
        log(
            f"[{i}/{len(parts)}] {key}  median {stats['median']:.3f} ms  p10 {stats['p10']:.3f}"
            f"  p90 {stats['p90']:.3f}  spread {stats['spread']:.2f}"
        )
    if rows:
        write_table(out, rows)
        meta = {
            "settings": {
                "threads": threads,
                "repeats": repeats,
                "warmup": warmup,
                "batch": batch,
                "opt_level": opt_level,
                "provider": "CPUExecutionProvider",
            },
            "machine": machine_info(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            "parts": len(rows),
            "failed": failed,
        }
        write_text_atomic(f"{out}.json", json.dumps(meta, indent=2) + "\n")
        log(f"wrote {out} ({len(rows)} parts)")
    if failed:
        raise ProfilerError(f"{len(failed)} part(s) failed: {', '.join(failed)}")
    return rows


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device_profiler.py",
        description="Measure every *.onnx in PARTS_DIR with onnxruntime and write a latency table (CSV).",
    )
    parser.add_argument("parts_dir", metavar="PARTS_DIR", help="folder with the exported *.onnx parts")
    parser.add_argument("--threads", type=_positive, default=1, help="intra-op threads (match the target)")
    parser.add_argument("--repeats", type=_positive, default=50, help="timed runs per part")
    parser.add_argument("--warmup", type=_non_negative, default=10, help="untimed runs per part first")
    parser.add_argument("--batch", type=_positive, default=1, help="batch size for a symbolic batch axis")
    parser.add_argument("--opt-level", choices=sorted(OPT_LEVELS), default="all", help="graph optimisation")
    parser.add_argument("--out", default="latencies.csv", help="the table to write (default latencies.csv)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile_dir(
            args.parts_dir,
            args.out,
            threads=args.threads,
            repeats=args.repeats,
            warmup=args.warmup,
            batch=args.batch,
            opt_level=args.opt_level,
        )
    except ProfilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
