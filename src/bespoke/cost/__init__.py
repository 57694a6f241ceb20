"""The one cost model of both engines: a table of part values per measurement setting, grown incrementally,
and a calibrated predictor of whole models (Theil-Sen line through measured whole models, with its own
leave-one-out error).

An engine enumerates its parts (a house's teacher segments and alternatives; a supernet's stems, blocks and heads)
under engine-independent signatures, :func:`grow_table` measures those the table lacks through the runtime registry
(:func:`bespoke.targets.measure_parts`), and the engine adds whole models measured against its reference model as
calibration points (:meth:`CostTable.add_point`), delivered models included.
"""

from bespoke.cost.fit import LooError, leave_one_out, theil_sen
from bespoke.cost.spread import spread_by_cost
from bespoke.cost.store import cache_key, grow_table, load_table, save_table, table_path, table_settings
from bespoke.cost.table import AGGREGATE, CalibrationPoint, CostTable, Source, part_signature

__all__ = [
    "AGGREGATE",
    "CalibrationPoint",
    "CostTable",
    "LooError",
    "Source",
    "cache_key",
    "grow_table",
    "leave_one_out",
    "load_table",
    "part_signature",
    "save_table",
    "spread_by_cost",
    "table_path",
    "table_settings",
    "theil_sen",
]
