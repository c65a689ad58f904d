"""The model zoo: the seed CNN is the tutorial's network, parameter for parameter; `best` reads
every digit twice in evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from digits import DigitsError, count_parameters, create_model, list_models
from digits.checkpoint import build_model
from digits.models import MNIST_MEAN, MNIST_STD, Scale, log_mean_probability, soften


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


def test_seed_computes_the_tutorials_layer_order():
    """The seed CNN pools before its second ReLU and runs both ReLUs in place; the tutorial's
    order (ReLU inside each Conv2D, then the pool) must give the same logits and gradients."""
    torch.manual_seed(0)
    model = create_model("seed")
    conv1, conv2, dense = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tutorial = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), dense)
    images = torch.rand(16, 1, 28, 28) * 255
    images[:, :, :8] = 0  # blank rows, as in MNIST: with zero biases, windows of tied zeros
    outputs = []
    for net in (model, tutorial):
        net.zero_grad()
        logits = net(images)
        F.cross_entropy(logits, torch.arange(16) % 10).backward()
        outputs.append([logits.detach()] + [p.grad.clone() for p in net.parameters()])
    for ours, theirs in zip(*outputs):
        torch.testing.assert_close(ours, theirs)


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


def shifted(images: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """The images moved by (dx, dy) pixels, read back by bilinear interpolation."""
    theta = torch.tensor([[1.0, 0.0, dx * 2 / 28], [0.0, 1.0, dy * 2 / 28]]).expand(len(images), 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_soften_is_the_mean_of_the_image_moved_half_a_pixel_along_each_diagonal():
    images = torch.rand(3, 1, 28, 28) * 255
    moved = [shifted(images, dx, dy) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]
    # grid_sample computes its sampling points in float32: pixels of 0–255 agree to within 1e-3
    torch.testing.assert_close(soften(images), torch.stack(moved).mean(0), atol=1e-3, rtol=0)


def test_test_time_augment_averages_the_digit_and_its_softened_reading_in_evaluation_only():
    torch.manual_seed(0)
    model = create_model("best", temperature=1)
    assert model.test_time_augment and not create_model("fast").test_time_augment  # the recipes'
    plain = create_model("best", test_time_augment=False, temperature=1)
    plain.load_state_dict(model.state_dict())  # the same weights under the same names
    x = torch.rand(4, 1, 28, 28) * 255
    with torch.no_grad():
        model.eval()
        plain.eval()
        expected = (plain(x).softmax(1) + plain(soften(x)).softmax(1)) / 2
        torch.testing.assert_close(model(x).softmax(1), expected)
        assert not torch.allclose(plain(x).softmax(1), expected, atol=1e-4)
        model.train()  # training reads each digit once
        plain.train()
        torch.testing.assert_close(model(x), plain(x))


def test_averaged_readings_keep_even_the_smallest_probabilities_as_logits():
    readings = torch.tensor([[[0.0, -120.0, -300.0]], [[0.0, -120.0, -300.0]]])  # two readings of one image
    # a probability under float32's smallest (e^-300) still has its log: a loss is not capped at 87
    torch.testing.assert_close(log_mean_probability(readings), torch.tensor([[0.0, -120.0, -300.0]]))
    readings = torch.randn(3, 5, 10) * 4
    torch.testing.assert_close(log_mean_probability(readings).softmax(-1), readings.softmax(-1).mean(0))


@pytest.mark.parametrize("saved, expected", [(True, True), (False, False), (None, False)])
def test_a_checkpoint_builds_the_model_its_recipe_trained(saved, expected):
    recipe = {} if saved is None else {"test_time_augment": saved}  # None: saved before recipes had it
    payload = {"model": "best", "normalize": True, "recipe": recipe, "state_dict": create_model("best").state_dict()}
    assert build_model(payload).test_time_augment is expected


def test_reading_divides_the_logits_by_the_recipe_s_temperature_and_training_does_not():
    assert create_model("fast").temperature == 0.43 and create_model("seed").temperature == 1  # the recipes'
    torch.manual_seed(0)
    model, raw = create_model("fast"), create_model("fast", temperature=1)
    raw.load_state_dict(model.state_dict())
    x = torch.rand(4, 1, 28, 28) * 255
    with torch.no_grad():
        model.eval()
        raw.eval()
        torch.testing.assert_close(model(x), raw(x) / 0.43)
        assert (model(x).argmax(1) == raw(x).argmax(1)).all()  # the same answers, more sure of them
        model.train()
        raw.train()
        torch.testing.assert_close(model(x), raw(x))


@pytest.mark.parametrize("recipe, expected", [({"temperature": 0.46}, 0.46), ({}, 1.0)])
def test_a_checkpoint_reads_at_its_recipe_s_temperature(recipe, expected):
    # {}: saved before recipes had a temperature, so read as it was then
    payload = {"model": "best", "normalize": True, "recipe": recipe, "state_dict": create_model("best").state_dict()}
    assert build_model(payload).temperature == expected
