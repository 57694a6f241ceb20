"""bespoke.targets: measurement protocol, runtimes, part keys, latency tables and the device profiler."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets import (
    CSV_COLUMNS,
    OVERHEAD_KEY,
    RUNTIMES,
    Measurement,
    Measurer,
    TableLookup,
    Target,
    device_profiler_help,
    estimate_peak_memory,
    export_onnx_bytes,
    export_parts_for_device,
    get_runtime,
    list_runtimes,
    measure,
    measure_onnx,
    part_key,
    profile_parts_locally,
    reference_value,
    resolve_budget,
    summarize,
    write_onnx,
)
from bespoke.targets import device_profiler as profiler

RES = 16
FAST = {"warmup": 2, "repeats": 7}
KEY_RE = re.compile(r"^[0-9x+N]+_[0-9a-f]{16}$")


def tiny_net(channels: int = 8, kernel: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, kernel, padding=kernel // 2),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 4),
    )


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))) + x


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency table holding ``tiny_net()`` at batch 1, RES px (profiled in-process)."""
    folder = tmp_path_factory.mktemp("parts")
    export_parts_for_device({"net": (tiny_net(), (1, 3, RES, RES))}, folder)
    out = folder / "latencies.csv"
    table = profile_parts_locally(folder, out, repeats=5, warmup=1)
    assert len(table) == 2 and OVERHEAD_KEY in table
    return out


def target_for(runtime: str, table: Path | None = None, **extra: object) -> Target:
    fields: dict[str, object] = {"name": f"t-{runtime}", "runtime": runtime, **FAST, **extra}
    if runtime == "table":
        fields["table"] = table
    return Target.model_validate(fields)


# ---------------------------------------------------------------------------------------------------------
# registry: every runtime, one interface
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", list_runtimes())
def test_every_runtime_measures_a_tiny_net(runtime: str, table_path: Path) -> None:
    measurer = get_runtime(runtime)
    assert isinstance(measurer, Measurer)
    target = target_for(runtime, table_path)
    assert measurer.name == runtime and measurer.unit == target.unit
    model = tiny_net().train()
    result = measure(model, target, RES)
    assert isinstance(result, Measurement)
    assert result.unit == target.unit and result.runtime == runtime
    assert result.value > 0 and result.value == result.median
    assert result.p10 <= result.median <= result.p90 and result.spread >= 0 and result.stdev >= 0
    assert all(m.training for m in model.modules()), "the caller's train/eval flags must be restored"
    assert json.loads(result.model_dump_json())["unit"] == target.unit


def test_registry_lists_and_rejects() -> None:
    assert list_runtimes() == sorted(["onnxruntime", "torch", "table", "macs", "params", "memory"])
    assert list_runtimes("m*") == ["macs", "memory"]
    assert set(RUNTIMES) == set(list_runtimes())
    with pytest.raises(BespokeError, match="unknown runtime"):
        get_runtime("tflite")
    with pytest.raises(TypeError):
        RUNTIMES["x"] = RUNTIMES["torch"]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------------
# counts
# ---------------------------------------------------------------------------------------------------------


def test_macs_of_a_plain_conv_is_k_k_cin_cout_h_w() -> None:
    k, cin, cout, res = 3, 3, 16, 24
    conv = nn.Conv2d(cin, cout, k, padding=1, bias=False)
    result = measure(conv, target_for("macs", batch=4), res)  # MACs are counted at batch 1
    assert result.value == k * k * cin * cout * res * res
    assert result.n == 1 and result.spread == 0.0 and result.unit == "MACs"
    strided = measure(nn.Conv2d(cin, cout, k, stride=2, padding=1, bias=False), target_for("macs"), res)
    assert strided.value == k * k * cin * cout * (res // 2) ** 2


def test_params_count() -> None:
    model = tiny_net()
    expected = sum(p.numel() for p in model.parameters())
    assert measure(model, target_for("params"), RES).value == expected
    assert reference_value(model, target_for("params"), RES) == expected


def test_memory_estimate_is_sane_and_monotone() -> None:
    model = tiny_net()
    values = [measure(model, target_for("memory"), r).value for r in (8, 16, 24, 32)]
    assert values == sorted(values) and len(set(values)) == 4
    est = estimate_peak_memory(model, (1, 3, 32, 32))
    activation = 8 * 32 * 32 * 4  # one [1, 8, 32, 32] float32 tensor
    assert est.input_bytes == 3 * 32 * 32 * 4
    assert 2 * activation <= est.peak_bytes <= est.total_bytes
    batch2 = measure(model, target_for("memory", batch=2), 32).value
    assert batch2 == pytest.approx(2 * est.peak_bytes, rel=0.05)


def test_memory_estimate_keeps_skip_connections_alive() -> None:
    res = 16
    tensor = 3 * res * res * 4
    est = estimate_peak_memory(Residual(), (1, 3, res, res))
    # x stays live until the add, next to relu(conv1(x)) and conv2(...): three tensors at once
    assert est.peak_bytes == 3 * tensor


# ---------------------------------------------------------------------------------------------------------
# timings
# ---------------------------------------------------------------------------------------------------------


def test_onnxruntime_measurement() -> None:
    target = target_for("onnxruntime", threads=1, opt_level="basic")
    result = measure(tiny_net(), target, RES)
    assert result.unit == "ms" and result.n == FAST["repeats"] and result.median > 0 and result.spread >= 0
    assert result.details["threads"] == 1 and result.details["opt_level"] == "basic"
    assert result.details["input_shapes"] == {"input": [1, 3, RES, RES]}


def test_onnxruntime_measures_a_file_and_checks_its_batch(tmp_path: Path) -> None:
    path = write_onnx(tiny_net(), (2, 3, RES, RES), tmp_path / "m.onnx")
    result = measure_onnx(path, target_for("onnxruntime", batch=2))
    assert result.n == FAST["repeats"] and result.median > 0
    with pytest.raises(BespokeError, match="batch"):
        measure_onnx(path, target_for("onnxruntime", batch=1))
    with pytest.raises(BespokeError, match="not found"):
        measure_onnx(tmp_path / "missing.onnx", target_for("onnxruntime"))
    with pytest.raises(BespokeError, match="PyTorch modules"):
        measure_onnx(path, target_for("torch"))


def test_torch_measurement_restores_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = measure(tiny_net(), target_for("torch", threads=2, batch=2), RES)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert result.n == FAST["repeats"] and result.median > 0 and result.spread >= 0
    assert result.details["input_shape"] == [2, 3, RES, RES]
    assert torch.is_inference_mode_enabled() is False


def test_measuring_leaves_the_global_rng_alone() -> None:
    model = tiny_net()  # (seeds the RNG itself)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for runtime in ("torch", "onnxruntime", "memory", "macs"):
        measure(model, target_for(runtime), RES)
    assert torch.equal(torch.rand(3), expected)


def test_summarize_and_exact() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert stats["median"] == 6.0 and stats["p10"] == 2.0 and stats["p90"] == 10.0 and stats["n"] == 11
    assert stats["spread"] == pytest.approx((10.0 - 2.0) / 6.0)
    exact = Measurement.exact(5, unit="params", runtime="params")
    assert (exact.median, exact.p10, exact.p90, exact.stdev, exact.spread, exact.n) == (5, 5, 5, 0, 0, 1)


def test_resolve_budget_measures_the_reference_only_when_relative() -> None:
    model = tiny_net()
    params = sum(p.numel() for p in model.parameters())
    assert resolve_budget(target_for("params", budget="0.5x"), model, RES) == 0.5 * params
    assert resolve_budget(target_for("params", budget="20k"), model, RES) == 20e3
    assert resolve_budget(target_for("params"), model, RES) is None


# ---------------------------------------------------------------------------------------------------------
# part keys
# ---------------------------------------------------------------------------------------------------------


def test_part_key_ignores_weights_and_names() -> None:
    shape = (1, 3, RES, RES)
    key = part_key(tiny_net(), shape)
    assert KEY_RE.match(key) and key.startswith(f"1x3x{RES}x{RES}_")
    other = tiny_net()
    for p in other.parameters():
        nn.init.normal_(p)
    zeros = tiny_net()
    for p in zeros.parameters():
        nn.init.zeros_(p)  # equal tensors get de-duplicated by the exporter
    wrapped = nn.Sequential(nn.Identity(), nn.Sequential(tiny_net()))
    assert part_key(other, shape) == key
    assert part_key(zeros, shape) == key
    assert part_key(wrapped, shape) == key
    assert part_key(export_onnx_bytes(tiny_net(), shape)) == key


def test_part_key_sees_structure_and_shape(tmp_path: Path) -> None:
    shape = (1, 3, RES, RES)
    key = part_key(tiny_net(), shape)
    assert part_key(tiny_net(kernel=5), shape) != key
    assert part_key(tiny_net(channels=16), shape) != key
    assert part_key(tiny_net(), (1, 3, 2 * RES, 2 * RES)) != key
    assert part_key(tiny_net(), (2, 3, RES, RES)).startswith(f"2x3x{RES}x{RES}_")
    path = write_onnx(tiny_net(), shape, tmp_path / "p.onnx")
    assert part_key(path) == key
    with pytest.raises(BespokeError):
        part_key(tiny_net())  # a module needs its input shape
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(BespokeError):
        part_key(tmp_path / "junk.onnx")


# ---------------------------------------------------------------------------------------------------------
# device profiler + latency tables
# ---------------------------------------------------------------------------------------------------------


def test_device_profiler_round_trip_as_a_subprocess(tmp_path: Path) -> None:
    parts_dir = tmp_path / "parts"
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    keys = export_parts_for_device(
        {"stem": (tiny_net(), (1, 3, RES, RES)), "block": block, "same-stem": (tiny_net(), (1, 3, RES, RES))},
        parts_dir,
        input_shape=(1, 8, RES, RES),
    )
    assert keys["stem"] != keys["block"] and all(KEY_RE.match(k) for k in keys.values())
    onnx_files = sorted(p.stem for p in parts_dir.glob("*.onnx"))
    assert onnx_files == sorted({keys["stem"], keys["block"], OVERHEAD_KEY})
    manifest = json.loads((parts_dir / "parts.json").read_text())
    assert manifest[keys["block"]]["labels"] == ["block"]
    assert manifest[keys["stem"]]["labels"] == ["stem", "same-stem"]

    out = tmp_path / "back" / "latencies.csv"
    proc = subprocess.run(
        [sys.executable, str(parts_dir / "device_profiler.py"), str(parts_dir), "--threads", "1",
         "--repeats", "6", "--warmup", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) == "key,median_ms,p10_ms,p90_ms,n"
    assert len(lines) == 4

    table = TableLookup(out)
    assert len(table) == 3 and OVERHEAD_KEY in table
    for key in (keys["stem"], keys["block"]):
        row = table.row(key)
        assert row is not None and row.n == 6 and 0 < row.p10_ms <= row.median_ms <= row.p90_ms
        assert table.get(key) == row.median_ms
    assert table.get("nope") is None
    assert table.overhead > 0
    assert table.meta is not None and table.meta["settings"]["threads"] == 1

    target = Target(name="board", runtime="table", table=out)
    looked_up = measure(tiny_net(), target, RES)
    assert looked_up.value == table.get(keys["stem"]) and looked_up.n == 6
    assert measure_onnx(parts_dir / f"{keys['block']}.onnx", target).value == table.get(keys["block"])
    with pytest.raises(BespokeError, match="not in the latency table"):
        measure(tiny_net(), target, 2 * RES)


def test_device_profiler_reports_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BespokeError, match=r"no \*\.onnx"):
        profile_parts_locally(tmp_path, tmp_path / "x.csv")
    assert profiler.main([str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 1  # no parts
    (tmp_path / "broken.onnx").write_bytes(b"junk")
    write_onnx(tiny_net(), (1, 3, 8, 8), tmp_path / "good.onnx")
    assert profiler.main([str(tmp_path), "--repeats", "2", "--warmup", "0", "--out", str(tmp_path / "x.csv")]) == 1
    assert TableLookup(tmp_path / "x.csv").keys() == ["good"]  # the parts that worked are kept


def test_device_profiler_is_standalone() -> None:
    source = Path(profiler.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 8))
    allowed = set(sys.stdlib_module_names) | {"onnxruntime", "numpy", "__future__"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported - allowed == set(), f"device_profiler.py must not import {imported - allowed}"
    assert {"onnxruntime", "numpy"} <= imported


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("key,median_ms\nx,1\n", "missing column"),
        ("key,median_ms,p10_ms,p90_ms,n\nx,1,1,1,5\nx,2,2,2,5\n", "duplicate key"),
        ("key,median_ms,p10_ms,p90_ms,n\nx,fast,1,1,5\n", "not a number"),
        ("key,median_ms,p10_ms,p90_ms,n\nx,-1,1,1,5\n", "finite times"),
        ("key,median_ms,p10_ms,p90_ms,n\n,1,1,1,5\n", "empty key"),
    ],
)
def test_table_lookup_rejects_broken_tables(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "lat.csv"
    path.write_text(text)
    with pytest.raises(BespokeError, match=problem):
        TableLookup(path)


def test_table_lookup_tolerates_extra_columns_and_missing_overhead(tmp_path: Path) -> None:
    path = tmp_path / "lat.csv"
    path.write_text("key,median_ms,p10_ms,p90_ms,n,mean_ms\nabc,1.5,1.0,2.0,50,1.6\n")
    table = TableLookup(path)
    assert table.get("abc") == 1.5 and table.overhead == 0.0 and table.meta is None
    with pytest.raises(BespokeError, match="not found"):
        TableLookup(tmp_path / "missing.csv")


def test_device_profiler_help_and_readme(tmp_path: Path) -> None:
    text = device_profiler_help()
    for needle in ("scp", "pip install onnxruntime numpy", "device_profiler.py", "--threads 1",
                   "--out latencies.csv", "runtime: table", "table: latencies.csv", "key,median_ms"):
        assert needle in text
    export_parts_for_device({"a": nn.Conv2d(3, 4, 3)}, tmp_path, input_shape=(1, 3, 8, 8), threads=2)
    readme = (tmp_path / "README.txt").read_text()
    assert str(tmp_path) in readme and "--threads 2" in readme
    assert (tmp_path / "device_profiler.py").read_text() == Path(profiler.__file__).read_text()
    with pytest.raises(BespokeError, match="no input shape"):
        export_parts_for_device({"a": nn.Conv2d(3, 4, 3)}, tmp_path)
    with pytest.raises(BespokeError):
        export_parts_for_device({}, tmp_path)
