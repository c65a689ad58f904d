"""The model zoo: networks registered by name, each with the recipe that trains it.

Every model takes a float tensor of raw pixels, shape (N, 1, 28, 28), values 0–255,
white ink on black as in MNIST, and returns logits (N, 10). Input scaling is the
model's first layer, so a checkpoint or an ONNX file needs no preprocessing rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .augment import Augment
from .errors import DigitsError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: a fixed schedule, whose result is its last epoch's."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)  # a one-cycle schedule cycles β₁ 0.95 → 0.85 → 0.95 instead
    # Keras's Adam default, not PyTorch's 1e-8. Keras adds it to √v before the bias correction,
    # PyTorch after, which matters only for gradients near ε in the first steps.
    eps: float = 1e-7
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | onecycle
    label_smoothing: float = 0.0
    augment: Augment | None = None  # random distortions of every training batch
    normalize: bool = False  # False feeds raw 0–255 pixels, as the tutorial does
    test_time_augment: bool = False  # evaluation also reads each digit softened (see ZooModel)
    # Reading divides the logits by it. Label smoothing trains a network to give its answer about
    # 0.91, so its confidence says little; this undoes that. Tuned on held-out training digits.
    temperature: float = 1.0

    def with_overrides(self, **overrides) -> Recipe:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """The inverse of as_dict, for a recipe read back from a checkpoint."""
        augment = values.get("augment")
        return cls(**{**values, "betas": tuple(values["betas"]),
                      "augment": Augment(**augment) if isinstance(augment, dict) else None})


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[], nn.Module]
    recipe: Recipe
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(recipe: Recipe) -> Callable:
    """Register a network builder under its function name, with its training recipe."""

    def register(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        description = next(iter((build.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[build.__name__] = ModelEntry(build.__name__, build, recipe, description)
        return build

    return register


def list_models() -> list[ModelEntry]:
    return list(_REGISTRY.values())


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DigitsError(f"unknown model {name!r}: choose one of {', '.join(_REGISTRY)}") from None


class Scale(nn.Module):
    """Maps raw 0–255 pixels to the range a network was trained on."""

    def __init__(self, normalize: bool):
        super().__init__()
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            return (x / 255.0 - MNIST_MEAN) / MNIST_STD
        return x

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"


def soften(images: torch.Tensor) -> torch.Tensor:
    """A 3×3 binomial blur: the mean of the image moved half a pixel along each diagonal."""
    weights = images.new_tensor([1.0, 2.0, 1.0])
    kernel = (weights[:, None] * weights[None, :] / 16).expand(images.shape[1], 1, 3, 3)
    return F.conv2d(images, kernel, padding=1, groups=images.shape[1])


def log_mean_probability(logits: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, C) of K readings of N images as one reading: the log of the mean probability.

    It behaves as logits everywhere: softmax gives back the averaged probabilities, argmax the vote.
    """
    return logits.float().log_softmax(-1).logsumexp(0) - math.log(len(logits))


class ZooModel(nn.Sequential):
    """Input scaling followed by a network from the zoo.

    With ``test_time_augment``, evaluation reads every digit twice, as given and softened, and
    averages the two readings. Training distortions resample every digit, which softens it, so a
    network trained on them reads a softened digit a little better; averaging both readings cut
    held-out errors by about a fifth (see the README). Training itself reads each batch once.
    Reading (not training) divides the logits by ``temperature`` (see Recipe).
    """

    def __init__(self, name: str, net: nn.Module, normalize: bool, test_time_augment: bool = False,
                 temperature: float = 1.0):
        super().__init__(Scale(normalize), net)
        self.name = name
        self.test_time_augment = test_time_augment
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        if self.test_time_augment:
            logits = log_mean_probability(super().forward(torch.cat([x, soften(x)])).unflatten(0, (2, -1)))
        else:
            logits = super().forward(x)
        return logits if self.temperature == 1 else logits / self.temperature


class Ensemble(nn.Module):
    """Several trained models as one: their probabilities averaged (see log_mean_probability)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_mean_probability(torch.stack([m(x) for m in self.members]))


def create_model(name: str, normalize: bool | None = None, test_time_augment: bool | None = None,
                 temperature: float | None = None) -> ZooModel:
    """Build a zoo model by name; ``normalize``, ``test_time_augment`` and ``temperature`` default
    to its recipe."""
    entry = get_entry(name)
    recipe = entry.recipe.with_overrides(normalize=normalize, test_time_augment=test_time_augment,
                                         temperature=temperature)
    return ZooModel(name, entry.build(), recipe.normalize, recipe.test_time_augment, recipe.temperature)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def glorot_init(model: nn.Module) -> nn.Module:
    """Keras's defaults: Glorot-uniform kernels, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# --- the zoo ---------------------------------------------------------------------

@register_model(Recipe(epochs=10, batch_size=32, lr=1e-3))
def seed() -> nn.Module:
    """The Keras tutorial's CNN exactly: Conv 64 → Conv 32 → MaxPool → Dense 10."""
    return glorot_init(nn.Sequential(
        # Keras applies each ReLU inside its Conv2D. Max-pooling commutes with ReLU, so pooling
        # first computes the same function and gradients with a quarter of the second ReLU's
        # work; in place, neither ReLU allocates its output. An epoch in bf16 on the 2-core CPU
        # took about 3% less time (benchmarks/README.md has the figures).
        nn.Conv2d(1, 64, 3), nn.ReLU(inplace=True),
        nn.Conv2d(64, 32, 3),
        nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(32 * 12 * 12, 10),  # softmax lives in the loss
    ))


def conv_bn_relu(in_channels: int, out_channels: int, padding: int = 1, pool: bool = False) -> list[nn.Module]:
    """3×3 convolution, optional 2×2 max-pool, batch norm, ReLU.

    Pooling before the norm and the activation makes those two four times cheaper, and the
    ReLU works in place (batch norm's backward pass does not need its output), which matters
    on a CPU, where elementwise work costs as much as the convolution.
    """
    return [nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
            *([nn.MaxPool2d(2)] if pool else []), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


@register_model(Recipe(epochs=1, batch_size=256, lr=0.04, betas=(0.9, 0.95), schedule="onecycle",
                       label_smoothing=0.1, normalize=True, temperature=0.43))
def fast() -> nn.Module:
    """A small batch-norm CNN that passes 99% in one epoch: seconds on a CPU."""
    return nn.Sequential(
        # A strided 5×5 first layer halves the resolution without a max-pool over the largest
        # activation, the most expensive step per image on a CPU. Without padding it gives
        # 12×12, not 14×14 (a quarter less work after it), and misses only the last row and
        # column, where 1.3% of MNIST's digits have any ink (0.02% of all ink).
        nn.Conv2d(1, 16, 5, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),  # 12×12
        # Unpadded 3×3 convolutions compute no border of zeros, and the last needs no pool: at
        # 3×3 its 96 channels cost less than 64 did at 6×6 before a pool, and held-out digits
        # were read a little better. Widths are multiples of 16, the channel blocks oneDNN's
        # kernels compute in: with 12 or 20 channels an epoch took longer than with 16.
        *conv_bn_relu(16, 16, padding=0, pool=True),  # 10×10 → 5×5
        *conv_bn_relu(16, 96, padding=0),  # 3×3
        nn.Flatten(),
        nn.Linear(96 * 3 * 3, 10),
    )


@register_model(Recipe(epochs=24, batch_size=128, lr=5e-3, optimizer="adamw", weight_decay=0.05,
                       schedule="onecycle", label_smoothing=0.1,
                       augment=Augment(rotate=10, scale=0.1, shift=2, elastic=1.5), normalize=True,
                       test_time_augment=True, temperature=0.46))
def best() -> nn.Module:
    """A VGG-style batch-norm CNN trained on distorted digits (rotation, zoom, shift, elastic)."""
    return nn.Sequential(
        *conv_bn_relu(1, 32, pool=True),  # 14×14
        # Pooling here rather than after the next block puts the 64→64 convolution at 7×7: 77
        # MFLOP per training image instead of 110, so 24 epochs fit the time that 17 did, and
        # held-out digits were read as well as after 30 epochs of the 14×14 version.
        *conv_bn_relu(32, 64, pool=True),  # 7×7
        *conv_bn_relu(64, 64),
        *conv_bn_relu(64, 128),
        *conv_bn_relu(128, 128, padding=0),  # 5×5
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )
