"""Elastic batch norm: max-size affine parameters and running statistics, sliced to the input's width.

A subclass of ``nn.BatchNorm2d`` (same state-dict keys, recognised by everything that handles batch norms). In
training mode the running statistics of the active prefix are updated in place; the rest stay untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d(num_features)`` that normalises any prefix of its channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        mean = None if self.running_mean is None else self.running_mean[:c]
        var = None if self.running_var is None else self.running_var[:c]
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
        return F.batch_norm(x, mean if not use_batch or self.track_running_stats else None,
                            var if not use_batch or self.track_running_stats else None,
                            weight, bias, use_batch, factor, self.eps)
