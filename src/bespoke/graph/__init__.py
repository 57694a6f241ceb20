"""Graph analysis for the block engine: torch.fx cut points, segments, and single-input/single-output spans.

>>> seg = segment_model(model, (3, 64, 64))       # consecutive segments between block cut points
>>> torch.equal(seg.run(x), model(x))              # True: the segments are the model
>>> spans = enumerate_spans(seg, max_length=3)     # [start, end) ranges with in/out shapes and reduction
"""

from bespoke.graph.cuts import block_cuts, fine_cuts, is_container
from bespoke.graph.segments import Segmentation, Shape, segment_model
from bespoke.graph.spans import Span, enumerate_spans, span_of
from bespoke.graph.trace import BlockTracer, is_torch_layer, trace

__all__ = [
    "BlockTracer",
    "Segmentation",
    "Shape",
    "Span",
    "block_cuts",
    "enumerate_spans",
    "fine_cuts",
    "is_container",
    "is_torch_layer",
    "segment_model",
    "span_of",
    "trace",
]
