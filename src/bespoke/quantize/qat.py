"""Quantization-aware training: fine-tune a model while its forward pass sees the rounding of the INT8 graph it
will be deployed as, then quantize it after training like any fp32 model (:func:`bespoke.quantize.quantize_to`).

The fake quantization matches onnxruntime's static quantization of the exported graph: every convolution and
linear weight per output channel, symmetric int8 (``reduce_range``: 7 bits; onnxruntime folds batch norms into
the convolutions first, and a per-channel scale absorbs that factor, so the unfolded weight's rounding is the
folded one's), and the tensors the INT8 graph hands between operators per tensor, asymmetric uint8 with the range
tracked by an exponential moving average (the outputs of batch norms, activations and linear layers). The weights
stay float: what is learned is weights that round well. After training the fake quantization is removed and the
model is an ordinary fp32 model whose export onnxruntime calibrates and quantizes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils import parametrize

from bespoke.data import DataSplits, build_transform, make_loader
from bespoke.export import ModelCard, load_model_dir, save_model_dir
from bespoke.train import FinetuneConfig, cpu_seconds, finetune

#: Modules whose output the INT8 graph stores as a uint8 tensor (an activation fused into its convolution keeps
#: only the activation's output in int8; the batch norm's is the float it was computed in, so both are observed).
ACTIVATION_OUTPUTS = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Hardsigmoid, nn.Linear)


class QATConfig(BaseModel):
    """How the forward pass rounds weights and activations while training."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reduce_range: bool = Field(True, description="7-bit weights (int8 weights saturate on AVX2 CPUs without VNNI)")
    momentum: float = Field(0.01, gt=0, le=1, description="EMA momentum of the activation ranges while training")
    calibration_batches: int = Field(8, ge=1, le=1000, description="batches observed before training starts")


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 rounding of a weight, scale ``max|w| / qmax`` as onnxruntime computes it
    (straight-through gradient)."""

    def __init__(self, reduce_range: bool) -> None:
        super().__init__()
        # onnxruntime's symmetric int8 ranges (quant_utils): [-127, 127], reduce_range [-64, 64]
        self.qmin, self.qmax = (-64, 64) if reduce_range else (-127, 127)
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        absmax = weight.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8)
        scale = (2 * absmax / (self.qmax - self.qmin)).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, self.qmin, self.qmax)


class _ActivationFakeQuant:
    """A forward hook rounding a module's output to uint8 over its tracked range (kept as the module's buffers
    ``qat_min`` / ``qat_max``, so checkpoints resume it)."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.rounding = False
        self.observing = False  # a calibration pass in eval mode: ranges tracked, nothing rounded

    def __call__(self, module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return output
        lo, hi = module.qat_min, module.qat_max  # type: ignore[attr-defined]
        if module.training or self.observing:
            with torch.no_grad():
                now_lo, now_hi = output.detach().min().clamp(max=0.0), output.detach().max().clamp(min=0.0)
                if bool(hi <= lo):  # first batch: start from it
                    lo.copy_(now_lo), hi.copy_(now_hi)
                else:
                    lo.lerp_(now_lo, self.momentum), hi.lerp_(now_hi, self.momentum)
        if not self.rounding or self.observing or bool(hi <= lo):
            return output
        scale = float((hi - lo) / 255.0)
        zero = int(torch.round(-lo / scale).clamp(0, 255))
        return torch.fake_quantize_per_tensor_affine(output, max(scale, 1e-8), zero, 0, 255)


class FakeQuantized:
    """``model`` prepared for quantization-aware training (in place); :meth:`strip` returns it to a plain model."""

    def __init__(self, model: nn.Module, cfg: QATConfig | None = None) -> None:
        self.model, self.cfg = model, cfg or QATConfig()
        self._weights: list[_WeightFakeQuant] = []
        self._hooks: list[tuple[nn.Module, _ActivationFakeQuant, Any]] = []
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not parametrize.is_parametrized(module, "weight"):
                fq = _WeightFakeQuant(self.cfg.reduce_range)
                parametrize.register_parametrization(module, "weight", fq)
                self._weights.append(fq)
            if isinstance(module, ACTIVATION_OUTPUTS):
                module.register_buffer("qat_min", torch.zeros(()))
                module.register_buffer("qat_max", torch.zeros(()))
                hook = _ActivationFakeQuant(self.cfg.momentum)
                self._hooks.append((module, hook, module.register_forward_hook(hook)))

    @property
    def layers(self) -> int:
        return len(self._weights)

    def round_activations(self, on: bool = True) -> None:
        """Start (or stop) rounding activations: before, their ranges are only observed."""
        for _, hook, _handle in self._hooks:
            hook.rounding = on

    @torch.no_grad()
    def calibrate(self, batches: Iterator[torch.Tensor] | list[torch.Tensor]) -> None:
        """Track the activation ranges on ``batches`` (eval mode: batch-norm statistics untouched)."""
        was_training = self.model.training
        self.model.eval()
        for _, hook, _handle in self._hooks:
            hook.observing = True
        try:
            for x in batches:
                self.model(x)
        finally:
            for _, hook, _handle in self._hooks:
                hook.observing = False
            self.model.train(was_training)

    def strip(self) -> nn.Module:
        """Remove the fake quantization: the float weights learned stay, the observers go."""
        for module in list(self.model.modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for module, _hook, handle in self._hooks:
            handle.remove()
            for name in ("qat_min", "qat_max"):
                if name in module._buffers:
                    del module._buffers[name]
        self._hooks.clear()
        return self.model


@contextlib.contextmanager
def fake_quantized(model: nn.Module, cfg: QATConfig | None = None,
                   calibration: Iterator[torch.Tensor] | list[torch.Tensor] = ()) -> Iterator[FakeQuantized]:
    """Train ``model`` under fake quantization inside the block (activation ranges first observed on
    ``calibration`` batches); it is a plain model again after it."""
    prepared = FakeQuantized(model, cfg)
    try:
        prepared.calibrate(calibration)
        prepared.round_activations(True)
        yield prepared
    finally:
        prepared.strip()


def qat_recipe(epochs: int = 1, seed: int = 0, kd_weight: float = 0.7) -> FinetuneConfig:
    """The default QAT fine-tune: small steps from a trained model, distilled from itself as it was (T = 1).

    ``kd_weight`` 1.0: distillation only, the labels unused (a label-scarce model learns no label it was not given).
    """
    return FinetuneConfig(epochs=epochs, lr=1e-4, kd_weight=kd_weight, kd_temperature=1.0, augment="flip",
                          weight_decay=0.0, seed=seed)


def qat_finetune(directory: str | Path, splits: DataSplits, out_dir: str | Path, *,
                 train: FinetuneConfig | None = None, qat: QATConfig | None = None,
                 log: Callable[[str], None] = lambda _line: None) -> ModelCard:
    """Write ``out_dir``: the fp32 model directory ``directory`` fine-tuned under fake quantization on ``splits``
    (cross-entropy + distillation from the model as it was), ready for :func:`bespoke.quantize.quantize_to`.

    ``train``: the recipe (default: 1 epoch, lr 1e-4, KD weight 0.7 at T = 1; a QAT fine-tune starts from a trained
    model, so its steps are small). Resumable (``out_dir/checkpoints/qat.pt``). The card's accuracy is the test top-1
    measured *with* the fake quantization on (what the INT8 graph should reach); ``provenance["qat"]`` records
    the recipe and the fp32 model's accuracy.
    """
    directory, out_dir = Path(directory), Path(out_dir)
    cfg = qat or QATConfig()
    recipe = train or qat_recipe()
    model, card = load_model_dir(directory)
    teacher = copy.deepcopy(model).eval()
    transform = build_transform("eval", card.mean, card.std)
    loader = make_loader(splits.train, transform, 64, shuffle=True, seed=recipe.seed)
    batches = [x for (x, _y), _ in zip(loader, range(cfg.calibration_batches), strict=False)]
    cpu0 = cpu_seconds()
    with fake_quantized(model, cfg, batches) as prepared:
        log(f"[qat] {directory}: {prepared.layers} weight tensors and their activations fake-quantized")
        result = finetune(model, splits.train, splits.test, recipe, mean=card.mean, std=card.std, out_dir=out_dir,
                          teacher=teacher, stage="qat")
    method = f"{card.method or card.arch} + QAT"
    qat_card = card.model_copy(update={
        "accuracy": round(result.accuracy, 4), "method": method, "delivery": None, "latency_ms": {}, "latency": {},
        "cost_cpu_s": {**card.cost_cpu_s, "qat": round(cpu_seconds() - cpu0, 1)},
        "provenance": {**card.provenance, "qat": {"recipe": recipe.model_dump(mode="json"),
                                                  "fake_quant": cfg.model_dump(mode="json"),
                                                  "fp32_accuracy": card.accuracy, "source": str(directory.resolve())}}})
    save_model_dir(out_dir, model.eval(), qat_card)
    return qat_card
