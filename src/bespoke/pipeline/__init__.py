"""End-to-end jobs that chain the stages (zoo → data → train → export → targets): what the CLI commands call.

Each job is a plain function a notebook user can call; the CLI is a thin layer over them.
"""

from bespoke.pipeline.finetune_job import FinetuneJob, run_finetune
from bespoke.pipeline.profile_job import measure_model_dir, profile_model_dir

__all__ = ["FinetuneJob", "measure_model_dir", "profile_model_dir", "run_finetune"]
