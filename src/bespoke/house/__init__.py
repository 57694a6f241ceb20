"""The model house: alternatives for every teacher span, stored as JSON recipes + safetensors weights.

Kinds: donor spans of public pretrained networks (with 1x1 adapters), the teacher's own spans pruned
(Torch-Pruning, internal channels only), low-rank (SVD of dense convs), or skipped. ``plan`` describes, samples
and completes them; :class:`House` stores, rebuilds and loads them; :mod:`bespoke.house.student` assembles
students. Training (block distillation) is :mod:`bespoke.distill`; building end to end is
:func:`bespoke.house.build_house`.
"""

from bespoke.house.alternatives import KINDS, ProposalContext, build_alternative, make_kind
from bespoke.house.build import DEFAULT_DONORS, build_house, distill_pending
from bespoke.house.house import House, HouseMeta
from bespoke.house.index import Entry, HouseIndex
from bespoke.house.latency import HouseCosts, build_latency_table, export_house_parts
from bespoke.house.module import Alternative
from bespoke.house.plan import DEFAULT_KIND_WEIGHTS, Plan, Planned, describe_all, plan_house, propose_all, sample
from bespoke.house.recipe import AdapterSpec, PruneStep, Recipe
from bespoke.house.sources import TEACHER, SourceSet, build_time_sources, donor_arch_config, structural_sources
from bespoke.house.student import (
    STUDENT_BUILDER,
    Student,
    assemble_student,
    build_student,
    student_arch_config,
)

__all__ = [
    "DEFAULT_DONORS",
    "DEFAULT_KIND_WEIGHTS",
    "KINDS",
    "STUDENT_BUILDER",
    "TEACHER",
    "AdapterSpec",
    "Alternative",
    "Entry",
    "House",
    "HouseCosts",
    "HouseIndex",
    "HouseMeta",
    "Plan",
    "Planned",
    "ProposalContext",
    "PruneStep",
    "Recipe",
    "SourceSet",
    "Student",
    "assemble_student",
    "build_alternative",
    "build_house",
    "build_latency_table",
    "build_student",
    "build_time_sources",
    "describe_all",
    "distill_pending",
    "donor_arch_config",
    "export_house_parts",
    "make_kind",
    "plan_house",
    "propose_all",
    "sample",
    "structural_sources",
    "student_arch_config",
]
