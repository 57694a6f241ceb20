"""Divergence in every training loop: NaN/inf is caught in the step it appears (in the loss, or in a gradient while
the loss is still finite), reported with stage and step, and handled: fine-tuning and supernet training stop with
their last good checkpoint kept (and resume from it), block distillation drops only the diverging alternative.

Elsewhere: NaN at step 0 (tests/test_train.py), NaN loss in supernet training (tests/test_supernet_engine.py), an
alternative with an infinite output in a house build (tests/test_search.py), NaN weights via the CLI
(tests/test_bad_inputs.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from bespoke.distill import ActivationCache, DistillConfig, DistillJob, distill_group
from bespoke.errors import DivergenceError
from bespoke.export import ModelCard, save_model_dir
from bespoke.graph import segment_model
from bespoke.house import Alternative
from bespoke.supernet import ResizedSource, SupernetJob, SupernetTrainConfig, train_supernet
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet, tiny_splits
from bespoke.train import FinetuneConfig, finetune
from tests.conftest import TinyNet
from tests.test_house_helpers import R, one_thread, teacher

MEAN = STD = (0.5, 0.5, 0.5)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def _cfg() -> FinetuneConfig:
    return FinetuneConfig(epochs=2, batch_size=16, lr=5e-3, checkpoint_every=2, augment="none")  # 6 steps an epoch


def _checkpoint(out: Path, name: str) -> dict:
    return torch.load(out / "checkpoints" / name, weights_only=True)


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_finetune_nan_mid_run_stops_keeps_last_good_checkpoint_and_resumes(tmp_path, tiny_splits) -> None:
    torch.manual_seed(0)
    reference = TinyNet()
    finetune(reference, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD, out_dir=tmp_path / "ref")

    torch.manual_seed(0)
    model = TinyNet()
    calls = {"n": 0}

    def poison(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 6 else output  # the 6th forward is step 5

    hook = model.register_forward_hook(poison)
    with pytest.raises(DivergenceError, match="finetune: loss became nan at step 5") as info:
        finetune(model, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD, out_dir=tmp_path / "run")
    hook.remove()
    assert (info.value.stage, info.value.step) == ("finetune", 5) and math.isnan(info.value.value)
    state = _checkpoint(tmp_path / "run", "finetune.pt")
    assert state["step"] == 4 and _finite(state["model"]), "the last good checkpoint (step 4) is kept"

    resumed = TinyNet()
    result = finetune(resumed, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD,
                      out_dir=tmp_path / "run")
    assert result.steps == 12 and _equal(resumed, reference), "a rerun resumes from it to the reference weights"


def test_finetune_infinite_gradient_with_finite_loss_never_reaches_a_checkpoint(tmp_path, tiny_splits) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    calls = {"n": 0}

    def blow_up(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 4 else grad  # the 4th backward is step 3

    model.classifier.weight.register_hook(blow_up)
    with pytest.raises(DivergenceError, match=r"finetune: gradient norm became (inf|nan) at step 3") as info:
        finetune(model, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD, out_dir=tmp_path)
    assert info.value.step == 3
    assert _finite(model.state_dict()), "the optimiser never applied the broken gradient"
    state = _checkpoint(tmp_path, "finetune.pt")
    assert state["step"] == 2 and _finite(state["model"])


def test_supernet_infinite_gradient_stops_in_that_step(tmp_path) -> None:
    teacher_dir = tmp_path / "teacher"
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     resolution=32, mean=MEAN, std=STD)
    save_model_dir(teacher_dir, tiny_efficientnet(), card)
    job = SupernetJob(teacher=str(teacher_dir), data="tiny", labels=0.25, out=tmp_path / "sn",
                      train=SupernetTrainConfig(steps=6, batch_size=8, n_random=1, checkpoint_every=2, eval_images=0))

    def poison(step: int, stats: dict, net: nn.Module) -> None:
        if step == 2:  # after the step-2 checkpoint: the next step's gradient is infinite, its loss finite
            net.head.classifier.weight.register_hook(lambda grad: grad * float("inf"))

    with pytest.raises(DivergenceError, match=r"supernet: gradient norm became (inf|nan) at step 2") as info:
        train_supernet(job, data=ResizedSource(tiny_splits(32)), callback=poison)
    assert info.value.step == 2
    state = _checkpoint(tmp_path / "sn", "last.pt")
    assert state["step"] == 2 and _finite(state["model"])
    assert not (tmp_path / "sn" / "supernet.json").exists()


def test_distillation_drops_only_the_alternative_whose_gradient_explodes() -> None:
    model, _ = teacher()
    seg = segment_model(model, (3, R, R))
    start = next(i for i in range(1, len(seg) - 1) if seg.shapes[i] == seg.shapes[i + 1])
    channels = seg.shapes[start][0]
    jobs = []
    for name in ("good", "bad"):
        torch.manual_seed(0)
        jobs.append(DistillJob(name, Alternative(nn.Conv2d(channels, channels, 1)), start, start + 1))
    calls = {"n": 0}

    def blow_up(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 3 else grad  # the 3rd backward is step 2

    next(jobs[1].module.parameters()).register_hook(blow_up)
    gen = torch.Generator().manual_seed(0)
    val = ActivationCache(seg, torch.randn(8, 3, R, R, generator=gen), torch.randint(0, 4, (8,), generator=gen))
    report = distill_group(seg, jobs, lambda: torch.randn(4, 3, R, R, generator=gen),
                           DistillConfig(steps=5, batch_size=4), val)
    outcome = {o.id: o for o in report.outcomes}
    assert outcome["good"].status == "done" and outcome["good"].metrics["steps"] == 5
    assert outcome["bad"].status == "diverged" and outcome["bad"].metrics["step"] == 2
    assert re.match(r"distill bad: gradient norm became (inf|nan) at step 2", outcome["bad"].error)
    assert all(torch.isfinite(p).all() for p in jobs[1].module.parameters()), "its weights were never touched"
