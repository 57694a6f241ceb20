"""The TOFA study is the bench preset ``tofa-study`` (``src/bespoke/presets/tofa-study.yaml``); this script only
forwards its arguments to

    bespoke bench --preset tofa-study [--smoke] [--out DIR] [--remeasure]

The preset's stages: the teacher fine-tuned on the labelled share, (a) TOFA semi-supervised (``tofa``), (b) its
labelled-only ablation (``tofa-labelled-only``), (c) extraction from the untrained supernet + fine-tune
(``extract-finetune``, :mod:`bespoke.baselines.extract`) and TOFA's 20-budget sweep for the cost of K
(``tofa-sweep``). Training-length variants are the same preset with another ``tofa: {train: {steps: N}}``
(copy the YAML and run ``bespoke bench --preset FILE``).
"""

from __future__ import annotations

import sys

from bespoke.cli.main import app

if __name__ == "__main__":
    app(["bench", "--preset", "tofa-study", *sys.argv[1:]], prog_name="tofa_study.py")
