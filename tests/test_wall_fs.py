"""The bad-input wall, filesystem part: crafted house indexes, signals, two runs into one folder, full and
read-only disks.

* House index entries whose ``id``/``file`` climb out of the house (``../``, absolute paths, a symlinked folder)
  are refused with one error naming the entry, before anything is read or written outside the house.
* SIGINT and SIGTERM during ``finetune``, ``house build`` and ``supernet train`` (real processes, signalled at a
  seeded point): one ``error: interrupted (SIG...) during <command>; ...`` line, exit code 128 + the signal, no
  completion marker, no temporary file, no lock left; the same command then finishes with exactly the remaining
  work, bitwise equal to an uninterrupted run.
* Two real processes into one ``--out``: the second is refused at once with the first's pid; the first finishes.
  Every writing command takes that lock.
* A full disk (a small tmpfs) and a read-only ``--out`` (a tmpfs remounted read-only): one clear error, nothing
  half-written, an earlier good output intact, nothing written elsewhere. Mounting needs root; where it is
  impossible those tests skip, and their monkeypatched twins (same scenario, failing system calls) always run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import bespoke.house.build as build_module
from bespoke.errors import BespokeError
from bespoke.utils.lock import LOCK_FILE, output_lock
from tests import test_bad_inputs
from tests.test_bad_inputs import World, _disk_full_for
from tests.test_cli import run_cli
from tests.test_reliability_kill import (
    FileProgress,
    Killer,
    _fork_server,
    assert_same_tensors,
    checkpoint_step,
    cli_process,
    done_alternatives,
    finetune_module,
    image_folder,
    kill_point,
    load_every_file,
    supernet_train_module,
    teacher_dir,
)

one_error_line = test_bad_inputs.one_error_line
world, one_thread = test_bad_inputs.world, test_bad_inputs.one_thread  # the bad-input wall's fixtures, shared
ARCH = "timm:mobilenetv3_small_050"
SIGNALS = [signal.SIGINT, signal.SIGTERM]


def cli(argv: list[str], capsys) -> tuple[int, str, list[warnings.WarningMessage]]:
    """``bespoke ARGV`` in this process: exit code, stderr, the warnings a real process would print."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(argv, capsys)
    return code, err, caught


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every file under ``root`` (but ``skip``) with the hash of its content."""
    out = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def no_leftovers(root: Path) -> None:
    """No temporary file and no lock file anywhere under ``root``."""
    assert [p for p in root.rglob("*.tmp")] == [], "a temporary file was left behind"
    assert [p for p in root.rglob(LOCK_FILE)] == [], "a lock file was left behind"


# ----------------------------------------------------------------------------------- house index traversal
def _crafted_house(w: World, tmp: Path, edit: Callable[[list[dict]], None]) -> Path:
    house = tmp / "house"
    shutil.copytree(w.house, house)
    index = json.loads((house / "index.json").read_text())
    edit(index["entries"])
    (house / "index.json").write_text(json.dumps(index))
    return house


def _search(w: World, tmp: Path, house: Path) -> tuple[list[str], Path]:
    argv, marker = w.targets(tmp, "  - {name: t, runtime: macs, budget: 0.5x}\n")
    argv[1] = str(house)
    return argv, marker


def _symlinked_alternatives(house: Path, tmp: Path) -> Path:
    """Replace the house's alternatives/ by a symlink to a folder outside the house (with the same files)."""
    outside = tmp / "outside"
    shutil.move(house / "alternatives", outside)
    (house / "alternatives").symlink_to(outside, target_is_directory=True)
    return outside


Case = Callable[[World, Path], tuple[list[str], Path, tuple[str, ...]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


@case
def index_id_climbs_out(w, tmp):
    house = _crafted_house(w, tmp, lambda e: e[0].update(id="../../escape"))
    return (*_search(w, tmp, house), ("not a valid house index", "entries[0].id", "plain name", "'../../escape'"))


@case
def index_id_is_dot_dot(w, tmp):
    house = _crafted_house(w, tmp, lambda e: e[1].update(id=".."))
    return (*_search(w, tmp, house), ("entries[1].id", "plain name", "'..'"))


@case
def index_file_is_absolute(w, tmp):
    house = _crafted_house(w, tmp, lambda e: e[0].update(file="/etc/hostname"))
    return (*_search(w, tmp, house), ("entries[0].file", "inside the house", "'/etc/hostname'"))


@case
def index_file_climbs_out(w, tmp):
    house = _crafted_house(w, tmp, lambda e: e[1].update(file="alternatives/../../../x.safetensors"))
    return (*_search(w, tmp, house), ("entries[1].file", "inside the house", "../../../x.safetensors"))


@case
def index_file_has_backslashes(w, tmp):
    house = _crafted_house(w, tmp, lambda e: e[0].update(file="..\\..\\x.safetensors"))
    return (*_search(w, tmp, house), ("entries[0].file", "inside the house"))


@case
def search_reads_through_symlink_out(w, tmp):
    house = _crafted_house(w, tmp, lambda e: None)
    _symlinked_alternatives(house, tmp)
    return (*_search(w, tmp, house), ("alternative 'a0000'", "points outside the house"))


@case
def resumed_build_writes_through_symlink_out(w, tmp):
    """The write side: a resumed build would save the pending alternative's weights outside the house."""
    def pending(entries: list[dict]) -> None:
        entries[0].update(status="pending", file=None, metrics={})

    house = _crafted_house(w, tmp, pending)
    outside = _symlinked_alternatives(house, tmp)
    (outside / "a0000.safetensors").unlink()
    argv = ["house", "build", "--teacher", str(w.teacher), "--data", str(w.data), "--out", str(house), "--donors",
            "", "--kinds", "skip", "--size", "2", "--max-span", "2", "--distill-steps", "1", "--batch-size", "4",
            "--group-size", "2", "--device", "cpu"]
    return argv, outside / "a0000.safetensors", ("alternative 'a0000'", "points outside the house")


@pytest.mark.parametrize("name", list(CASES))
def test_crafted_house_index_is_refused_naming_the_entry(name, world, tmp_path, capsys):
    argv, marker, needles = CASES[name](world, tmp_path)
    before = snapshot(tmp_path, skip=tmp_path / "out")
    code, err, caught = cli(argv, capsys)
    one_error_line(code, err, caught, *needles)
    assert not marker.exists(), f"{marker} was written"
    assert snapshot(tmp_path, skip=tmp_path / "out") == before, "a file outside --out changed"
    no_leftovers(tmp_path)


def test_house_refuses_paths_outside_it_in_the_api(world, tmp_path):
    """The same checks where paths are joined, for callers that build an index in memory."""
    from bespoke.house import House

    house = House.open(_crafted_house(world, tmp_path, lambda e: None))
    entry = house.index.entries[0]
    entry.file = "../elsewhere.safetensors"  # assignment is not validated: the join checks again
    with pytest.raises(BespokeError, match=r"alternative 'a0000': '\.\./elsewhere\.safetensors' .* points outside"):
        house.load_alternative(entry.id)
    with pytest.raises(BespokeError, match="points outside the house"):
        house.weights_path("../../a0000")
    assert house.weights_path("a0001") == house.root / "alternatives" / "a0001.safetensors"


# ------------------------------------------------------------------------------------------------ signals
def assert_interrupted(killer: Killer, out: Path, command: str, marker: str | None) -> None:
    """The signalled run printed one line, exited 128 + signal, and left complete files only (no temp, no lock)."""
    killer.check()
    log = killer.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted ({killer.sig.name}) during {command}; finished work and the last "
                      "checkpoint are kept (run the same command again to resume)"], log[-3000:]
    if marker is not None:
        assert not (out / marker).exists(), f"{marker} was written"
    assert load_every_file(out) == [], "an interrupted run cleans up its temporary files"
    assert not (out / LOCK_FILE).exists(), "an interrupted run releases its lock"


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_finetune_interrupted_by_signal_resumes_to_the_same_weights(sig, tmp_path, capsys, monkeypatch):
    data = image_folder(tmp_path / "data")
    (tmp_path / "job.yaml").write_text("pretrained: false\ntrain: {checkpoint_every: 1, augment: weak}\n")

    def args(out: Path) -> list[str]:
        return ["finetune", "--model", ARCH, "--data", str(data), "--resolution", "32", "--epochs", "2",
                "--batch-size", "4", "--seed", "3", "--device", "cpu", "--config", str(tmp_path / "job.yaml"),
                "--out", str(out)]

    stopped = tmp_path / "stopped"
    ckpt = stopped / "checkpoints" / "finetune.pt"
    at, delay = kill_point(f"finetune-{sig.name}", 2, 7, 0.05)
    killer = Killer(args(stopped), tmp_path, FileProgress(ckpt, checkpoint_step), at, delay, sig)
    killer.start()
    code, _, err = run_cli(args(tmp_path / "ref"), capsys)
    assert code == 0, err
    assert_interrupted(killer, stopped, "finetune", "card.json")
    done = checkpoint_step(ckpt)
    total = json.loads((tmp_path / "ref" / "card.json").read_text())["provenance"]["history"][-1]["step"]
    assert at <= done < total

    trained: list[int] = []
    real = finetune_module.check_finite

    def spy(value, *, stage: str, step: int) -> None:
        trained.append(step)
        real(value, stage=stage, step=step)

    monkeypatch.setattr(finetune_module, "check_finite", spy)
    code, _, err = run_cli(args(stopped), capsys)
    assert code == 0, err
    assert trained == list(range(done, total))
    assert load_every_file(stopped) == [] and not (stopped / LOCK_FILE).exists()
    assert_same_tensors(tmp_path / "ref" / "model.safetensors", stopped / "model.safetensors")


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_house_build_interrupted_by_signal_keeps_finished_alternatives(sig, tmp_path, capsys, monkeypatch):
    data = image_folder(tmp_path / "data")
    teacher = teacher_dir(tmp_path / "teacher", ARCH)

    def args(out: Path) -> list[str]:
        return ["house", "build", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--donors", "",
                "--kinds", "skip,prune,lowrank", "--size", "8", "--group-size", "2", "--distill-steps", "10",
                "--batch-size", "4", "--device", "cpu", "--seed", "1"]

    stopped = tmp_path / "stopped"
    at, delay = kill_point(f"house-{sig.name}", 1, 4, 0.15)
    killer = Killer(args(stopped), tmp_path, FileProgress(stopped / "index.json", done_alternatives), at, delay, sig)
    killer.start()
    code, _, err = run_cli(args(tmp_path / "ref"), capsys)
    assert code == 0, err
    assert_interrupted(killer, stopped, "house build", None)
    index = json.loads((stopped / "index.json").read_text())
    pending = [e["id"] for e in index["entries"] if e["status"] == "pending"]
    assert at <= len(index["entries"]) - len(pending) < len(index["entries"])

    trained: list[str] = []
    real = build_module.distill_group

    def spy(seg, jobs, *a, **kw):
        trained.extend(job.id for job in jobs)
        return real(seg, jobs, *a, **kw)

    monkeypatch.setattr(build_module, "distill_group", spy)
    code, _, err = run_cli(args(stopped), capsys)
    assert code == 0, err
    assert sorted(trained) == sorted(pending), "only the unfinished alternatives train again"
    assert load_every_file(stopped) == [] and not (stopped / LOCK_FILE).exists()
    ref = json.loads((tmp_path / "ref" / "index.json").read_text())["entries"]
    got = json.loads((stopped / "index.json").read_text())["entries"]
    assert [(e["id"], e["status"], e["metrics"]) for e in got] == [(e["id"], e["status"], e["metrics"]) for e in ref]
    for entry in ref:
        if entry["file"]:
            assert_same_tensors(tmp_path / "ref" / entry["file"], stopped / entry["file"])


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_supernet_train_interrupted_by_signal_resumes_to_the_same_weights(sig, tmp_path, capsys, monkeypatch):
    data = image_folder(tmp_path / "data")
    teacher = teacher_dir(tmp_path / "teacher", "timm:mobilenetv2_035")
    (tmp_path / "sn.yaml").write_text("train: {checkpoint_every: 1, n_random: 1, eval_images: 0}\n")

    def args(out: Path) -> list[str]:
        return ["supernet", "train", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--steps",
                "8", "--batch-size", "4", "--labels", "0.5", "--threshold", "0.5", "--seed", "2", "--device",
                "cpu", "--config", str(tmp_path / "sn.yaml")]

    stopped = tmp_path / "stopped"
    ckpt = stopped / "checkpoints" / "last.pt"
    at, delay = kill_point(f"supernet-{sig.name}", 2, 5, 0.1)
    killer = Killer(args(stopped), tmp_path, FileProgress(ckpt, checkpoint_step), at, delay, sig)
    killer.start()
    code, _, err = run_cli(args(tmp_path / "ref"), capsys)
    assert code == 0, err
    assert_interrupted(killer, stopped, "supernet train", "supernet.json")
    done = checkpoint_step(ckpt)
    assert at <= done < 8

    trained: list[int] = []
    real = supernet_train_module.sandwich_step

    def spy(net, labelled, unlabelled, cfg, step, device):
        trained.append(step)
        return real(net, labelled, unlabelled, cfg, step, device)

    monkeypatch.setattr(supernet_train_module, "sandwich_step", spy)
    code, _, err = run_cli(args(stopped), capsys)
    assert code == 0, err
    assert trained == list(range(done, 8))
    assert load_every_file(stopped) == [] and not (stopped / LOCK_FILE).exists()
    assert_same_tensors(tmp_path / "ref" / "supernet.safetensors", stopped / "supernet.safetensors")
    assert json.loads((stopped / "supernet.json").read_text())["history"] == \
        json.loads((tmp_path / "ref" / "supernet.json").read_text())["history"]


# ------------------------------------------------------------------------------------- one run per --out
def start_cli(args: list[str], cwd: Path, name: str):
    """``bespoke ARGS`` in another real process (forked from the preloaded server); output in ``cwd/name.log``."""
    proc = _fork_server().Process(target=cli_process, args=(args, cwd, cwd / f"{name}.log"), daemon=True)
    proc.start()
    return proc


def finished_log(proc, cwd: Path, name: str, timeout: float = 180.0) -> str:
    proc.join(timeout)
    assert proc.exitcode is not None, f"{name} did not finish"
    return (cwd / f"{name}.log").read_text(errors="replace")


def test_two_runs_into_one_out_the_second_is_refused(tmp_path):
    data = image_folder(tmp_path / "data")
    (tmp_path / "job.yaml").write_text("pretrained: false\n")
    out = tmp_path / "out"
    args = ["finetune", "--model", ARCH, "--data", str(data), "--resolution", "16", "--epochs", "40", "--batch-size",
            "4", "--device", "cpu", "--config", str(tmp_path / "job.yaml"), "--out", str(out)]
    first = start_cli(args, tmp_path, "first")
    deadline = time.monotonic() + 120
    while not (out / LOCK_FILE).is_file() or not (out / LOCK_FILE).read_text():  # the first run holds the lock
        assert first.is_alive() and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.01)
    second = start_cli(args, tmp_path, "second")
    log = finished_log(second, tmp_path, "second")
    assert first.is_alive(), "the first run must still be running when the second is refused"
    assert second.exitcode == 2, log
    assert [line for line in log.splitlines() if line.strip()] == [
        f"error: {out} is in use by another bespoke run (pid {first.pid}) (wait for it to finish or choose another "
        "--out)"]
    log = finished_log(first, tmp_path, "first", 600)
    assert first.exitcode == 0, log[-3000:]
    assert load_every_file(out) == [] and (out / "card.json").is_file()
    no_leftovers(tmp_path)


def _writers(tmp: Path) -> dict[str, tuple[list[str], Path]]:
    """Every command that writes a folder: its arguments (enough to reach the lock) and the folder it locks."""
    data, model = tmp / "data", tmp / "model"
    targets, out = tmp / "t.yaml", tmp / "out"
    return {
        "finetune": (["finetune", "--model", ARCH, "--data", str(data), "--resolution", "16", "--out", str(out)],
                     out),
        "house build": (["house", "build", "--teacher", str(model), "--data", str(data), "--out", str(out),
                         "--donors", ""], out),
        "search": (["search", str(tmp / "house"), "--targets", str(targets), "--out", str(out)], out),
        "supernet train": (["supernet", "train", "--teacher", str(model), "--data", str(data), "--out", str(out),
                            "--device", "cpu"], out),
        "supernet select": (["supernet", "select", str(tmp / "sn"), "--targets", str(targets), "--out", str(out)],
                            out),
        "bench": (["bench", "--out", str(out)], out),
        "demo": (["demo", "--out", str(out)], out),
        "export": (["export", str(model)], model),
        "profile-device": (["profile-device", str(model), "--out", str(out)], out),
    }


@pytest.mark.parametrize("command", list(_writers(Path("."))))
def test_every_writer_refuses_a_folder_another_run_holds(command, tmp_path):
    image_folder(tmp_path / "data", n_train=2, n_test=1)
    teacher_dir(tmp_path / "model", ARCH)
    (tmp_path / "t.yaml").write_text("targets:\n  - {name: t, runtime: params, budget: 0.5x}\n")
    args, folder = _writers(tmp_path)[command]
    with output_lock(folder):  # this process is the other run
        before = snapshot(folder)
        proc = start_cli(args, tmp_path, "refused")
        log = finished_log(proc, tmp_path, "refused")
        assert proc.exitcode == 2, log[-3000:]
        assert [line for line in log.splitlines() if line.strip()] == [
            f"error: {folder} is in use by another bespoke run (pid {os.getpid()}) (wait for it to finish or "
            "choose another --out)"]
        assert snapshot(folder) == before, "the refused run wrote into the folder"
    assert not (folder / LOCK_FILE).exists()


def test_lock_is_reentrant_survives_a_dead_holder_and_leaves_no_trace(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / LOCK_FILE).write_text(f"{dead.pid}\n")  # left by a SIGKILLed run: the kernel released its lock
    with output_lock(kept):
        assert (kept / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with output_lock(kept / "."):  # the same folder again, from a nested job
            pass
        assert (kept / LOCK_FILE).is_file(), "the inner release must not drop the outer lock"
    assert kept.is_dir() and list(kept.iterdir()) == []
    new = tmp_path / "a" / "b"
    with pytest.raises(BespokeError, match="bad option"), output_lock(new):
        raise BespokeError("bad option")
    assert not (tmp_path / "a").exists(), "a folder the lock created and nothing filled is removed again"


# --------------------------------------------------------------------------------------- full, read-only disk
@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the monkeypatched twin covers this case")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _finetune_args(data: Path, config: Path, out: Path) -> list[str]:
    return ["finetune", "--model", ARCH, "--data", str(data), "--resolution", "16", "--epochs", "1", "--batch-size",
            "4", "--device", "cpu", "--config", str(config), "--out", str(out)]


def _inputs(tmp: Path) -> tuple[Path, Path]:
    data = image_folder(tmp / "data", n_train=4, n_test=2)
    config = tmp / "job.yaml"
    config.write_text("pretrained: false\ntrain: {checkpoint_every: 1}\n")
    return data, config


def disk_full_scenario(tmp: Path, disk: Path, capsys, fill: Callable[[], None], free: Callable[[], None]) -> None:
    """A good model directory, then a run that fills the disk: one error, nothing half-written, the good one
    intact; with space again the same command finishes."""
    data, config = _inputs(tmp)
    code, _, err = run_cli(_finetune_args(data, config, disk / "good"), capsys)
    assert code == 0, err
    good = snapshot(disk / "good")
    fill()
    code, err, caught = cli(_finetune_args(data, config, disk / "bad"), capsys)
    line = one_error_line(code, err, caught, "cannot write", "No space left on device", "free some space")
    assert str(disk / "bad") in line, line
    assert not (disk / "bad" / "card.json").exists()
    no_leftovers(disk)
    assert snapshot(disk / "good") == good, "the earlier good output changed"
    free()
    code, _, err = run_cli(_finetune_args(data, config, disk / "bad"), capsys)
    assert code == 0, err
    assert load_every_file(disk / "bad") == [] and (disk / "bad" / "card.json").is_file()
    no_leftovers(disk)


def test_disk_full_on_a_small_tmpfs(tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "48m") as disk:  # a run here needs ~12 MB, ~19 MB while replacing a checkpoint
        filler = disk / "filler"

        def fill() -> None:  # leave less than one checkpoint's worth: the failure comes mid-training
            st = os.statvfs(disk)
            filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 256 * 1024))

        disk_full_scenario(tmp_path, disk, capsys, fill, lambda: filler.unlink())


def test_disk_full_monkeypatched(tmp_path, capsys, monkeypatch):
    """The twin that needs no mount: flushing the checkpoint fails with ENOSPC, as on a full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    disk_full_scenario(tmp_path, disk, capsys, lambda: _disk_full_for(monkeypatch, "finetune.pt"), monkeypatch.undo)


def read_only_scenario(tmp: Path, disk: Path, capsys, monkeypatch, make_read_only: Callable[[], None]) -> None:
    """Runs into a read-only folder (a new --out under it, an existing good directory, re-exporting that
    directory): one error each, the good directory intact, nothing written anywhere else."""
    data, config = _inputs(tmp)
    code, _, err = run_cli(_finetune_args(data, config, disk / "good"), capsys)
    assert code == 0, err
    good = snapshot(disk / "good")
    make_read_only()
    monkeypatch.chdir(tmp)  # default paths (runs/...) would land here
    outside = snapshot(tmp, skip=disk)
    for argv, folder in ((_finetune_args(data, config, disk / "new"), disk / "new"),
                         (_finetune_args(data, config, disk / "good"), disk / "good"),
                         (["export", str(disk / "good")], disk / "good")):
        code, err, caught = cli(argv, capsys)
        one_error_line(code, err, caught, f"cannot write {folder}: Read-only file system", "writable directory")
        assert snapshot(tmp, skip=disk) == outside, "a file was written outside --out"
    assert not (disk / "new").exists()
    assert snapshot(disk / "good") == good, "the earlier good output changed"


def test_read_only_out_on_a_remounted_tmpfs(tmp_path, capsys, monkeypatch):
    with tmpfs(tmp_path / "disk", "24m") as disk:
        read_only_scenario(tmp_path, disk, capsys, monkeypatch, lambda: subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], check=True))


def _read_only_below(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Every call that would create, change or remove something under ``root`` fails with EROFS."""
    def guard(name: str, *path_args: int) -> None:
        real = getattr(os, name)

        def call(*args, **kwargs):
            for i in path_args:
                if i < len(args) and isinstance(args[i], str | os.PathLike) \
                        and Path(os.path.abspath(args[i])).is_relative_to(root):
                    flags = args[1] if name == "open" and len(args) > 1 else 0
                    if name != "open" or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                        raise OSError(errno.EROFS, "Read-only file system", str(args[i]))
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, call)

    for name, args in {"open": (0,), "mkdir": (0,), "unlink": (0,), "rmdir": (0,), "replace": (0, 1),
                       "rename": (0, 1)}.items():
        guard(name, *args)


def test_read_only_out_monkeypatched(tmp_path, capsys, monkeypatch):
    """The twin that needs no mount: writes below the folder fail with EROFS, as on a read-only mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    read_only_scenario(tmp_path, disk, capsys, monkeypatch, lambda: _read_only_below(monkeypatch, disk))


@pytest.mark.parametrize(("error", "needles"), [
    (OSError(errno.ENOSPC, "No space left on device", "F"), ("cannot write F: No space left on device",
                                                            "free some space")),
    (OSError(errno.EROFS, "Read-only file system", "F"), ("cannot write F: Read-only file system",
                                                         "writable directory")),
    (PermissionError(errno.EACCES, "Permission denied", "F"), ("cannot access F: Permission denied",
                                                              "check the permissions")),
], ids=["ENOSPC", "EROFS", "EACCES"])
def test_a_filesystem_error_outside_the_atomic_writers_is_one_line(error, needles, tmp_path, capsys, monkeypatch):
    """The CLI's boundary: such an error from any file operation (a library writing its own file) is one line."""
    import bespoke.pipeline

    def fails(job):
        raise error

    monkeypatch.setattr(bespoke.pipeline, "run_finetune", fails)
    code, err, caught = cli(["finetune", "--out", str(tmp_path / "out")], capsys)
    one_error_line(code, err, caught, *needles)
