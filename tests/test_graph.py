"""bespoke.graph: cut points, segments (== the model, exactly), spans; on four architectures, no per-arch code."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.graph import enumerate_spans, fine_cuts, segment_model, span_of, trace
from bespoke.zoo import create_model
from tests.test_house_helpers import one_thread

ARCHS = ["efficientnet_lite0", "mobilenet_v2", "torchvision:resnet18", "timm:mobilenetv3_small_050"]
R = 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module", params=ARCHS)
def model_and_seg(request):
    torch.manual_seed(0)
    model = create_model(request.param, pretrained=False, num_classes=5, resolution=R).eval()
    return request.param, model, segment_model(model, (3, R, R))


def test_segments_reproduce_the_model_exactly(model_and_seg):
    name, model, seg = model_and_seg
    x = torch.randn(2, 3, R, R)
    with torch.no_grad():
        assert torch.equal(seg.run(x), model(x)), name
        assert torch.equal(seg.module()(x), model(x))
    assert len(seg) >= 8, f"{name}: expected block-level segments, got {seg.names}"


def test_boundary_shapes_and_single_tensor_flow(model_and_seg):
    _, _model, seg = model_and_seg
    x = torch.randn(1, 3, R, R)
    with torch.no_grad():
        acts = seg.activations(x)
    assert [tuple(a.shape[1:]) for a in acts] == seg.shapes
    assert seg.shapes[0] == (3, R, R) and seg.shapes[-1] == (5,)
    assert all(isinstance(s, torch.fx.GraphModule) for s in seg.segments)


def test_segments_do_not_share_parameters_with_the_model(model_and_seg):
    _, model, seg = model_and_seg
    model_params = {id(p) for p in model.parameters()}
    assert not model_params & {id(p) for s in seg.segments for p in s.parameters()}


def test_spans_shapes_and_reduction(model_and_seg):
    _, _, seg = model_and_seg
    spans = enumerate_spans(seg, max_length=3)
    assert spans and all(1 <= s.length <= 3 for s in spans)
    assert all(s.end <= len(seg) - 1 for s in spans), "the classifier segment is never replaced"
    for span in spans:
        assert span.in_shape == seg.shapes[span.start] and span.out_shape == seg.shapes[span.end]
        if len(span.in_shape) == 3 and len(span.out_shape) == 3:
            assert span.reduction == span.in_shape[1] / span.out_shape[1]
        else:
            assert span.reduction is None
    assert span_of(seg, 0, 1).reduction in (2.0, 4.0)  # stride-2 stems (ResNet's includes its max-pool)
    assert any(s.reduction == 1.0 for s in spans)


def test_residual_blocks_are_not_cut_inside():
    model = create_model("torchvision:resnet18", pretrained=False, num_classes=3, resolution=R).eval()
    seg = segment_model(model, (3, R, R))
    assert seg.names[:4] == ["conv1..maxpool", "layer1.0", "layer1.1", "layer2.0"]


def test_fine_cuts_skip_values_that_cross():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.a(x)
            z = self.b(y) + y  # y crosses b: no cut after b
            return self.c(z)

    gm = trace(Residual())
    assert [n.name for n in fine_cuts(gm.graph)] == ["x", "a", "add"]


def test_untraceable_model_names_the_module():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.gate = DataDependent()

        def forward(self, x):
            return self.gate(self.stem(x))

    with pytest.raises(BespokeError, match=r"module gate \(DataDependent\)"):
        segment_model(Net(), (3, 8, 8))


@pytest.mark.integration
def test_efficientnet_lite0_pretrained_segments_equal_at_64px():
    model = create_model("efficientnet_lite0", num_classes=10, resolution=64).eval()
    seg = segment_model(model, (3, 64, 64))
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(seg.run(x), model(x))
    assert len(seg) == 19  # stem, 16 MBConv blocks, head conv (+pool), classifier
    assert seg.shapes[1] == (32, 32, 32) and seg.shapes[-2] == (1280,)
