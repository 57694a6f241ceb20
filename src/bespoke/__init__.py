"""bespoke: one pretrained vision model + a small, partly labelled data set -> a verified model per edge target.

Pipeline stages, one sub-package each, data flowing one way:
``zoo`` (models) -> ``data`` -> ``train`` (fine-tuning, losses) -> ``targets`` (latency/cost) -> ``export`` (ONNX,
model cards) -> engines (``graph``/``house``/``distill``/``search`` = block engine; ``supernet`` = TOFA) ->
``report`` -> ``cli``.
"""

from bespoke.errors import BespokeError

__version__ = "0.1.0"
__all__ = ["BespokeError", "__version__"]
