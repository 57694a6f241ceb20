"""Elastic modules: max-size weights sliced by active settings; each has a static twin in ``static.py``."""

from bespoke.supernet.elastic.block import ElasticConvBNAct, ElasticMBConv
from bespoke.supernet.elastic.bn import ElasticBatchNorm2d
from bespoke.supernet.elastic.conv import ElasticConv2d
from bespoke.supernet.elastic.net import ElasticHead, ElasticNet

__all__ = ["ElasticBatchNorm2d", "ElasticConv2d", "ElasticConvBNAct", "ElasticHead", "ElasticMBConv", "ElasticNet"]
