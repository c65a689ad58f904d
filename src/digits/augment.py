"""Data augmentation as batched tensor operations, on whichever device the batch is.

Each image gets its own random rotation, scale and shift and, optionally, an elastic
distortion (Simard et al., 2003: a smooth random displacement field). All of it is
folded into one sampling grid per image and applied by a single ``grid_sample`` over
the whole batch, so no Python runs per image. Randomness comes from torch's global
generator, which the training loop seeds per epoch, so a resumed run sees the same
distortions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Augment:
    """Ranges of the random distortions; each is drawn uniformly in ±range per image."""

    rotate: float = 10.0  # degrees
    scale: float = 0.1  # relative: 0.1 draws a zoom in [0.9, 1.1]
    shift: float = 2.0  # pixels
    # The elastic field's displacements at its coarse grid points, up to this many pixels (0
    # turns it off); bicubic upsampling overshoots between them, up to about 2.2 px for 1.5.
    elastic: float = 0.0
    elastic_grid: int = 4  # the field's resolution (coarser is smoother) before upsampling

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Distort a float (N, C, H, W) batch; returns a new batch of the same shape."""
        n, _, height, width = batch.shape
        uniform = lambda *shape: torch.rand(*shape, device=batch.device) * 2 - 1  # noqa: E731
        angle = uniform(n) * math.radians(self.rotate)
        zoom = 1 + uniform(n) * self.scale
        # affine_grid maps output to input coordinates in [-1, 1]: a zoom > 1 enlarges the digit.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        shift = uniform(n, 2) * self.shift * 2 / torch.tensor([width, height], device=batch.device)
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
        if self.elastic:
            coarse = uniform(n, 2, self.elastic_grid, self.elastic_grid)
            field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
            scale = self.elastic * 2 / torch.tensor([width, height], device=batch.device)
            grid = grid + field.permute(0, 2, 3, 1) * scale
        return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
