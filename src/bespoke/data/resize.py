"""Resizing uint8 image tensors to the working resolution (antialiased bilinear, no float copy kept)."""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as F

# Resize in chunks so a big set never needs one huge intermediate buffer.
_CHUNK = 2048


def resize_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Plain resize of uint8 ``[N, C, H, W]`` (or ``[C, H, W]``) to ``R x R``; a no-op when already that size.

    Used for the in-memory sources (Fashion-MNIST, CIFAR): their images are square, no aspect ratio is lost.
    """
    if images.shape[-2:] == (resolution, resolution):
        return images
    if images.dim() == 3:
        return F.resize(images, [resolution, resolution], antialias=True)
    chunks = [
        F.resize(images[i : i + _CHUNK], [resolution, resolution], antialias=True)
        for i in range(0, images.shape[0], _CHUNK)
    ]
    return torch.cat(chunks) if chunks else images.new_empty((0, images.shape[1], resolution, resolution))


def resize_shorter_and_crop(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize uint8 ``[C, H, W]`` so its shorter side is ``R``, then center-crop ``R x R`` (keeps aspect).

    Used for ImageFolder images, whose sizes and aspect ratios vary.
    """
    if image.shape[-2:] != (resolution, resolution):
        image = F.resize(image, resolution, antialias=True)
        image = F.center_crop(image, [resolution, resolution])
    return image
