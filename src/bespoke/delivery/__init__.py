"""Delivery: the step every engine and baseline ends with, once for all of them.

A delivered architecture is measured after export, against the engine's own reference model (the teacher, the
largest subnet) on the scale its budget and predictions live on (:func:`measure_against`), and its card gets the
typed :class:`~bespoke.export.Delivery` section from :func:`write_delivery` — the one writer of that section, read
by the benchmark, the reports and the CLI. How the search limit follows the measurements after export is one policy
for all of them (:class:`BudgetBracket`), and so is the loop that applies it (:func:`retry_to_budget`).
"""

from bespoke.delivery.measure import Reference, confirm_verdict, measure_against
from bespoke.delivery.policy import Attempt, BudgetBracket, RetryPolicy, next_limit
from bespoke.delivery.retry import Pick, retry_to_budget
from bespoke.delivery.section import write_delivery

__all__ = ["Attempt", "BudgetBracket", "Pick", "Reference", "RetryPolicy", "confirm_verdict", "measure_against",
           "next_limit", "retry_to_budget", "write_delivery"]
