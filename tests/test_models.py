"""The model zoo: the seed CNN is the tutorial's network, parameter for parameter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from digits import DigitsError, count_parameters, create_model, list_models
from digits.models import MNIST_MEAN, MNIST_STD, Scale


def test_seed_has_the_tutorial_parameter_count():
    assert count_parameters(create_model("seed")) == 65_194


@pytest.mark.parametrize("n", [1, 7])
def test_seed_maps_pictures_to_ten_logits(n):
    model = create_model("seed").eval()
    with torch.no_grad():
        logits = model(torch.rand(n, 1, 28, 28) * 255)
    assert logits.shape == (n, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_seed_starts_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    layers = [m for m in create_model("seed").modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [type(m) for m in layers] == [nn.Conv2d, nn.Conv2d, nn.Linear]
    for layer in layers:
        receptive = layer.weight[0, 0].numel() if layer.weight.ndim == 4 else 1
        fan_out, fan_in = layer.weight.shape[0] * receptive, layer.weight.shape[1] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))
        largest = layer.weight.abs().max().item()
        # Within the Glorot bound, and spread to it: PyTorch's own default would be narrower
        # (the dense layer) or wider (the first convolution).
        assert 0.95 * bound < largest <= bound
        assert torch.count_nonzero(layer.bias) == 0


def test_scale_feeds_raw_or_normalized_pixels():
    pixels = torch.tensor([0.0, 255.0])
    assert torch.equal(Scale(normalize=False)(pixels), pixels)
    expected = torch.tensor([-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD])
    torch.testing.assert_close(Scale(normalize=True)(pixels), expected)


def test_normalize_defaults_to_the_recipe():
    assert create_model("seed")[0].normalize is False  # the tutorial feeds raw 0–255 pixels
    assert create_model("seed", normalize=True)[0].normalize is True


def test_unknown_model_is_a_clear_error():
    with pytest.raises(DigitsError, match="unknown model 'nope': choose one of .*seed"):
        create_model("nope")


def test_registry_lists_seed_with_its_recipe():
    entry = {e.name: e for e in list_models()}["seed"]
    assert entry.description.startswith("The Keras tutorial's CNN")
    recipe = entry.recipe
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.eps) == (10, 32, 1e-3, 1e-7)
    assert recipe.optimizer == "adam" and recipe.normalize is False
