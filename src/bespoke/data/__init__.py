"""Data: datasets (Fashion-MNIST IDX, ImageFolder, CIFAR), splits, labelled split, transforms, loaders.

Images are uint8 ``[3, R, R]`` tensors until a transform makes them float and normalised.
"""

from bespoke.data.datasets import (
    DataSplits,
    ImageFileDataset,
    TensorImageDataset,
    TransformedDataset,
    TwoViewDataset,
    dataset_labels,
)
from bespoke.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_ENV
from bespoke.data.loaders import make_loader
from bespoke.data.sources import load_dataset
from bespoke.data.splits import class_counts, split_labelled, stratified_subset
from bespoke.data.transforms import TransformKind, build_transform

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "DataSplits",
    "ImageFileDataset",
    "TensorImageDataset",
    "TransformKind",
    "TransformedDataset",
    "TwoViewDataset",
    "build_transform",
    "class_counts",
    "dataset_labels",
    "load_dataset",
    "make_loader",
    "split_labelled",
    "stratified_subset",
]
