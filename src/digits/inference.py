"""Predictions on real pictures: a scikit-learn-style classifier over two backends.

The command line, the Python API and the service all predict through `Classifier`. A picture
goes through `prepare` (MNIST-style 28×28 uint8), then a backend turns a batch of those into
logits: PyTorch for a checkpoint, ONNX Runtime for an exported ``.onnx`` file. Only the
PyTorch backend imports torch, so a deployment can predict from an ONNX file without it.
"""

from __future__ import annotations

import glob
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
import scipy.special
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .errors import DigitsError
from .files import (ENSEMBLE_MANIFEST, EXPLAINED, RUNS_DIR, atomic_write, member_checkpoints, model_file,
                    newest_runs_first, output_folder)
from .mnist import DIGIT_CLASSES, FIELD
from .prepare import (Source, as_numpy, ink_contrast, is_array, on_255_scale, prepare, prepare_counted,
                      segment_number)

Images = Union[Source, Sequence[Source]]
ONNX_BATCH = 2048  # digits per ONNX Runtime call
DEFAULT_MODEL_VARIABLE = "DIGITS_MODEL"  # the environment variable naming the user's default model
PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TRAIN_HINT = "train one with `digits train`, or pass --model CHECKPOINT"


# --- backends: a uint8 batch (N, 28, 28) in, float32 logits (N, 10) out -----------------

def model_info(payload: dict[str, Any], parameters: int) -> dict[str, Any]:
    """What a checkpoint says about its model; an ONNX export carries the same."""
    history = payload.get("history") or []
    on_test_set = not (payload.get("config") or {}).get("holdout")  # else it validated on training digits
    accuracy = history[-1]["val_accuracy"] if history and on_test_set else None
    return {"name": payload["model"], "parameters": parameters,
            "accuracy": payload.get("accuracy", accuracy),  # an ensemble's payload carries its own
            "trained": payload.get("saved"), "dataset": payload.get("dataset"),
            "classes": list(payload["classes"])}


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Path, device: str = "auto", precision: str = "auto"):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise DigitsError(f"{checkpoint}: a checkpoint needs PyTorch, which is not installed here"
                              " — predict from its ONNX export instead") from None
        from .checkpoint import load_model
        from .engine import prepare_model, resolve_device, resolve_precision
        from .models import count_parameters

        model, payload = load_model(checkpoint)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = prepare_model(model, self.device)
        self.info = model_info(payload, count_parameters(model))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from .engine import autocast, predict_logits

        with autocast(self.device, self.precision):
            return predict_logits(self.model, torch.from_numpy(batch)).numpy()


class OnnxBackend:
    name = "onnx"
    precision = "fp32"

    def __init__(self, path: Path, serialized: bytes | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise DigitsError("ONNX Runtime is not installed — pip install 'digits[onnx]'") from None
        if serialized is None and not path.is_file():
            raise DigitsError(f"{path}: no such ONNX file — make one with `digits export CHECKPOINT`")
        self.path = path
        # The model itself is kept, not only its path: a pickled classifier then reads the same
        # model wherever it is unpickled, whatever has become of the file.
        self.serialized = path.read_bytes() if serialized is None else serialized
        try:
            self.session = onnxruntime.InferenceSession(self.serialized, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime's errors share no base class but Exception
            reason = (str(e).strip() or type(e).__name__).splitlines()[0]
            raise DigitsError(f"{path}: not a readable ONNX model ({reason})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if not (len(inputs) == 1 and inputs[0].type == "tensor(float)" and inputs[0].shape[1:] == [1, FIELD, FIELD]
                and outputs and outputs[0].shape[1:] == [10]):
            takes = ", ".join(f"{i.type} of shape {i.shape}" for i in inputs) or "no input"
            raise DigitsError(f"{path}: not a digit classifier (it takes {takes}, not float images of shape "
                              f"[N, 1, {FIELD}, {FIELD}]) — export one with `digits export CHECKPOINT`")
        self.input = inputs[0].name
        fixed = inputs[0].shape[0]  # an export from another tool may take batches of one size only
        self.fixed_batch = fixed if isinstance(fixed, int) else None
        try:
            described = json.loads(self.session.get_modelmeta().custom_metadata_map.get("digits", "{}"))
        except ValueError:
            described = None
        # A digit classifier exported by another tool is named after its file and reads 0–9.
        self.info = {"name": path.stem, "parameters": None, "accuracy": None, "trained": None, "dataset": None,
                     "classes": list(DIGIT_CLASSES), **(described if isinstance(described, dict) else {})}

    def __getstate__(self) -> dict[str, Any]:  # a session cannot be pickled; the model it was made from can
        return {"path": self.path, "serialized": self.serialized}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["serialized"])

    def logits(self, batch: np.ndarray) -> np.ndarray:
        size, out = self.fixed_batch or ONNX_BATCH, []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size, None].astype(np.float32)
            if self.fixed_batch and len(chunk) < size:  # filled up with blanks, whose answers are dropped
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
            out.append(self.session.run(None, {self.input: chunk})[0][:len(batch) - start])
        return np.concatenate(out) if out else np.empty((0, 10), np.float32)


# --- which model ----------------------------------------------------------------

def default_model() -> Path:
    """The user's chosen default ($DIGITS_MODEL), else the newest finished run under runs/."""
    chosen = os.environ.get(DEFAULT_MODEL_VARIABLE)
    if chosen:
        if not Path(chosen).exists():
            raise DigitsError(f"${DEFAULT_MODEL_VARIABLE} names {chosen}, which does not exist — set it to a trained "
                              "model, or pass --model")
        return Path(chosen)
    try:
        from .checkpoint import newest_checkpoint
    except ImportError:  # ONNX Runtime without PyTorch: the newest export
        exports = newest_runs_first("*/*.onnx")
        if not exports:
            raise DigitsError(f"no ONNX export under {RUNS_DIR}/ — pass --model FILE.onnx") from None
        return exports[0]

    # A run still training has a checkpoint too; only a finished one is a default.
    checkpoint = newest_checkpoint(lambda payload: bool(payload.get("finished")), ensembles=True)
    if checkpoint:
        return checkpoint
    raise DigitsError(f"no trained model under {RUNS_DIR}/ — {TRAIN_HINT}")


def load(path: str | Path | None = None, backend: str = "auto", device: str = "auto",
         precision: str = "auto") -> Classifier:
    """A fitted Classifier from a checkpoint (.pt) or an ONNX export (.onnx).

    Without a path, the default model. ``backend="onnx"`` with a checkpoint uses the ONNX
    export beside it (same name, .onnx), as `digits export` writes it. ``device`` and
    ``precision`` (auto: bf16 where the hardware computes it natively, else fp32) are the
    PyTorch backend's; ONNX Runtime computes in fp32 on the CPU.
    """
    if backend not in ("auto", "torch", "onnx"):
        raise DigitsError(f"--backend {backend}: choose auto, torch or onnx")
    path = model_file(path if path is not None else default_model())
    is_onnx = path.suffix.lower() == ".onnx"
    if is_onnx and backend == "torch":
        raise DigitsError(f"{path}: an ONNX file runs on the onnx backend — use --backend onnx")
    if not is_onnx and backend == "onnx":
        export = path.with_suffix(".onnx")
        if export.is_file() and path.is_file():
            sources = [path, *(member_checkpoints(path) if path.name == ENSEMBLE_MANIFEST else [])]
            changed = max((file for file in sources if file.is_file()), key=lambda file: file.stat().st_mtime)
            if export.stat().st_mtime < changed.stat().st_mtime:
                raise DigitsError(f"{export} is older than {changed}, which has changed since: export it again "
                                  f"with `digits export {path}`")
        path = export
    if path.suffix.lower() == ".onnx":
        engine = OnnxBackend(path)
    else:
        engine = TorchBackend(path, device, precision)
    return Classifier(model=engine.info.get("name"), dataset=engine.info.get("dataset") or "mnist", device=device,
                      precision=precision)._fitted(engine, path)


# --- the classifier ---------------------------------------------------------------

class NotTrained(DigitsError, NotFittedError):
    """A classifier used before fit(): one line for the command line, NotFittedError for scikit-learn."""


class Classifier(ClassifierMixin, BaseEstimator):
    """A digit classifier with scikit-learn's interface, for any picture of a digit.

    ``Classifier(model="fast").fit()`` trains a zoo model on MNIST with the command line's
    engine (or on given images and labels); ``digits.load(path)`` gives a fitted one. Images
    are file paths, bytes, binary files, PIL images or NumPy arrays: a 2-D array is one
    picture, an (N, 28, 28), (N, 1, 28, 28), (N, 28, 28, 1) or (N, 784) array a batch of
    MNIST-style digits (0–255 or 0–1), each inverted if it is drawn dark on light.
    """

    def __init__(self, model: str = "fast", *, dataset: str = "mnist", epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None,
                 normalize: bool | None = None, seed: int = 0, subset: int | None = None,
                 device: str = "auto", precision: str = "auto", data_dir: str | Path | None = None,
                 out: str | Path | None = None, verbose: bool = False):
        self.model = model
        self.dataset = dataset
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.normalize = normalize
        self.seed = seed
        self.subset = subset
        self.device = device
        self.precision = precision
        self.data_dir = data_dir
        self.out = out
        self.verbose = verbose

    def fit(self, X: Images | None = None, y: Sequence[int] | None = None,
            validation_data: tuple[Images, Sequence[int]] | None = None) -> Classifier:
        """Train with digits.training.train: on the dataset by default, or on X and y.

        Each epoch is validated on the dataset's test split, or, when X is given, on
        ``validation_data`` — without it, on a tenth of X held out from training.
        """
        from .training import TrainConfig, train

        config = TrainConfig(model=self.model, dataset=self.dataset, epochs=self.epochs,
                             batch_size=self.batch_size, lr=self.lr, normalize=self.normalize,
                             seed=self.seed, subset=self.subset, device=self.device,
                             precision=self.precision, data_dir=self.data_dir, out=self.out,
                             report=X is None)  # a fit on given images is a step, as in a grid search
        if X is None and (y is not None or validation_data is not None):
            raise DigitsError("y and validation_data go with X: give the images to fit on too, or none of "
                              "them to train on the dataset")
        data = None if X is None else _dataset(X, y, validation_data, config.with_defaults().seed)
        run = train(config, data, verbose=self.verbose)
        return self._fitted(TorchBackend(run.checkpoint, self.device, self.precision), run.checkpoint)

    def _fitted(self, backend: TorchBackend | OnnxBackend, source: Path) -> Classifier:
        self.backend_ = backend
        self.source_ = source
        self.classes_ = np.arange(10)
        return self

    @property
    def info(self) -> dict[str, Any]:
        """name, parameters, accuracy (test, recorded at training), trained, backend, source, …"""
        backend = self._backend()
        return {**backend.info, "backend": backend.name, "precision": backend.precision,
                "source": str(self.source_)}

    @property
    def network(self) -> Any:
        """The PyTorch module behind a classifier loaded from a checkpoint; None for an ONNX file."""
        return getattr(self._backend(), "model", None)

    def _backend(self) -> TorchBackend | OnnxBackend:
        if not hasattr(self, "backend_"):
            raise NotTrained("this Classifier is not trained yet — call fit() or use digits.load(path)")
        return self.backend_

    def prepare(self, image: Source) -> np.ndarray:
        """The picture as the model sees it: (28, 28) uint8, white digit on black."""
        return prepare(image)

    def predict_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) of digits as prepare gives them, light on dark, read as they are
        (only 0–1 or 16-bit values are scaled): (N, 28, 28), (N, 1, 28, 28) or (N, 28, 28, 1), one
        array in, no per-image work. predict and predict_proba also judge each digit's polarity."""
        batch = as_numpy(batch)
        if batch.ndim < 3 or batch.shape[1:] not in BATCH_SHAPES:
            raise DigitsError(f"expected MNIST-style digits of shape (N, 28, 28), got {batch.shape}")
        return softmax(self._backend().logits(on_255_bytes(batch.reshape(-1, FIELD, FIELD))))

    def predict_proba(self, images: Images) -> np.ndarray:
        return self.predict_prepared(prepare_all(images))

    def predict(self, images: Images) -> np.ndarray:
        return self.predict_proba(images).argmax(1)

    def read_number(self, image: Source) -> dict[str, Any]:
        """The digits of a written number, read left to right."""
        pieces = segment_number(image)
        return number_reading(pieces, self.predict_prepared(np.stack(pieces)))


def number_reading(pieces: list[np.ndarray], probabilities: np.ndarray) -> dict[str, Any]:
    """A number's reading from its digits' pictures (see segment_number) and their probabilities."""
    digits, confidences = probabilities.argmax(1), probabilities.max(1)
    # The whole number is right only if every digit is: its confidence is their product.
    return {"number": "".join(map(str, digits)), "confidence": float(np.prod(confidences, dtype=np.float64)),
            "digits": digits.tolist(), "confidences": confidences.tolist(),
            "probabilities": probabilities.tolist(), "images": pieces}


# A batch of MNIST-style digits: (N, 28, 28), (N, 1, 28, 28) as PyTorch has them, (N, 28, 28, 1) as Keras does
BATCH_SHAPES = ((FIELD, FIELD), (1, FIELD, FIELD), (FIELD, FIELD, 1))


def prepare_all(images: Images) -> np.ndarray:
    """(N, 28, 28) uint8 for any images, as the model reads them; a batch of MNIST-style digits
    is not prepared again, only scaled and, digit by digit, inverted if drawn dark on light."""
    if is_array(images):
        images = as_numpy(images)  # e.g. a torch tensor of dataset digits
    elif isinstance(images, (list, tuple)) and images and isinstance(images[0], (list, tuple)):
        try:  # nested lists of pixels (from JSON, say), as scikit-learn estimators take them
            images = np.asarray(images, dtype=np.float32)
        except (ValueError, TypeError):
            raise DigitsError("nested lists are read as pixels: give numbers in rows of equal length "
                              "(a picture, or a batch of 28 × 28 digits)") from None
    if isinstance(images, np.ndarray) and images.ndim == 2 and images.shape[1] == FIELD * FIELD:
        images = images.reshape(-1, FIELD, FIELD)  # rows of 784 pixels, as scikit-learn's mnist_784 has them
    if isinstance(images, np.ndarray) and images.shape[1:] in BATCH_SHAPES:
        return as_digits(images.reshape(-1, FIELD, FIELD))
    if isinstance(images, np.ndarray) and images.dtype.kind in "USO" and images.ndim == 1:
        images = images.tolist()  # paths (or pictures) held in an array: each its own picture
    if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)) or hasattr(images, "read"):
        images = [images]  # one picture, not a collection of them
    if not hasattr(images, "__iter__"):
        raise DigitsError(f"cannot read a {type(images).__name__} as pictures — give a picture (a path, bytes, a "
                          "binary file, a PIL image or an array), a list of them or an (N, 28, 28) batch")
    prepared = [prepare(image) for image in images]
    return np.stack(prepared) if prepared else np.empty((0, FIELD, FIELD), np.uint8)


def softmax(logits: np.ndarray) -> np.ndarray:
    return scipy.special.softmax(logits, axis=1).astype(np.float32)


def on_255_bytes(batch: np.ndarray) -> np.ndarray:
    """A batch as contiguous uint8 0–255 (a flipped view is copied): each digit in 0–1 or
    16-bit is scaled, as prepare scales one picture."""
    if batch.dtype != np.uint8:
        batch = np.clip(np.round(on_255_scale(batch, "the images")), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(batch)


def as_digits(batch: np.ndarray) -> np.ndarray:
    """MNIST-style digits (N, 28, 28) of any polarity as uint8 light on dark. Each is judged on
    its own, as prepare judges one picture: scaled as on_255_bytes scales it, and inverted if it
    is drawn dark on light (once: inverted, it reads as light on dark)."""
    batch = on_255_bytes(batch)
    # The rule prepare.ink tells ink by. None of MNIST's 70,000 digits is dark on light by it,
    # and 2 of Fashion-MNIST's 70,000 are.
    dark_on_light = ink_contrast(batch) < 0
    return np.where(dark_on_light[:, None, None], 255 - batch, batch) if dark_on_light.any() else batch


def _dataset(X: Images, y: Sequence[int] | None, validation: tuple[Images, Sequence[int]] | None,
             seed: int):
    """Given pictures and labels as a Dataset for training, prepared as for prediction.

    Without validation data a tenth of the given images is held out (chosen by the seed), so
    that every epoch is validated on digits it did not train on.
    """
    import torch

    from .data import Dataset, Split

    def split(images: Images, labels: Sequence[int] | None) -> Split:
        prepared = prepare_all(images)
        labels = np.asarray(labels if labels is not None else [])
        if labels.ndim != 1 or labels.dtype.kind not in "iuf" or not np.array_equal(labels, np.round(labels)):
            raise DigitsError(f"labels must be whole numbers 0–9, one per image; got {labels.dtype} of shape "
                              f"{labels.shape}")
        labels = labels.astype(np.int64)
        if len(labels) != len(prepared):
            raise DigitsError(f"{len(prepared)} images but {len(labels)} labels — give one label per image")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DigitsError("labels must be digits 0–9")
        return Split(torch.from_numpy(prepared), torch.from_numpy(labels))

    train = split(X, y)
    if len(train) < 2:
        raise DigitsError("give at least two labelled images to fit on")
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise DigitsError("validation_data is a pair: (images, labels)")
        return Dataset("custom", DIGIT_CLASSES, train, split(*validation))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train)))
    held_out = max(1, len(train) // 10)
    return Dataset("custom", DIGIT_CLASSES, train.take(order[held_out:]), train.take(order[:held_out]))


# --- files on the command line ------------------------------------------------------

def picture_files(path: str | Path) -> list[Path]:
    """The pictures a command-line path names: a file, a folder's pictures (all levels), a glob.
    Among many, the figures `digits explain` drew are not pictures of digits."""
    def pictures(files: Iterable[Path]) -> list[Path]:
        return sorted(f for f in files if f.suffix.lower() in PICTURES and not f.name.endswith(EXPLAINED)
                      and f.is_file())

    p = Path(path)
    if p.is_dir():
        found = pictures(p.rglob("*"))
        if not found:
            raise DigitsError(f"{path}: no pictures in this folder (looked for {', '.join(PICTURES)})")
        return found
    if p.exists() or not any(c in str(path) for c in "*?["):
        return [p]  # reading it says what is wrong, if anything
    found = pictures(map(Path, glob.glob(str(path), recursive=True)))
    if not found:
        raise DigitsError(f"{path}: no pictures match")
    return found


def predict_files(classifier: Classifier, paths: Iterable[str | Path], number: bool = False,
                  show_preprocessed: str | Path | None = None) -> Iterator[dict[str, Any]]:
    """One record per picture, in order: its reading, or {"file", "error"} if it cannot be read.

    A bad file never stops the others. ``show_preprocessed`` is a folder that receives the
    28×28 images the model saw, named after the picture's position and name; each record then
    lists its own under "preprocessed".
    """
    if show_preprocessed is not None:
        output_folder(show_preprocessed, "--show-preprocessed")
    classes = classifier.info["classes"]  # info is built afresh on each reading: once, not per picture
    index = 0
    for path in paths:
        try:
            files = picture_files(path)
        except DigitsError as e:
            yield {"file": str(path), "error": str(e)}
            continue
        for file in files:
            index += 1
            try:
                if number:
                    record = _number_record(classifier.read_number(file))
                    seen = record.pop("images")
                else:
                    digit, several = prepare_counted(file)
                    seen = [digit]
                    record = digit_record(classifier.predict_prepared(digit[None])[0], classes)
                    if several > 1:
                        record["looks_like_digits"] = several
            except DigitsError as e:
                yield {"file": str(file), "error": str(e)}
                continue
            if show_preprocessed is not None:
                names = [f"{index:04d}-{file.stem}" + (f"-{k + 1}" if number else "") for k in range(len(seen))]
                record["preprocessed"] = [str(Path(show_preprocessed) / f"{name}.png") for name in names]
                for image, written in zip(seen, record["preprocessed"]):
                    save_png(written, image)
            yield {"file": str(file), **record}


def digit_record(p: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """What `digits predict --json` says of one picture's probabilities: the digit (the class's
    number) and its class's name ("7", or "Sneaker" for Fashion-MNIST), confidence, top 3."""
    top = np.argsort(-p)[:3]
    return {"digit": int(top[0]), "class": classes[top[0]], "confidence": round(float(p[top[0]]), 6),
            "top3": [{"digit": int(d), "class": classes[d], "probability": round(float(p[d]), 6)} for d in top],
            "probabilities": [round(float(v), 6) for v in p]}


def _number_record(reading: dict[str, Any]) -> dict[str, Any]:
    return {"number": reading["number"], "confidence": round(reading["confidence"], 6),
            "digits": reading["digits"], "confidences": [round(c, 6) for c in reading["confidences"]],
            "probabilities": [[round(v, 6) for v in p] for p in reading["probabilities"]],
            "images": reading["images"]}


def save_png(path: Path, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image, "L").save(buffer, "PNG")
    atomic_write(path, buffer.getvalue())
