"""The Python API: digits.load, digits.Classifier (scikit-learn style) and the default model."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import digits
from digits import DATASETS, Classifier, DigitsError, evaluate, load_checkpoint, save_checkpoint
from digits.checkpoint import save_ensemble
from digits.inference import TRAIN_HINT, as_digits, predict_files
from pictures import ink_on_paper, light_on_dark, number_picture


@pytest.fixture(scope="module")
def classifier(learned) -> Classifier:
    return digits.load(learned.checkpoint, precision="fp32")  # exactly as evaluation computes


def test_load_reports_what_the_model_is(classifier, learned):
    info = classifier.info
    assert info["name"] == "seed" and info["parameters"] == 65_194
    assert info["accuracy"] == pytest.approx(learned.accuracy)
    assert info["trained"].startswith("20") and info["backend"] == "torch" and info["precision"] == "fp32"
    assert info["source"] == str(learned.checkpoint)
    assert classifier.get_params()["model"] == "seed"


def test_a_batch_of_dataset_digits_gives_the_evaluation_probabilities(classifier, learned, mnist):
    test = mnist.test.take(slice(0, 2000))  # the digits the checkpoint's accuracy was measured on
    expected = evaluate(learned.model, test).probabilities
    probabilities = classifier.predict_proba(test.images)  # a torch tensor, as the dataset holds them
    assert probabilities.shape == (2000, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    for batch in (test.images[:200].numpy(), test.images[:200].numpy() / 255.0, test.images[:200, None]):
        np.testing.assert_allclose(classifier.predict_proba(batch), expected[:200], atol=1e-5)
    assert np.array_equal(classifier.predict(test.images[:200]), expected[:200].argmax(1))
    assert classifier.score(test.images, test.labels) == pytest.approx(learned.accuracy)


def test_every_kind_of_image_gives_the_same_answer(classifier, mnist, tmp_path):
    digit = mnist.test.images[0].numpy()
    picture = ink_on_paper(digit, seed=1)
    path = tmp_path / "seven.png"
    picture.save(path)
    data = path.read_bytes()
    gray = np.asarray(picture.convert("L"))
    expected = classifier.predict_proba([picture])
    for image in (picture, path, str(path), data, io.BytesIO(data), gray, np.asarray(picture)):
        np.testing.assert_allclose(classifier.predict_proba(image), expected, atol=1e-6)
    mixed = classifier.predict_proba([path, io.BytesIO(data), digit, light_on_dark(digit)])
    assert mixed.shape == (4, 10) and (mixed.argmax(1) == 7).all()
    assert np.array_equal(classifier.prepare(digit), digit)  # MNIST-style input passes through
    assert classifier.prepare(path).shape == (28, 28)


def test_predict_prepared_is_the_batch_path(classifier, mnist):
    batch = mnist.test.images[:100].numpy()
    np.testing.assert_allclose(classifier.predict_prepared(batch), classifier.predict_proba(batch))
    assert classifier.predict_prepared(batch[:0]).shape == (0, 10)
    np.testing.assert_array_equal(classifier.predict_prepared(batch[:, None]), classifier.predict_prepared(batch))
    # Views read backwards, as uint8 and as floats in 0–1, are digits like any other.
    for flipped in (batch[:, :, ::-1], batch[:, :, ::-1] / 255.0):
        np.testing.assert_allclose(classifier.predict_prepared(flipped),
                                   classifier.predict_prepared(flipped.copy()), atol=1e-6)
    with pytest.raises(DigitsError, match=r"shape \(N, 28, 28\)"):
        classifier.predict_prepared(np.zeros((3, 32, 32), np.uint8))


def test_a_prepared_digit_is_read_as_it_is_on_every_path(classifier, mnist, tmp_path):
    # A faint digit in a faint frame: prepare passes it through as MNIST-style, though a batch's
    # polarity rule would call it dark on light. Once prepared, no path may judge it again.
    faint = np.round(mnist.test.images[0].numpy() / 255 * 45).astype(np.uint8)
    faint[[0, -1], :] = faint[:, [0, -1]] = 24
    assert np.array_equal(classifier.prepare(faint), faint)
    path = tmp_path / "faint.png"
    Image.fromarray(faint).save(path)
    expected = classifier.predict_proba([path])
    np.testing.assert_array_equal(classifier.predict_prepared(faint[None]), expected)
    [record] = predict_files(classifier, [path])  # what `digits predict` and `digits explain` read
    assert record["probabilities"] == pytest.approx(expected[0].tolist(), abs=1e-6)
    assert not np.array_equal(as_digits(faint[None]), faint[None])  # the batch rule alone would invert it
    # Dark-on-light digits given as a batch are judged by predict_proba, read as they are by predict_prepared.
    dark = 255 - mnist.test.images[:50].numpy()
    assert (classifier.predict(dark) == mnist.test.labels[:50].numpy()).mean() > 0.9
    assert (classifier.predict_prepared(dark).argmax(1) == mnist.test.labels[:50].numpy()).mean() < 0.5


def test_predicting_imports_neither_plotting_nor_training(learned, mnist, tmp_path):
    # Start-up time of `digits predict` and `digits serve`: matplotlib alone costs half a second.
    picture = tmp_path / "digit.png"
    ink_on_paper(mnist.test.images[0].numpy(), seed=0).save(picture)
    code = ("import sys, digits; digits.load(sys.argv[1]).predict([sys.argv[2]]);"
            "print(sorted({'matplotlib', 'digits.evaluation', 'digits.training'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(learned.checkpoint), str(picture)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_read_number(classifier, mnist):
    chosen = [mnist.test.images[i].numpy() for i in (0, 1, 2)]  # 7, 2, 1
    reading = classifier.read_number(number_picture(chosen, seed=3))
    assert reading["number"] == "721" and reading["digits"] == [7, 2, 1]
    assert len(reading["confidences"]) == 3 and all(0 < c <= 1 for c in reading["confidences"])
    assert np.array(reading["probabilities"]).shape == (3, 10)
    assert [image.shape for image in reading["images"]] == [(28, 28)] * 3


def test_bad_images_raise_one_line(classifier, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(DigitsError, match="notes.png: not a picture"):
        classifier.predict([tmp_path / "notes.png"])
    with pytest.raises(DigitsError, match="no ink found"):
        classifier.predict(np.full((100, 100), 255, np.uint8))


def test_each_digit_of_a_float_batch_is_scaled_on_its_own(classifier, mnist):
    batch = mnist.test.images[:50].numpy() / 255.0
    alone = classifier.predict(batch)
    batch[0, 14, 14] = 1.02  # one resampled picture overshooting 1 does not make the others 0–255
    assert np.array_equal(classifier.predict(batch)[1:], alone[1:])
    batch[1, 0, 0] = np.nan
    with pytest.raises(DigitsError, match="^the images hold NaN or infinite values — clean them first$"):
        classifier.predict(batch)


@pytest.mark.parametrize("images, message", [
    (None, "cannot read a NoneType as pictures"),
    (5, "cannot read a int as pictures"),
    ([None], "cannot read a NoneType as a picture — give a path, bytes"),
])
def test_what_is_not_a_picture_is_one_line(classifier, images, message):
    with pytest.raises(DigitsError, match=message):
        classifier.predict(images)


def test_pictures_in_other_containers(classifier, mnist, tmp_path):
    import torch

    digit = mnist.test.images[0]
    path = tmp_path / "seven.png"
    ink_on_paper(digit.numpy(), seed=1).save(path)
    expected = classifier.predict([path, path])
    assert np.array_equal(classifier.predict(np.array([str(path), str(path)])), expected)  # paths in an array
    assert np.array_equal(digits.prepare(digit), digits.prepare(digit.numpy()))  # a tensor is an array
    assert np.array_equal(classifier.predict([digit.numpy(), torch.as_tensor(digit.numpy())]),
                          classifier.predict([digit.numpy()] * 2))
    # tensors as a network leaves them: needing gradients, or in bfloat16 (which NumPy lacks)
    batch = mnist.test.images[:4].float()
    expected = classifier.predict(batch)
    assert np.array_equal(classifier.predict(batch.requires_grad_()), expected)
    assert np.array_equal(classifier.predict(batch.detach().bfloat16()), expected)  # 0–255 in 8 bits of mantissa
    assert np.array_equal(digits.prepare(digit.bfloat16()), digits.prepare(digit.numpy()))


def test_an_unfitted_classifier_says_what_to_do():
    with pytest.raises(DigitsError, match=r"not trained yet — call fit\(\)"):
        Classifier(model="seed").predict(np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(NotFittedError):  # as scikit-learn's own estimators raise
        Classifier(model="seed").predict_proba(np.zeros((1, 28, 28), np.uint8))


def test_a_loaded_classifier_s_parameters_name_its_own_dataset(learned, tmp_path):
    payload = load_checkpoint(learned.checkpoint)
    save_checkpoint(tmp_path / "model.pt", {**payload, "dataset": "fashion-mnist",
                                            "classes": list(DATASETS["fashion-mnist"].classes)})
    params = digits.load(tmp_path / "model.pt").get_params()
    assert params["dataset"] == "fashion-mnist" and params["model"] == "seed"  # so clone(...).fit() retrains alike


def test_fit_on_given_pictures_with_the_training_engine(mnist, tmp_path):
    images, labels = mnist.train.images[:600].numpy(), mnist.train.labels[:600].numpy()
    # pictures as a user has them, not MNIST-style: they are prepared for training as for prediction
    pictures = [ink_on_paper(d, size=56, seed=i) for i, d in enumerate(mnist.test.images[:40].numpy())]
    clf = Classifier(model="seed", epochs=2, normalize=True, lr=2e-3, out=tmp_path / "run")
    assert clf.fit(images, labels, validation_data=(pictures, mnist.test.labels[:40])) is clf
    assert clf.info["name"] == "seed" and clf.info["source"] == str(tmp_path / "run" / "model.pt")
    assert 0 < clf.info["accuracy"] <= 1
    assert clf.score(mnist.test.images[:500], mnist.test.labels[:500]) > 0.7
    assert load_checkpoint(tmp_path / "run" / "model.pt")["history"][-1]["epoch"] == 2
    unfitted = clone(clf)
    assert unfitted.get_params() == clf.get_params() and not hasattr(unfitted, "backend_")
    held_out = Classifier(model="seed", epochs=1, out=tmp_path / "held-out").fit(images[:50], labels[:50])
    accuracy = held_out.info["accuracy"]  # validated on the 5 images held out of the 50
    assert 0 <= accuracy <= 1 and accuracy * 5 == pytest.approx(round(accuracy * 5))
    with pytest.raises(DigitsError, match="600 images but 5 labels"):
        Classifier(model="seed").fit(images, labels[:5])
    with pytest.raises(DigitsError, match="labels must be digits 0–9"):
        Classifier(model="seed").fit(images[:2], [3, 10])
    for bad in (labels[:2] + 0.5, ["a", "b"], labels[:2, None]):
        with pytest.raises(DigitsError, match="labels must be whole numbers 0–9, one per image"):
            Classifier(model="seed").fit(images[:2], bad)
    with pytest.raises(DigitsError, match=r"validation_data is a pair: \(images, labels\)"):
        Classifier(model="seed").fit(images, labels, validation_data=(pictures,))
    with pytest.raises(DigitsError, match="y and validation_data go with X"):
        Classifier(model="seed").fit(validation_data=(pictures, mnist.test.labels[:40]))
    with pytest.raises(DigitsError, match="--epochs 1.5: give a whole number"):
        Classifier(model="seed", epochs=1.5, out=tmp_path / "half").fit(images, labels)


def test_numpy_numbers_as_a_grid_search_gives_them(mnist, tmp_path):
    images, labels = mnist.train.images[:300].numpy(), mnist.train.labels[:300].numpy()
    clf = Classifier(model="seed", epochs=np.int64(1), batch_size=np.int64(64), lr=np.float64(1e-3),
                     seed=np.int64(2), normalize=np.bool_(True), out=tmp_path / "run").fit(images, labels)
    config = load_checkpoint(tmp_path / "run" / "model.pt")["config"]  # a checkpoint safe loading accepts
    assert (config["epochs"], config["batch_size"], config["lr"], config["seed"]) == (1, 64, 1e-3, 2)
    assert type(config["seed"]) is int and config["normalize"] is True
    assert clf.info["accuracy"] is not None
    assert not (tmp_path / "run" / "report.html").exists()  # a fit on given images is a step, not a run to read
    for bad, message in ((dict(seed=-1), "--seed -1: give a whole number from 0 to"),
                         (dict(seed="3"), "--seed '3': give a number"),
                         (dict(normalize=1), "normalize=1: give True or False")):
        with pytest.raises(DigitsError, match=message):
            Classifier(model="seed", **bad).fit(images, labels)


def test_rows_of_784_pixels_16_bits_and_normalised_pixels(classifier, mnist):
    batch = mnist.test.images[:20].numpy()
    expected = classifier.predict(batch)
    assert np.array_equal(classifier.predict(batch.reshape(20, 784)), expected)  # as mnist_784 holds them
    for deeper in (batch.astype(np.uint16) * 257, batch.astype(np.uint16) * 16):  # 16 and 12 bits
        assert np.array_equal(classifier.predict(deeper), expected)
        assert np.array_equal(classifier.predict(list(deeper)), classifier.predict(list(batch)))
    overshooting = batch.astype(np.float32)
    overshooting[0, 14, 14] = 300  # as bicubic resampling leaves a 0–255 digit: not a 16-bit one
    assert np.array_equal(classifier.predict(overshooting), expected)
    normalised = batch / 255.0
    normalised[3] = (normalised[3] - 0.1307) / 0.3081  # one image among others
    with pytest.raises(DigitsError, match=r"^the images are mostly negative \(image 3 of 20, from 0\), .* undo any "
                                          "normalisation"):
        classifier.predict(normalised)


def test_keras_layout_nested_lists_and_dark_digits_on_light(classifier, mnist):
    batch = mnist.test.images[:20].numpy()
    expected = classifier.predict_proba(batch)
    np.testing.assert_array_equal(classifier.predict_proba(batch[..., None]), expected)  # (N, 28, 28, 1), as Keras
    np.testing.assert_array_equal(classifier.predict_prepared(batch[..., None]), expected)
    np.testing.assert_array_equal(classifier.predict_proba(batch.tolist()), expected)  # as JSON gives them
    np.testing.assert_array_equal(classifier.predict_proba(batch.reshape(20, 784).tolist()), expected)
    assert classifier.score(batch.tolist(), mnist.test.labels[:20].tolist()) > 0.8
    # The batch read as each picture alone is read: a digit drawn dark on light is inverted, the others kept.
    mixed = batch.copy()
    mixed[::2] = 255 - mixed[::2]
    np.testing.assert_array_equal(classifier.predict_proba(mixed), expected)
    np.testing.assert_array_equal(classifier.predict_proba(mixed / 255.0), classifier.predict_proba(batch / 255.0))
    assert np.array_equal(classifier.predict(mixed), classifier.predict(list(mixed)))
    # Light digits on a grey or noisy ground are light on dark, as prepare judges them; and a batch
    # once read reads the same again.
    grey, noisy = np.maximum(batch, 140), np.maximum(batch, np.random.default_rng(0).integers(0, 200, batch.shape))
    for ground in (grey, noisy.astype(np.uint8)):
        np.testing.assert_array_equal(as_digits(ground), ground)
    odd = np.random.default_rng(1).integers(0, 256, (200, 28, 28)).astype(np.uint8)
    odd[:100, [0, -1]] = 255  # half the border light: the case on the edge
    np.testing.assert_array_equal(as_digits(as_digits(odd)), as_digits(odd))
    with pytest.raises(DigitsError, match="^nested lists are read as pixels: give numbers in rows of equal length"):
        classifier.predict([[0, 1], [2]])


def test_fit_on_the_dataset(tmp_path, make_dataset):
    folder = make_dataset(tmp_path / "tiny", train=300, test=100)
    clf = Classifier(model="seed", dataset="tiny", epochs=1, normalize=True, data_dir=folder,
                     out=tmp_path / "run").fit()
    assert clf.info["dataset"] == "tiny" and clf.info["accuracy"] is not None
    assert clf.predict_proba(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)


# --- the default model ------------------------------------------------------------------

def copy_checkpoint(source, target, finished: bool = True) -> None:
    payload = load_checkpoint(source)
    save_checkpoint(target, {**payload, "finished": finished})


def test_default_model_is_the_newest_finished_run(learned, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGITS_MODEL", raising=False)
    copy_checkpoint(learned.checkpoint, tmp_path / "runs" / "seed-old" / "model.pt")
    copy_checkpoint(learned.checkpoint, tmp_path / "runs" / "seed-new" / "model.pt")
    copy_checkpoint(learned.checkpoint, tmp_path / "runs" / "seed-training" / "model.pt", finished=False)
    past = os.stat(tmp_path / "runs" / "seed-old" / "model.pt").st_mtime - 60
    os.utime(tmp_path / "runs" / "seed-old" / "model.pt", (past, past))
    assert digits.load().info["source"] == os.path.join("runs", "seed-new", "model.pt")
    # an ensemble, as `digits train --ensemble` leaves it: members in its folder, the manifest written last
    members = [tmp_path / "runs" / "seed-ensemble2" / f"member-{k}" / "model.pt" for k in (1, 2)]
    for member in members:
        copy_checkpoint(learned.checkpoint, member)
    save_ensemble(members[0].parent.parent, members, "seed")
    assert digits.load().info["source"] == os.path.join("runs", "seed-ensemble2", "ensemble.json")
    (tmp_path / "runs" / "seed-ensemble2" / "ensemble.json").write_text("{}")  # not a manifest of ours
    assert digits.load().info["source"] == os.path.join("runs", "seed-new", "model.pt")

    chosen = tmp_path / "chosen.pt"
    shutil.copy(learned.checkpoint, chosen)
    monkeypatch.setenv("DIGITS_MODEL", str(chosen))
    assert digits.load().info["source"] == str(chosen)
    monkeypatch.setenv("DIGITS_MODEL", str(tmp_path / "gone.pt"))
    with pytest.raises(DigitsError, match=r"\$DIGITS_MODEL names .*gone.pt, which does not exist"):
        digits.load()


def test_no_model_says_the_one_command_that_makes_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGITS_MODEL", raising=False)
    with pytest.raises(DigitsError, match="no trained model under runs/") as caught:
        digits.load()
    assert TRAIN_HINT in str(caught.value) and "`digits train`" in str(caught.value)


def test_a_bad_checkpoint_or_backend_is_one_line(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(DigitsError, match="model.pt: not a readable digits checkpoint"):
        digits.load(tmp_path / "model.pt")
    with pytest.raises(DigitsError, match="--backend tpu: choose auto, torch or onnx"):
        digits.load(tmp_path / "model.pt", backend="tpu")
