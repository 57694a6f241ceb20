"""Export and the output contract: verified ONNX, model cards, model directories, architecture builders."""

from bespoke.export.builders import ArchBuilder, build_arch, register_arch_builder, zoo_arch_config
from bespoke.export.card import PRED_REFERENCE, SHARED_COST_PREFIX, Delivery, ModelCard, Quantization
from bespoke.export.model_dir import (
    CARD,
    CARD_MD,
    ONNX,
    WEIGHTS,
    check_finite_weights,
    check_out_dir,
    count_macs,
    count_params,
    load_model_dir,
    read_card,
    save_model_dir,
    save_quantized_model_dir,
    update_card,
    write_card,
)
from bespoke.export.onnx_export import OPSET, export_onnx, onnx_max_abs_diff
from bespoke.export.teacher import TeacherInfo, check_teacher_fits, load_teacher

__all__ = [
    "CARD",
    "CARD_MD",
    "ONNX",
    "OPSET",
    "PRED_REFERENCE",
    "SHARED_COST_PREFIX",
    "WEIGHTS",
    "ArchBuilder",
    "Delivery",
    "ModelCard",
    "Quantization",
    "TeacherInfo",
    "build_arch",
    "check_finite_weights",
    "check_out_dir",
    "check_teacher_fits",
    "count_macs",
    "count_params",
    "export_onnx",
    "load_model_dir",
    "load_teacher",
    "onnx_max_abs_diff",
    "read_card",
    "register_arch_builder",
    "save_model_dir",
    "save_quantized_model_dir",
    "update_card",
    "write_card",
    "zoo_arch_config",
]
