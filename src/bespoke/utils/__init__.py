"""Small shared helpers: atomic files, bounded YAML reading, seeding, progress bars, devices, executors (local/Ray)
and data-parallel context (torch.distributed). Imports nothing else of bespoke but :mod:`bespoke.errors`."""
