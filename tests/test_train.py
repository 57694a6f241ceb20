"""Training loop: learns, resumes to the same weights, detects divergence; losses are right."""

from __future__ import annotations

import math

import pytest
import torch

from bespoke.errors import BespokeError, DivergenceError
from bespoke.train import FinetuneConfig, check_finite, feature_loss, finetune, kd_loss, soft_cross_entropy

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_losses():
    logits = torch.randn(4, 5)
    assert kd_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, -logits).item() > 0
    probs = torch.softmax(torch.randn(4, 5), 1)
    assert soft_cross_entropy(logits, probs).item() > 0
    t = torch.randn(2, 3, 4, 4) * 10
    assert feature_loss(t, t).item() == 0
    assert feature_loss(torch.zeros_like(t), t).item() == pytest.approx(1.0, rel=1e-4)


def test_check_finite_raises_with_stage_and_step():
    check_finite(torch.tensor(1.0), stage="s", step=1)
    with pytest.raises(DivergenceError, match="s: loss became nan at step 7"):
        check_finite(torch.tensor(math.nan), stage="s", step=7)


def _cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig(**{"epochs": 3, "batch_size": 16, "lr": 5e-3, "checkpoint_every": 2, "augment": "none",
                             **kw})


def test_finetune_learns(tmp_path, tiny_net, tiny_splits):
    res = finetune(tiny_net, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD, out_dir=tmp_path)
    assert res.accuracy > 0.8
    assert res.steps == 18 and res.cpu_s > 0


def test_finetune_resume_equals_uninterrupted(tmp_path, tiny_splits):
    from tests.conftest import TinyNet

    torch.manual_seed(0)
    ref = TinyNet()
    finetune(ref, tiny_splits.train, tiny_splits.test, _cfg(augment="weak"), mean=MEAN, std=STD,
             out_dir=tmp_path / "a")

    class Boom(Exception):
        pass

    torch.manual_seed(0)
    model = TinyNet()
    calls = {"n": 0}
    orig = model.forward

    def crashing_forward(x):
        calls["n"] += 1
        if calls["n"] == 9:  # in the middle of epoch 2, after a mid-epoch checkpoint
            raise Boom
        return orig(x)

    model.forward = crashing_forward
    with pytest.raises(Boom):
        finetune(model, tiny_splits.train, tiny_splits.test, _cfg(augment="weak"), mean=MEAN, std=STD,
                 out_dir=tmp_path / "b")
    torch.manual_seed(123)  # a fresh process would have other RNG state: resume must not depend on it
    resumed = TinyNet()
    res = finetune(resumed, tiny_splits.train, tiny_splits.test, _cfg(augment="weak"), mean=MEAN, std=STD,
                   out_dir=tmp_path / "b")
    assert res.steps == 18
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_finetune_refuses_a_checkpoint_of_another_recipe(tmp_path, tiny_net, tiny_splits):
    """Same number of steps, other learning rate: resuming would silently mix two recipes."""
    finetune(tiny_net, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD, out_dir=tmp_path)
    again = finetune(tiny_net, tiny_splits.train, tiny_splits.test, _cfg(eval_batch_size=7), mean=MEAN, std=STD,
                     out_dir=tmp_path)  # where and how it evaluates may change
    assert again.steps == 18
    with pytest.raises(BespokeError, match="other settings"):
        finetune(tiny_net, tiny_splits.train, tiny_splits.test, _cfg(lr=0.5), mean=MEAN, std=STD, out_dir=tmp_path)


def test_finetune_with_teacher_kd(tmp_path, tiny_net, tiny_splits):
    from tests.conftest import TinyNet

    teacher = TinyNet()
    res = finetune(tiny_net, tiny_splits.train, tiny_splits.test, _cfg(kd_weight=0.5), mean=MEAN, std=STD,
                   out_dir=tmp_path, teacher=teacher)
    assert 0 <= res.accuracy <= 1


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_net, tiny_splits):
    tiny_net.classifier.weight.data.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="finetune: loss became nan at step 0"):
        finetune(tiny_net, tiny_splits.train, tiny_splits.test, _cfg(), mean=MEAN, std=STD, out_dir=tmp_path)
