"""Host side of device profiling: parts exported under their ``part_key``, the profiler and a README.

The folder :func:`export_parts_for_device` writes is everything the board needs::

    PARTS_DIR/
      <part_key>.onnx ...     one file per distinct part (file stem = the key the table will use)
      __overhead__.onnx       a trivial graph: the fixed cost of one session run
      device_profiler.py      the standalone profiler (onnxruntime + numpy + stdlib only)
      parts.json              which labels map to which key, and each key's input shape
      README.txt              what to run on the board and what to bring back
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets import device_profiler
from bespoke.targets.onnx_io import export_onnx_bytes, overhead_onnx_bytes, part_key
from bespoke.targets.spec import check_run_settings
from bespoke.targets.table import TableLookup
from bespoke.utils.atomic import write_bytes, write_json, write_text
from bespoke.utils.lock import locks_output

PROFILER_FILE = "device_profiler.py"
PartSpec = nn.Module | tuple[nn.Module, Sequence[int]]

_HELP = """\
Measure latencies on the device itself (a board or any edge CPU) and use them as a target.

bespoke exports each part it needs timed as an ONNX file named by its part key, next to
device_profiler.py, which needs only Python 3.8+, onnxruntime and numpy. Then:

  1. copy the folder to the board:
       scp -r {parts_dir} user@board:bespoke-parts
  2. on the board, install the two packages it needs:
       pip install onnxruntime numpy
  3. on the board (otherwise idle), measure with the target's threads and batch:
       cd bespoke-parts
       python3 device_profiler.py . --threads {threads} --batch {batch} --warmup {warmup} \\
           --repeats {repeats} --out latencies.csv
  4. bring the table (and its settings sidecar) back, next to your targets.yaml:
       scp user@board:bespoke-parts/latencies.csv user@board:bespoke-parts/latencies.csv.json .
  5. add a target to targets.yaml:
       targets:
         - name: board-{threads}t
           runtime: table
           table: latencies.csv      # relative to targets.yaml
           threads: {threads}
           batch: {batch}
           budget: 0.5x

latencies.csv has the header key,median_ms,p10_ms,p90_ms,n: one row per part (key = file stem = part
key) plus __overhead__, the fixed cost of one session run that each part's median already includes.
Every part is measured like on the host: {warmup} warm-up runs, then {repeats} runs timed one by one,
onnxruntime CPUExecutionProvider, intra-op threads = --threads, inter-op threads = 1, sequential.
"""


def device_profiler_help(
    parts_dir: str | os.PathLike[str] = "PARTS_DIR", *, threads: int = 1, batch: int = 1, repeats: int = 50,
    warmup: int = 10,
) -> str:
    """Step-by-step instructions for profiling on a board (what ``bespoke profile-device --help`` shows)."""
    return _HELP.format(parts_dir=parts_dir, threads=threads, batch=batch, repeats=repeats, warmup=warmup)


def profiler_source() -> str:
    """The text of the standalone profiler, to copy onto a board."""
    return Path(device_profiler.__file__).read_text(encoding="utf-8")


@locks_output("out_dir")
def export_parts_for_device(
    parts: Mapping[str, PartSpec],
    out_dir: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
    threads: int = 1,
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 10,
) -> dict[str, str]:
    """Write ``out_dir`` for the board (see the module docstring); return ``{label: part_key}``.

    ``parts`` maps a label of your choice to a module (measured at ``input_shape``) or to ``(module, shape)``.
    Parts with the same structure and shape share one key and one file. ``threads``, ``batch``, ``repeats`` and
    ``warmup`` only fill in the command in README.txt; they are checked like a target's before anything is written.
    """
    check_run_settings("device profiling", threads=threads, batch=batch, warmup=warmup, repeats=repeats)
    if not parts:
        raise BespokeError("no parts to export for the device")
    out = Path(out_dir)
    keys: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    for label, spec in parts.items():
        module, shape = _unpack(label, spec, input_shape)
        data = export_onnx_bytes(module, shape)
        key = part_key(data)
        keys[label] = key
        if key not in shapes:
            write_bytes(out / f"{key}.onnx", data)
            shapes[key] = list(shape)
    manifest = {
        key: {"input_shape": shape, "labels": [label for label, k in keys.items() if k == key]}
        for key, shape in shapes.items()
    }
    write_bytes(out / f"{device_profiler.OVERHEAD_KEY}.onnx", overhead_onnx_bytes())
    write_text(out / PROFILER_FILE, profiler_source())
    write_json(out / "parts.json", manifest)
    write_text(out / "README.txt", device_profiler_help(out, threads=threads, batch=batch, repeats=repeats,
                                                                warmup=warmup))
    return keys


def profile_parts_locally(
    parts_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    threads: int = 1,
    repeats: int = 50,
    warmup: int = 10,
    batch: int = 1,
    opt_level: str = "all",
) -> TableLookup:
    """Run the device profiler here, in-process (a latency table for this machine); return the table."""
    try:
        device_profiler.profile_dir(parts_dir, out, threads=threads, repeats=repeats, warmup=warmup, batch=batch,
                                    opt_level=opt_level, log=lambda _line: None)
    except device_profiler.ProfilerError as exc:
        raise BespokeError(f"profiling {parts_dir} failed: {exc}") from None
    return TableLookup(out)


def _unpack(
    label: str, spec: PartSpec, default_shape: Sequence[int] | None
) -> tuple[nn.Module, tuple[int, ...]]:
    if isinstance(spec, nn.Module):
        module, shape = spec, default_shape
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], nn.Module):
        module, shape = spec
    else:
        raise BespokeError(f"part {label!r}: expected a module or (module, shape), got {type(spec).__name__}")
    if shape is None:
        raise BespokeError(f"part {label!r} has no input shape", "pass (module, shape) or input_shape=")
    dims = tuple(int(d) for d in shape)
    if not dims or any(d < 1 for d in dims):
        raise BespokeError(f"part {label!r}: bad input shape {list(shape)}")
    return module, dims
