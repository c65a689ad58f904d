"""Explanations: integrated gradients add up to the logit they explain, feature maps and
first-layer weights are the model's own, and `digits explain` draws a picture's prediction."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image
from torch import nn

import digits
from digits import Dataset, Run, load_model
from digits.cli import main
from digits.explain import feature_maps, first_layer_weights, integrated_gradients
from digits.plots import explanation_figure
from pictures import ink_on_paper


@pytest.fixture(scope="module")
def model(learned: Run) -> nn.Module:
    """A copy of the learned seed CNN, so the shared one's state is never touched."""
    return load_model(learned.checkpoint)[0]


@pytest.fixture(scope="module")
def seven(mnist: Dataset) -> np.ndarray:
    return mnist.test.images[0].numpy()


def logits(model: nn.Module, image: np.ndarray | torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.as_tensor(image, dtype=torch.float32).reshape(1, 1, 28, 28))[0]


def test_integrated_gradients_add_up_to_the_change_in_the_logit(model: nn.Module, seven: np.ndarray) -> None:
    saliency = integrated_gradients(model, seven, steps=256)
    assert saliency.shape == (28, 28) and saliency.dtype == np.float32
    predicted = int(logits(model, seven).argmax())
    change = logits(model, seven)[predicted] - logits(model, np.zeros((28, 28)))[predicted]
    assert saliency.sum() == pytest.approx(float(change), rel=0.03)
    assert not saliency[seven == 0].any(), "a blank pixel cannot move the score"
    assert np.array_equal(integrated_gradients(model, seven), integrated_gradients(model, seven, target=predicted))


def test_another_class_gets_its_own_explanation(model: nn.Module, seven: np.ndarray) -> None:
    other = int(logits(model, seven).argsort()[-2])
    saliency = integrated_gradients(model, seven, target=other, steps=256)
    change = logits(model, seven)[other] - logits(model, np.zeros((28, 28)))[other]
    assert saliency.sum() == pytest.approx(float(change), rel=0.03)
    assert not np.allclose(saliency, integrated_gradients(model, seven, steps=256))


def test_explaining_leaves_the_model_as_it_was(model: nn.Module, seven: np.ndarray) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    integrated_gradients(model, seven)
    feature_maps(model, seven)
    assert model.training
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_feature_maps_are_each_convolutions_output(model: nn.Module, seven: np.ndarray) -> None:
    maps = feature_maps(model, seven)
    assert [(name, m.shape) for name, m in maps] == [("1.0", (64, 26, 26)), ("1.2", (32, 24, 24))]
    scale, net = model[0], model[1]
    with torch.no_grad():
        first = net[0](scale(torch.as_tensor(seven, dtype=torch.float32)[None, None]))[0]
    np.testing.assert_allclose(maps[0][1], first.numpy(), rtol=1e-5, atol=1e-5)


def test_first_layer_weights_as_pictures(model: nn.Module) -> None:
    np.testing.assert_array_equal(first_layer_weights(model), model[1][0].weight.detach()[:, 0].numpy())
    dense = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16))
    np.testing.assert_array_equal(first_layer_weights(dense), dense[1].weight.detach().reshape(16, 28, 28).numpy())
    assert first_layer_weights(nn.Sequential(nn.Flatten(), nn.Linear(100, 10))) is None


@pytest.fixture
def picture(seven: np.ndarray, tmp_path: Path) -> Path:
    """A scan-like picture of a test digit: dark ink on paper, 280×280."""
    path = tmp_path / "seven.png"
    ink_on_paper(seven).save(path)
    return path


def test_explain_a_picture(learned: Run, picture: Path, capsys) -> None:
    assert main(["explain", str(picture), "--model", str(learned.checkpoint)]) == 0
    first, second = capsys.readouterr().out.splitlines()
    p = digits.load(learned.checkpoint).predict_proba(picture)[0]
    digit = int(p.argmax())
    assert first.startswith(f"{picture}: {digit} ({p[digit]:.1%}) — top 3: {digit} {p[digit]:.1%} · ")
    drawn = picture.with_name("seven-explained.png")
    assert second == f"wrote {drawn}"
    with Image.open(drawn) as image:
        image.load()
        assert image.width > 600 and image.height > 200  # input, saliency and probabilities side by side

    # Predicting the folder afterwards reads the picture, not the figure drawn beside it.
    assert main(["predict", str(picture.parent), "--model", str(learned.checkpoint), "--csv"]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [str(picture)]


def test_a_name_of_any_kind_is_drawn(learned: Run, picture: Path, tmp_path: Path, seven: np.ndarray) -> None:
    """Two $ once made matplotlib read a name as a formula and fail; a long name once ran over the
    probabilities, hiding the answer."""
    priced = tmp_path / "cost_$5_and_$6.png"
    shutil.copy(picture, priced)
    assert digits.explain_picture(priced, model=learned.checkpoint, out=tmp_path / "drawn.png")["file"] == str(priced)
    assert (tmp_path / "drawn.png").is_file()

    long = "scan_of_the_customer_form_number_20260101_page_3_box_7_handwritten_digit.png: 7 (99.9%)"
    figure = explanation_figure([seven], [seven - 128.0], np.full((1, 10), 0.1), list("0123456789"), [long])
    figure.canvas.draw()
    (title,) = figure.findobj(lambda artist: isinstance(artist, Text) and artist.get_text().startswith("scan"))
    assert title.get_window_extent().x1 < figure.axes[2].get_window_extent().x0  # the probabilities' panel
    assert title.get_text().replace("\n", "").startswith(long)


def test_explain_uses_the_default_model(learned: Run, picture: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DIGITS_MODEL", str(learned.checkpoint))
    result = digits.explain_picture(picture, out=tmp_path / "drawn.png")
    assert result["model"] == str(learned.checkpoint)
    assert result["digit"] == int(digits.load(learned.checkpoint).predict(picture)[0])
    assert (tmp_path / "drawn.png").is_file()


def test_explain_errors_are_one_line(learned: Run, picture: Path, tmp_path: Path, capsys) -> None:
    assert main(["explain", str(tmp_path / "missing.png"), "--model", str(learned.checkpoint)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("digits: error: ") and "missing.png" in error and error.count("\n") == 1

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["explain", str(picture), "--model", str(learned.checkpoint), "--out", str(blocker / "x.png")]) == 2
    assert capsys.readouterr().err == (f"digits: error: --out {blocker / 'x.png'}: {blocker} is a file, not a folder "
                                       "— choose another place\n")
    assert main(["explain", str(picture), "--model", str(learned.checkpoint), "--out", str(tmp_path / "x.jpg")]) == 2
    assert capsys.readouterr().err == (f"digits: error: --out {tmp_path / 'x.jpg'}: the explanation is a PNG "
                                       "picture; give a file name ending in .png\n")
    assert not (tmp_path / "x.jpg").exists()
    own = tmp_path / "own.png"  # the picture itself is not written over with its explanation
    own.write_bytes(picture.read_bytes())
    assert main(["explain", str(own), "--model", str(learned.checkpoint), "--out", str(own)]) == 2
    assert "is the picture being explained" in capsys.readouterr().err
    assert own.read_bytes() == picture.read_bytes()


def test_explaining_needs_the_pytorch_model(learned: Run, picture: Path, tmp_path: Path, capsys) -> None:
    from digits.export import export_onnx

    onnx = tmp_path / "seed.onnx"
    export_onnx(learned.checkpoint, onnx)
    assert main(["explain", str(picture), "--model", str(onnx)]) == 2
    assert "explaining needs the PyTorch checkpoint" in capsys.readouterr().err
