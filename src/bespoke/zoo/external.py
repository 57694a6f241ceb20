"""Any timm or torchvision architecture by name (``timm:resnet18``, ``torchvision:mobilenet_v3_small``).

No downloads: weights come from a local file passed as ``weights=`` (or random init with ``pretrained=False``).
"""

from __future__ import annotations

import timm
import torchvision

from bespoke.errors import BespokeError
from bespoke.zoo.config import PretrainedCfg
from bespoke.zoo.registry import ModelEntry, register_prefix


def _timm_entry(arch: str) -> ModelEntry:
    if not timm.is_model(arch):
        raise BespokeError(f"timm has no architecture {arch!r}", "see timm.list_models() for names")
    probe = timm.create_model(arch, pretrained=False)
    pcfg = getattr(probe, "pretrained_cfg", {}) or {}
    cfg = PretrainedCfg(
        name=f"timm:{arch}", family=arch, source="local weights file (timm architecture)",
        mean=tuple(pcfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(pcfg.get("std", (0.229, 0.224, 0.225))),
        native_resolution=int(pcfg.get("input_size", (3, 224, 224))[-1]), num_classes=probe.num_classes,
        classifier=str(pcfg.get("classifier", "classifier")), license=str(pcfg.get("license", "unknown")),
    )
    return ModelEntry(cfg=cfg, build=lambda n, **kw: timm.create_model(arch, pretrained=False, num_classes=n, **kw),
                      pretrained_state=None, probe_input=True, takes_args=True)


def _torchvision_entry(arch: str) -> ModelEntry:
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise BespokeError(f"torchvision has no classification architecture {arch!r}",
                           "see torchvision.models.list_models() for names")
    cfg = PretrainedCfg(name=f"torchvision:{arch}", family=arch, source="local weights file (torchvision arch)")
    return ModelEntry(cfg=cfg, build=lambda n, **kw: torchvision.models.get_model(arch, weights=None,
                                                                                 num_classes=n, **kw),
                      pretrained_state=None, probe_input=True, takes_args=True)


register_prefix("timm", _timm_entry)
register_prefix("torchvision", _torchvision_entry)
