"""Evaluation: its numbers are those of a direct computation, and its pictures are real PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support
from torch.nn import functional as F

from digits import (DATASETS, DigitsError, Evaluation, evaluate, evaluate_checkpoint, load_checkpoint, load_model,
                    save_checkpoint)
from digits.cli import main
from digits.plots import short_percent
from digits.report import _mistakes

COUNT = 1000


@pytest.fixture(scope="module")
def report(learned, make_dataset, tmp_path_factory) -> dict:
    """evaluate_checkpoint on 1,000 real test digits, in a folder of their own."""
    data_dir = make_dataset(tmp_path_factory.mktemp("heldout"), train=10, test=COUNT)
    return evaluate_checkpoint(learned.checkpoint, dataset="heldout", data_dir=data_dir,
                               out=tmp_path_factory.mktemp("pictures"))


@pytest.fixture(scope="module")
def direct(learned, mnist) -> tuple[torch.Tensor, np.ndarray]:
    """The checkpoint's logits for the same digits, computed here with plain torch."""
    model, _ = load_model(learned.checkpoint)
    with torch.no_grad():
        logits = model(mnist.test.images[:COUNT].unsqueeze(1).float())
    return logits, mnist.test.labels[:COUNT].numpy()


def test_accuracy_and_loss_match_a_direct_computation(report, direct):
    logits, labels = direct
    assert report["count"] == COUNT
    assert report["accuracy"] == pytest.approx((logits.argmax(1).numpy() == labels).mean(), abs=1e-12)
    assert report["loss"] == pytest.approx(F.cross_entropy(logits, torch.from_numpy(labels)).item(), rel=1e-4)
    assert report["accuracy"] > 0.85  # a real model, so the comparisons above are not trivial


def test_per_class_metrics_are_sklearns(report, direct):
    logits, labels = direct
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, logits.argmax(1).numpy(), labels=range(10), zero_division=0)
    per_class = report["per_class"]
    np.testing.assert_allclose(per_class["precision"], precision)
    np.testing.assert_allclose(per_class["recall"], recall)
    np.testing.assert_allclose(per_class["f1"], f1)
    assert per_class["support"] == np.bincount(labels, minlength=10).tolist() == support.tolist()


def test_confusion_matrix_counts_every_digit(report, direct):
    _, labels = direct
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == COUNT
    assert confusion.sum(1).tolist() == np.bincount(labels, minlength=10).tolist()
    assert np.trace(confusion) / COUNT == pytest.approx(report["accuracy"])


@pytest.mark.parametrize("picture", ["confusion", "mistakes"])
def test_pictures_are_pngs(report, picture):
    path = report["files"][picture]
    assert path.endswith(f"{picture}.png")
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 200


def test_evaluate_a_split(learned, mnist):
    split = mnist.test.take(slice(0, 300))
    result = evaluate(learned.model, split)
    assert result.probabilities.shape == (300, 10)
    np.testing.assert_allclose(result.probabilities.sum(1), 1, rtol=1e-5)
    assert result.accuracy == (result.predictions == split.labels.numpy()).mean()


def test_evaluate_takes_a_classifier_and_a_whole_dataset_and_refuses_the_rest_in_one_line(learned, mnist):
    import digits

    expected = evaluate(learned.model, mnist.test)
    for model, data in ((digits.load(learned.checkpoint), mnist.test), (learned.model, mnist)):
        np.testing.assert_array_equal(evaluate(model, data).probabilities, expected.probabilities)
    for model, data, message in (
            (str(learned.checkpoint), mnist.test, "evaluate takes a model, not a path: evaluate_checkpoint"),
            (object(), mnist.test, r"cannot evaluate a object: give a PyTorch module, such as digits.load_model"),
            (learned.model, mnist.test.images, "cannot evaluate on a Tensor: give a Split, such as data.test")):
        with pytest.raises(DigitsError, match=message):
            evaluate(model, data)

    class Wrapped(torch.nn.Module):  # a module of the user's own whose part is called `network`
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, x):
            return -self.network(x)

    assert evaluate(Wrapped(learned.model), mnist.test).accuracy < 0.2  # the whole module, not its part


def test_the_most_confident_mistakes_come_first_even_where_float32_rounds_them_to_certainty():
    logits = torch.zeros(5, 10)
    logits[:, 3] = torch.tensor([30.0, 5.0, 60.0, 45.0, 2.0])  # all read 3; only image 4 is a 3
    probabilities = logits.softmax(1).numpy()
    assert (probabilities[[0, 2, 3], 3] == 1).all()  # the top probability no longer tells them apart
    result = Evaluation(0.0, 0.2, probabilities, np.array([0, 1, 2, 5, 3]))
    assert result.confident_mistakes().tolist() == [2, 3, 0, 1]


def test_a_mistake_s_confidence_is_never_shown_as_a_certain_100_percent():
    assert [short_percent(p) for p in (0.5, 0.99949, 0.9995, 1.0)] == ["50.0%", "99.9%", ">99.9%", ">99.9%"]
    probabilities = np.full((2, 10), 1e-6, np.float32)
    probabilities[:, 3] = 0.99999  # both read 3; neither is
    section = _mistakes(np.zeros((2, 28, 28), np.uint8), Evaluation(1.0, 0.0, probabilities, np.array([5, 8])),
                        [str(d) for d in range(10)])
    assert section.count("<td>&gt;99.9%</td>") == 2 and "100" not in section


def test_a_model_is_not_scored_on_another_dataset_s_classes(learned, tmp_path):
    clothes = {**load_checkpoint(learned.checkpoint), "dataset": "fashion-mnist",
               "classes": list(DATASETS["fashion-mnist"].classes)}
    del clothes["format"]
    save_checkpoint(tmp_path / "model.pt", clothes)
    with pytest.raises(DigitsError, match="reads fashion-mnist's classes, not mnist's"):
        evaluate_checkpoint(tmp_path / "model.pt", dataset="mnist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no pictures drawn over


def test_an_out_that_is_a_file_is_refused_before_evaluating(learned, tmp_path, capsys):
    picture = tmp_path / "seven.png"
    picture.write_bytes(b"a picture")
    for command in (["evaluate", str(learned.checkpoint)], ["ensemble", str(learned.folder), str(learned.folder)]):
        assert main([*command, "--out", str(picture)]) == 2
        assert capsys.readouterr().err == (f"digits: error: --out {picture}: a file, not a folder — give a folder "
                                           "for the files this writes\n")
    assert picture.read_bytes() == b"a picture"


def test_a_dataset_without_test_images_is_refused_in_one_line(learned, make_dataset, tmp_path, capsys):
    folder = make_dataset(tmp_path / "mine", train=50, test=0)
    commands = {"evaluate on": ["evaluate", str(learned.checkpoint), "--out", str(tmp_path)],
                "score the baselines on": ["baselines", "--only", "knn"]}
    for purpose, command in commands.items():
        assert main([*command, "--dataset", "mine", "--data-dir", str(folder)]) == 2
        expected = f"mine: no test images to {purpose} — give the dataset's test split"
        assert capsys.readouterr().err == f"digits: error: {expected}\n"
    assert not (tmp_path / "confusion.png").exists()
    assert main(["train", "--dataset", "mine", "--data-dir", str(folder), "--out", str(tmp_path / "run")]) == 2
    assert "mine: no test images to validate on — give the dataset's test split, or hold training images out to " \
           "validate on with --holdout N" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
