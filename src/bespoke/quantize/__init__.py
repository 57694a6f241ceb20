"""Post-training static quantization of model directories (onnxruntime.quantization) for int8 targets.

calibrate (seeded, preprocessed images and the calibration reader) -> ptq (one setting: quantize a graph, run it)
-> choose (every setting scored on held-out images, timed against fp32, sensitive nodes left in fp32) -> job
(:func:`quantize_model_dir`: one INT8 model directory per int8 target, verified by top-1 agreement); qat
(quantization-aware fine-tuning before it: fake quantization that rounds like the INT8 graph).
"""

from bespoke.quantize.calibrate import ImageReader, sample_images
from bespoke.quantize.choose import Candidate, Choice, PTQSearch, choose_settings, rank_sensitive_nodes
from bespoke.quantize.job import AGREEMENT_THRESHOLD, default_out, quantize_model_dir, quantize_to
from bespoke.quantize.ptq import PTQSettings, predict, quantize_graph, top1_on
from bespoke.quantize.qat import FakeQuantized, QATConfig, fake_quantized, qat_finetune, qat_recipe

__all__ = ["AGREEMENT_THRESHOLD", "Candidate", "Choice", "FakeQuantized", "ImageReader", "PTQSearch", "PTQSettings",
           "QATConfig", "choose_settings", "default_out", "fake_quantized", "predict", "qat_finetune", "qat_recipe",
           "quantize_graph", "quantize_model_dir", "quantize_to", "rank_sensitive_nodes", "sample_images",
           "top1_on"]
