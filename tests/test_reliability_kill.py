"""Crash safety: a real ``bespoke`` process is SIGKILLed at a seeded random point and the same command is run again.

For ``finetune``, ``house build`` and ``supernet train`` each test checks that

* the killed run left only complete, loadable files (a hidden ``.<name>.<pid>-*.tmp`` of an interrupted write is
  allowed right after the kill, and must be gone once the rerun has finished);
* the rerun resumes: it trains exactly the steps / alternatives the killed run had not finished (spied in-process);
* the final result is *bitwise* equal to an uninterrupted run with the same seed (weights compared with
  ``torch.equal``, not a tolerance): every source of randomness is seeded per step or per group and restored from the
  checkpoint, and both runs use one CPU thread, so nothing may differ. A tolerance would hide a resume that replays
  or skips a batch.

The killed run is another process running ``bespoke.cli.main.main()`` with the command line, as the console script
does. It is forked from a multiprocessing fork server that imported torch and bespoke once, so three kill tests pay
for one import, not three. The uninterrupted reference runs in this process meanwhile, and the rerun runs in this
process too (where it can be spied on). The kill point is drawn from ``random.Random(SEED)``: after the k-th
checkpoint (or k-th finished alternative) appears, plus a random delay of up to about one step, so some kills land
mid-step or mid-write.
"""

from __future__ import annotations

import errno
import importlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import bespoke.house.build as build_module
from bespoke.errors import BespokeError
from bespoke.export import ModelCard, zoo_arch_config
from bespoke.utils import atomic
from bespoke.utils.lock import LOCK_FILE
from bespoke.zoo import create_model
from tests.test_cli import run_cli

# the packages re-export functions named like these modules: fetch the modules themselves
finetune_module = importlib.import_module("bespoke.train.finetune")
supernet_train_module = importlib.import_module("bespoke.supernet.train")
SEED = int(os.environ.get("BESPOKE_KILL_SEED", "20240607"))  # another value explores other kill points
KILL_TIMEOUT_S = 180.0


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Both runs on one thread: tiny models run fastest so, and bitwise equality needs the same kernels."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------------ inputs
def image_folder(root: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """3 classes told apart by colour (learnable), ``n_train`` / ``n_test`` PNGs per class."""
    g = random.Random(0)
    for split, count in (("train", n_train), ("test", n_test)):
        for ci, cls in enumerate("rgb"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                rgb = [g.randrange(60) for _ in range(3)]
                rgb[ci] += 180
                Image.new("RGB", (20, 20), tuple(rgb)).save(folder / f"{i}.png")
    return root


def teacher_dir(path: Path, arch: str, *, num_classes: int = 3, resolution: int = 32) -> Path:
    """A model directory as `bespoke finetune` leaves it (card + weights; the ONNX file is not needed here)."""
    model = create_model(arch, pretrained=False, num_classes=num_classes, resolution=resolution)
    atomic.save_safetensors(model.state_dict(), path / "model.safetensors")
    card = ModelCard(arch=arch, arch_config=zoo_arch_config(arch, num_classes, resolution), engine="finetune",
                     num_classes=num_classes, classes=list("bgr"), resolution=resolution, mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5))
    atomic.write_text(path / "card.json", card.model_dump_json())
    return path


# ------------------------------------------------------------------------------------------------ killing
class FileVersions:
    """Counts the versions of a file written by atomic replace (each new version is a new inode)."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen, self.count = path, None, 0

    def __call__(self) -> int:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.count
        key = (st.st_ino, st.st_mtime_ns)
        if key != self.seen:
            self.seen, self.count = key, self.count + 1
        return self.count


class FileProgress:
    """Progress recorded in a file, re-read whenever a new version appears (never missed, however late we look)."""

    def __init__(self, path: Path, read: Callable[[Path], int]) -> None:
        self.versions, self.read, self.value, self._seen = FileVersions(path), read, 0, 0

    def __call__(self) -> int:
        if self.versions() != self._seen:
            self._seen = self.versions.count
            self.value = self.read(self.versions.path)
        return self.value


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def done_alternatives(path: Path) -> int:
    return sum(e["status"] == "done" for e in json.loads(path.read_text())["entries"])


def cli_process(args: list[str], cwd: Path, log: Path) -> None:
    """Body of the killed process: ``bespoke ARGS`` in ``cwd``, all output to ``log``."""
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["BESPOKE_PROGRESS"] = "0"
    torch.set_num_threads(1)
    sys.argv = ["bespoke", *args]
    from bespoke.cli.main import main

    main()


def _fork_server() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["bespoke.cli.main", "bespoke.pipeline", "bespoke.search", "bespoke.supernet",
                                __name__])
    return ctx


class Killer(threading.Thread):
    """Runs ``bespoke ARGS`` in another process and sends it ``sig`` (SIGKILL unless told) once ``progress()``
    reaches ``at`` (+ ``delay`` s)."""

    def __init__(self, args: list[str], cwd: Path, progress: Callable[[], int], at: int, delay: float,
                 sig: signal.Signals = signal.SIGKILL) -> None:
        super().__init__(daemon=True)
        self.log = cwd / f"killed-{sig.name}-{at}.log"
        self.proc = _fork_server().Process(target=cli_process, args=(args, cwd, self.log), daemon=True)
        self.progress, self.at, self.delay, self.sig = progress, at, delay, sig
        self.outcome = "running"

    def run(self) -> None:
        self.proc.start()  # here, not in __init__: the first start waits for the fork server's imports
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while self.progress() < self.at:
            if not self.proc.is_alive():
                self.outcome = "exited before the kill point"
                return
            if time.monotonic() > deadline:
                self.proc.kill()
                self.outcome = "timed out"
                return
            time.sleep(0.002)
        time.sleep(self.delay)
        alive = self.proc.is_alive()
        os.kill(self.proc.pid, self.sig)
        self.proc.join(KILL_TIMEOUT_S)
        self.outcome = "killed" if alive else "finished before the kill"

    def check(self) -> None:
        self.join(KILL_TIMEOUT_S)
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        assert self.outcome == "killed", f"{self.outcome} (at={self.at}, delay={self.delay:.3f}):\n{log}"
        # SIGKILL ends the process where it is; SIGINT/SIGTERM end `bespoke` with exit code 128 + the signal
        assert self.proc.exitcode == (-self.sig if self.sig == signal.SIGKILL else 128 + self.sig), log


# ------------------------------------------------------------------------------------------------ files
def load_every_file(root: Path) -> list[Path]:
    """Load every file under ``root`` by its type (fails on a damaged one); return the leftover temporary files."""
    import onnx

    temps = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name == LOCK_FILE:
            continue  # a killed run's lock: released by the kernel, not output
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            temps.append(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix in (".md", ".txt"):
            path.read_text(encoding="utf-8")
        else:
            raise AssertionError(f"unexpected file {path}")
    return temps


def assert_same_tensors(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs between {a} and {b}"


def kill_point(salt: str, first: int, last: int, max_delay: float) -> tuple[int, float]:
    """The seeded random kill point of one test: after the ``at``-th event, plus ``delay`` seconds."""
    rng = random.Random(f"{SEED}-{salt}")
    return rng.randint(first, last), rng.uniform(0.0, max_delay)


# ------------------------------------------------------------------------------------------------ tests
def test_finetune_killed_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch) -> None:
    data = image_folder(tmp_path / "data")
    (tmp_path / "job.yaml").write_text("pretrained: false\ntrain: {checkpoint_every: 1, augment: weak}\n")

    def args(out: Path) -> list[str]:
        return ["finetune", "--model", "timm:mobilenetv3_small_050", "--data", str(data), "--resolution", "32",
                "--epochs", "2", "--batch-size", "4", "--seed", "3", "--device", "cpu", "--config",
                str(tmp_path / "job.yaml"), "--out", str(out)]

    killed = tmp_path / "killed"
    ckpt = killed / "checkpoints" / "finetune.pt"
    at, delay = kill_point("finetune", 2, 7, 0.05)  # 10 steps, a checkpoint after each
    killer = Killer(args(killed), tmp_path, FileProgress(ckpt, checkpoint_step), at, delay)
    killer.start()
    code, _, err = run_cli(args(tmp_path / "ref"), capsys)  # the uninterrupted run, meanwhile
    assert code == 0, err
    killer.check()

    assert not (killed / "card.json").exists()
    load_every_file(killed)
    done = checkpoint_step(ckpt)
    ref_card = json.loads((tmp_path / "ref" / "card.json").read_text())
    total = ref_card["provenance"]["history"][-1]["step"]
    assert at <= done < total

    trained: list[int] = []
    real = finetune_module.check_finite

    def spy(value, *, stage: str, step: int) -> None:
        trained.append(step)
        real(value, stage=stage, step=step)

    monkeypatch.setattr(finetune_module, "check_finite", spy)
    code, _, err = run_cli(args(killed), capsys)
    assert code == 0, err
    assert trained == list(range(done, total)), "the rerun must train exactly the unfinished steps"
    assert load_every_file(killed) == []
    assert_same_tensors(tmp_path / "ref" / "model.safetensors", killed / "model.safetensors")
    card = json.loads((killed / "card.json").read_text())
    assert card["accuracy"] == ref_card["accuracy"]
    assert card["provenance"]["history"] == ref_card["provenance"]["history"]


def test_house_build_killed_keeps_finished_alternatives(tmp_path, capsys, monkeypatch) -> None:
    data = image_folder(tmp_path / "data")
    teacher = teacher_dir(tmp_path / "teacher", "timm:mobilenetv3_small_050")

    def args(out: Path) -> list[str]:
        return ["house", "build", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--donors", "",
                "--kinds", "skip,prune,lowrank", "--size", "8", "--group-size", "2", "--distill-steps", "10",
                "--batch-size", "4", "--device", "cpu", "--seed", "1"]

    killed = tmp_path / "killed"
    at, delay = kill_point("house", 1, 4, 0.15)  # 4 groups of 2; kill once `at` alternatives are done
    killer = Killer(args(killed), tmp_path, FileProgress(killed / "index.json", done_alternatives), at, delay)
    killer.start()
    code, _, err = run_cli(args(tmp_path / "ref"), capsys)
    assert code == 0, err
    killer.check()

    load_every_file(killed)
    index = json.loads((killed / "index.json").read_text())
    finished = {e["id"]: e for e in index["entries"] if e["status"] == "done"}
    assert at <= len(finished) < len(index["entries"])
    stamps = {}
    for alt_id, entry in finished.items():
        path = killed / entry["file"]
        stamps[alt_id] = (path.stat().st_mtime_ns, path.read_bytes())
    pending = [e["id"] for e in index["entries"] if e["status"] == "pending"]

    trained: list[str] = []
    real = build_module.distill_group

    def spy(seg, jobs, *a, **kw):
        trained.extend(job.id for job in jobs)
        return real(seg, jobs, *a, **kw)

    monkeypatch.setattr(build_module, "distill_group", spy)
    code, _, err = run_cli(args(killed), capsys)
    assert code == 0, err
    assert sorted(trained) == sorted(pending), "only the unfinished alternatives train again"
    for alt_id, (mtime, content) in stamps.items():
        path = killed / finished[alt_id]["file"]
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content, f"{alt_id} was rewritten"
    assert load_every_file(killed) == []

    ref = json.loads((tmp_path / "ref" / "index.json").read_text())["entries"]
    got = json.loads((killed / "index.json").read_text())["entries"]
    assert [(e["id"], e["status"], e["recipe"], e["metrics"]) for e in got] == \
        [(e["id"], e["status"], e["recipe"], e["metrics"]) for e in ref]
    for entry in ref:
        if entry["file"]:
            assert_same_tensors(tmp_path / "ref" / entry["file"], killed / entry["file"])


def test_supernet_train_killed_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch) -> None:
    data = image_folder(tmp_path / "data")
    teacher = teacher_dir(tmp_path / "teacher", "timm:mobilenetv2_035")
    (tmp_path / "sn.yaml").write_text("train: {checkpoint_every: 1, n_random: 1, eval_images: 0}\n")

    def args(out: Path) -> list[str]:
        return ["supernet", "train", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--steps",
                "8", "--batch-size", "4", "--labels", "0.5", "--threshold", "0.5", "--seed", "2", "--device",
                "cpu", "--config", str(tmp_path / "sn.yaml")]

    killed = tmp_path / "killed"
    ckpt = killed / "checkpoints" / "last.pt"
    at, delay = kill_point("supernet", 2, 5, 0.1)  # 8 steps, a checkpoint after each
    killer = Killer(args(killed), tmp_path, FileProgress(ckpt, checkpoint_step), at, delay)
    killer.start()
    code, _, err = run_cli(args(tmp_path / "ref"), capsys)
    assert code == 0, err
    killer.check()

    assert not (killed / "supernet.json").exists()
    load_every_file(killed)
    done = checkpoint_step(ckpt)
    assert at <= done < 8

    trained: list[int] = []
    real = supernet_train_module.sandwich_step

    def spy(net, labelled, unlabelled, cfg, step, device):
        trained.append(step)
        return real(net, labelled, unlabelled, cfg, step, device)

    monkeypatch.setattr(supernet_train_module, "sandwich_step", spy)
    code, _, err = run_cli(args(killed), capsys)
    assert code == 0, err
    assert trained == list(range(done, 8)), "the rerun must train exactly the unfinished steps"
    assert load_every_file(killed) == []
    assert_same_tensors(tmp_path / "ref" / "supernet.safetensors", killed / "supernet.safetensors")
    ref_meta = json.loads((tmp_path / "ref" / "supernet.json").read_text())
    meta = json.loads((killed / "supernet.json").read_text())
    assert meta["history"] == ref_meta["history"]


# ------------------------------------------------------------------------------------------------ atomic writes
def test_leftover_temp_of_a_dead_writer_is_removed_by_the_next_write(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".index.json.{dead.pid}-abc123xy.tmp"
    stale.write_text('{"half": ')
    live = tmp_path / f".index.json.{os.getppid()}-abc123xy.tmp"  # a writer that is still running
    live.write_text("{}")
    other = tmp_path / f".card.json.{dead.pid}-abc123xy.tmp"  # another file's leftover: left for its own writer
    other.write_text("{}")
    atomic.write_json(tmp_path / "index.json", {"entries": []})
    assert json.loads((tmp_path / "index.json").read_text()) == {"entries": []}
    assert not stale.exists() and live.exists() and other.exists()


def test_failed_write_is_one_error_and_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "state.pt"
    atomic.torch_save({"step": torch.tensor(1)}, target)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(BespokeError, match=r"cannot write .*state\.pt: No space left on device") as info:
        atomic.torch_save({"step": torch.tensor(2)}, target)
    assert "run the same command again" in str(info.value)
    monkeypatch.undo()
    assert int(torch.load(target, weights_only=True)["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(BespokeError, match="cannot write"):
        atomic.write_text(tmp_path / "file" / "card.json", "{}")
