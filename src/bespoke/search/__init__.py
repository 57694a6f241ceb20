"""Search and delivery for the block engine (Bespoke, Lee & Moon, AAAI 2023).

The house it searches is built by :func:`bespoke.house.build_house`. Step by step from a notebook::

    house = build_house("runs/ft-lite2", donors=["efficientnet_lite0", "mobilenet_v2"], data="fashion-mnist",
                        out="runs/house", size=200)
    found = search_target(house, target)                     # latency table + simulated annealing
    student, result = retrain_student(house, found.alternatives, out_dir="runs/work/cpu1")
    card = deliver(house, target, found, student, result, "runs/students/cpu1")

or all targets at once: ``search_and_deliver(house, "targets.yaml", out="runs/students")``; the whole engine from
one typed recipe (the one ``bespoke house build`` / ``search --config`` and the benchmark read):
``run_block_engine("runs/ft-lite2", "targets.yaml", data="fashion-mnist", out="runs/block", job=BlockJob())``.
"""

from bespoke.search.annealing import AnnealConfig, Candidate, Problem, SearchResult, anneal, check_feasible
from bespoke.search.deliver import deliver, retrain_student, run_block_engine, search_and_deliver
from bespoke.search.estimator import AccuracyEstimator, Estimate
from bespoke.search.job import DEFAULT_RETRAIN, BlockJob, HouseSettings, SearchSettings, retrain_recipe
from bespoke.search.select import TargetSearch, make_problem, search_target

__all__ = [
    "DEFAULT_RETRAIN",
    "AccuracyEstimator",
    "AnnealConfig",
    "BlockJob",
    "Candidate",
    "Estimate",
    "HouseSettings",
    "Problem",
    "SearchResult",
    "SearchSettings",
    "TargetSearch",
    "anneal",
    "check_feasible",
    "deliver",
    "make_problem",
    "retrain_recipe",
    "retrain_student",
    "run_block_engine",
    "search_and_deliver",
    "search_target",
]
