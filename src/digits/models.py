"""The model zoo: networks registered by name, each with the recipe that trains it.

Every model takes a float tensor of raw pixels, shape (N, 1, 28, 28), values 0–255,
white ink on black as in MNIST, and returns logits (N, 10). Input scaling is the
model's first layer, so a checkpoint or an ONNX file needs no preprocessing rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from torch import nn

from .errors import DigitsError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: a fixed schedule, whose result is its last epoch's."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7  # Keras's Adam default, not PyTorch's 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | onecycle
    label_smoothing: float = 0.0
    augment: bool = False
    normalize: bool = False  # False feeds raw 0–255 pixels, as the tutorial does

    def with_overrides(self, **overrides) -> Recipe:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)


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
        description = (build.__doc__ or "").strip().splitlines()[0]
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


class Classifier(nn.Sequential):
    """Input scaling followed by a network from the zoo."""

    def __init__(self, name: str, net: nn.Module, normalize: bool):
        super().__init__(Scale(normalize), net)
        self.name = name


def create_model(name: str, normalize: bool | None = None) -> Classifier:
    """Build a zoo model by name; ``normalize`` defaults to the model's recipe."""
    entry = get_entry(name)
    return Classifier(name, entry.build(), entry.recipe.normalize if normalize is None else normalize)


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
        nn.Conv2d(1, 64, 3), nn.ReLU(),
        nn.Conv2d(64, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 12 * 12, 10),  # softmax lives in the loss
    ))
