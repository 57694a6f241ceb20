"""Accuracy of one subnet, honestly: extracted, BN recalibrated on training images, evaluated at its resolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from bespoke.data import build_transform, make_loader, split_labelled
from bespoke.supernet.calibrate import accuracy, recalibrate_bn
from bespoke.supernet.data import DataSource, image_tensor
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.space import SubnetConfig
from bespoke.supernet.static import StaticNet
from bespoke.train import evaluate
from bespoke.utils.device import channels_last

Split = Literal["train", "val", "test"]
_CACHE_LIMIT = 2000  # evaluation sets up to this many images are kept as tensors; larger ones stream


class SubnetEvaluator:
    """Extract + recalibrate + evaluate subnets on ``split`` (at most ``limit`` images), caching image tensors.

    BN statistics come from ``calib_images`` training images (labels unused); with ``calib_labelled`` =
    ``(label fraction, training seed)`` only the labelled part is used, as in the labelled-only ablation,
    which must not see the unlabelled images at all.
    """

    def __init__(self, source: DataSource, mean: Sequence[float], std: Sequence[float], *, split: Split = "val",
                 limit: int | None = 500, calib_images: int = 256, calib_batch: int = 64, seed: int = 0,
                 calib_labelled: tuple[float, int] | None = None, device: torch.device | None = None) -> None:
        self.source, self.mean, self.std = source, tuple(mean), tuple(std)
        self.calib_labelled = calib_labelled  # calibrate on the labelled part only (labelled-only ablation)
        self.split, self.limit, self.seed = split, limit, seed
        self.calib_images, self.calib_batch = calib_images, calib_batch
        self.device = device or torch.device("cpu")
        self._calib: dict[int, torch.Tensor] = {}
        self._eval: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def calibration_images(self, resolution: int) -> torch.Tensor:
        if resolution not in self._calib:
            train = self.source.splits(resolution).train
            if self.calib_labelled is not None:
                fraction, split_seed = self.calib_labelled
                train = split_labelled(train, fraction, split_seed)[0]
            self._calib[resolution] = image_tensor(train, self.calib_images, self.mean, self.std,
                                                   seed=self.seed)[0]
        return self._calib[resolution]

    def extract(self, net: ElasticNet, cfg: SubnetConfig) -> StaticNet:
        """The standalone subnet ``cfg`` with its own BN statistics, in eval mode on ``self.device``."""
        net.set_active_subnet(cfg)
        sub = net.get_active_subnet().to(self.device)
        with channels_last(sub):
            images = self.calibration_images(cfg.resolution).contiguous(memory_format=torch.channels_last)
            recalibrate_bn(sub, images, batch_size=self.calib_batch)
        return sub

    def accuracy(self, model: torch.nn.Module, resolution: int) -> float:
        """Top-1 of an extracted model on the evaluation split at ``resolution`` (run in NHWC, which oneDNN's
        convolutions run faster on CPU; the model is handed back in its plain layout)."""
        with channels_last(model):
            return self._accuracy(model, resolution)

    def _accuracy(self, model: torch.nn.Module, resolution: int) -> float:
        ds = getattr(self.source.splits(resolution), self.split)
        n = len(ds) if self.limit is None else min(self.limit, len(ds))
        if n <= _CACHE_LIMIT:
            if resolution not in self._eval:
                self._eval[resolution] = image_tensor(ds, self.limit, self.mean, self.std, seed=self.seed + 1)
            images, labels = self._eval[resolution]
            return accuracy(model, images.contiguous(memory_format=torch.channels_last), labels)
        if self.limit is not None:
            from bespoke.data import stratified_subset

            ds = stratified_subset(ds, self.limit, self.seed)
        loader = make_loader(ds, build_transform("eval", self.mean, self.std), 256, shuffle=False, seed=0)
        return evaluate(model, loader, device=self.device).accuracy

    def __call__(self, net: ElasticNet, cfg: SubnetConfig) -> tuple[StaticNet, float]:
        sub = self.extract(net, cfg)
        return sub, self.accuracy(sub, cfg.resolution)
