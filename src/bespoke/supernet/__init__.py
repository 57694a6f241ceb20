"""TOFA supernet engine: train one weight-sharing supernet on small, partly labelled data, then pick a subnet per
target on the fly (no per-target training).

    build_supernet(model, resolution)            elastic net whose largest subnet is the pretrained model
    train_supernet(SupernetJob(...))             sandwich rule + unified semi-supervised loss, resumable
    select_subnets(supernet_dir, targets, out)   predictor + cost tables + evolution -> one model dir per target

Layout: ``specs``/``static`` (plain architecture) <- ``space`` (search space, SubnetConfig) <- ``elastic``
(elastic modules) <- ``build`` (from timm/torchvision) <- ``train``; selection: ``predictor`` (accuracy),
``efficiency`` (cost tables), ``evolution`` (search), ``extract`` (plain modules + arch builder), ``select``.
"""

from bespoke.supernet.build import build_supernet, convert, to_static
from bespoke.supernet.calibrate import recalibrate_bn
from bespoke.supernet.config import SelectConfig, SupernetJob, SupernetTrainConfig
from bespoke.supernet.data import DataSource, ResizedSource, SpecSource
from bespoke.supernet.efficiency import SubnetCosts, build_cost_table
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.evolution import EvolutionResult, evolve
from bespoke.supernet.extract import BUILDER, build_subnet, extract_subnet, subnet_arch_config
from bespoke.supernet.predictor import AccuracyPredictor, ArchEncoder, fit_predictor, kendall_tau
from bespoke.supernet.select import SelectResult, TargetChoice, select_subnets
from bespoke.supernet.space import (
    BlockChoices,
    BlockConfig,
    SearchSpace,
    SpaceOptions,
    StageChoices,
    SubnetConfig,
    default_space,
)
from bespoke.supernet.specs import BlockSpec, ConvSpec, LayerSpec, NetSpec
from bespoke.supernet.static import StaticNet
from bespoke.supernet.store import SupernetMeta, load_supernet
from bespoke.supernet.train import SupernetResult, train_supernet

__all__ = [
    "BUILDER",
    "AccuracyPredictor",
    "ArchEncoder",
    "BlockChoices",
    "BlockConfig",
    "BlockSpec",
    "ConvSpec",
    "DataSource",
    "ElasticNet",
    "EvolutionResult",
    "LayerSpec",
    "NetSpec",
    "ResizedSource",
    "SearchSpace",
    "SelectConfig",
    "SelectResult",
    "SpaceOptions",
    "SpecSource",
    "StageChoices",
    "StaticNet",
    "SubnetConfig",
    "SubnetCosts",
    "SupernetJob",
    "SupernetMeta",
    "SupernetResult",
    "SupernetTrainConfig",
    "TargetChoice",
    "build_cost_table",
    "build_subnet",
    "build_supernet",
    "convert",
    "default_space",
    "evolve",
    "extract_subnet",
    "fit_predictor",
    "kendall_tau",
    "load_supernet",
    "recalibrate_bn",
    "select_subnets",
    "subnet_arch_config",
    "to_static",
    "train_supernet",
]
