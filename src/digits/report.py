"""What a run did, on one page: a self-contained HTML report, and the comparison of runs.

The report is computed from a run folder's checkpoint and its dataset's test split. Its
metrics come from `evaluation.evaluate`, so they are the numbers `digits evaluate` prints.
Pictures are embedded as data URIs: the file opens offline and can be passed around alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from torch import nn

from .checkpoint import load_checkpoint, load_model
from .data import Dataset, load_dataset
from .engine import resolve_device
from .errors import DigitsError
from .evaluation import Evaluation, evaluate
from .explain import feature_maps, first_layer_weights, integrated_gradients
from .files import ENSEMBLE_MANIFEST, REPORT_NAME, RUN_CHECKPOINT, member_checkpoints, output_file, write_output
from .plots import (comparison_figure, confusion_figure, curves_figure, explanation_figure, picture_grid, png,
                    reliability_figure, short_percent, smoothed_loss_floor)

MISTAKES = 12  # the most confident mistakes shown with their top-3 probabilities
EXPLAINED_EACH = 3  # correct predictions and mistakes each, explained with saliency maps


def write_report(run_dir: str | Path, out: str | Path | None = None, *, data: Dataset | None = None,
                 data_dir: str | Path | None = None, device: str = "auto") -> Path:
    """Write the HTML report of a run (default ``RUN_DIR/report.html``) and return its path."""
    run_dir = _run_folder(run_dir)
    out = output_file(out, ".html", "the report is an HTML page") if out else run_dir / REPORT_NAME
    model, payload = load_model(_checkpoint_path(run_dir))
    data = data or load_dataset(payload.get("dataset", "mnist"), data_dir)
    result = evaluate(model.to(resolve_device(device)), data.test_split("report on"))
    write_output(out, render(run_dir, payload, model, data, result).encode())
    return out


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path = "compare.png") -> list[dict[str, Any]]:
    """One row per run (its dataset, what validated it, accuracy, loss, training time,
    parameters) and a figure of their curves."""
    out = output_file(out, ".png", "the comparison is a PNG picture")
    histories: dict[str, list[dict[str, Any]]] = {}
    rows, seen = [], set()
    for run_dir in run_dirs:
        name, checkpoint = str(run_dir), _checkpoint_path(_run_folder(run_dir))
        if checkpoint.resolve() in seen:  # also as its folder and its model.pt, or through ./
            raise DigitsError(f"{name} is given twice — name each run once")
        seen.add(checkpoint.resolve())
        payload = load_checkpoint(checkpoint)
        history = payload.get("history") or []
        if not history:
            raise DigitsError(f"{name}: the run has no finished epoch yet — train it first")
        histories[name] = history
        holdout = payload.get("config", {}).get("holdout")
        rows.append({"run": name, "model": payload["model"], "dataset": payload.get("dataset", "mnist"),
                     "validation": f"{holdout:,} held out" if holdout else "test set", "epochs": len(history),
                     "accuracy": history[-1]["val_accuracy"], "loss": history[-1]["val_loss"],
                     "seconds": sum(h["seconds"] for h in history), "parameters": payload.get("parameters", 0)})
    write_output(out, png(comparison_figure(histories)))
    return rows


def _run_folder(path: str | Path) -> Path:
    """A run's folder, also when given as its checkpoint (or manifest), as the other commands take it."""
    path = Path(path)
    return path.parent if path.name in (RUN_CHECKPOINT, ENSEMBLE_MANIFEST) and path.is_file() else path


def _checkpoint_path(run_dir: Path) -> Path:
    if (run_dir / ENSEMBLE_MANIFEST).is_file():
        first = member_checkpoints(run_dir)[0].parent
        raise DigitsError(f"{run_dir}: an ensemble — give one of its members' run folders, e.g. {first}")
    if not (run_dir / RUN_CHECKPOINT).is_file():
        raise DigitsError(f"{run_dir}: no {RUN_CHECKPOINT} here — give a run folder written by `digits train`")
    return run_dir / RUN_CHECKPOINT


# --- the page ----------------------------------------------------------------------

def render(run_dir: Path, payload: dict[str, Any], model: nn.Module, data: Dataset, result: Evaluation) -> str:
    """The report as one HTML document."""
    history = payload.get("history") or []
    calibration = result.calibration()
    metrics = {**result.as_dict(), "ece": calibration[3]}
    images = data.test.images.numpy()
    sections = [
        ("configuration", "Configuration and environment", _configuration(payload)),
        ("curves", "Training curves", _curves(history, payload.get("config", {}).get("holdout"),
                                              payload.get("stopped"), payload.get("recipe", {}))),
        ("metrics", "Test metrics", _metrics(metrics, data.classes)),
        ("confusion", "Confusion matrix", _confusion(result, data.classes)),
        ("mistakes", "Most confident mistakes", _mistakes(images, result, data.classes)),
        ("calibration", "Calibration", _calibration(*calibration)),
        ("filters", "First-layer filters", _filters(model)),
        ("feature-maps", "Feature maps", _feature_maps(model, images[0], data.classes[result.labels[0]])),
        ("saliency", "Saliency", _saliency(model, images, result, data.classes)),
    ]
    title = f"{payload['model']} on {data.name} — {run_dir.name}"
    contents = "".join(f'<a href="#{key}">{heading}</a>' for key, heading, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{heading}</h2>{content}</section>'
                   for key, heading, content in sections)
    metrics_json = json.dumps(metrics).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><header><h1>{html.escape(title)}</h1>
<p class="headline">Test accuracy <b>{result.accuracy:.2%}</b> · loss {result.loss:.4f} on
{len(result.labels):,} test images · {payload.get('parameters', 0):,} parameters ·
trained {_duration(sum(h['seconds'] for h in history))} on {html.escape(str(payload.get('device', '?')))}</p>
<nav>{contents}</nav></header>
{body}
<script type="application/json" id="metrics-data">{metrics_json}</script>
</body></html>
"""


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2330; background: #f6f7f9; margin: 0; }
header, section { max-width: 1000px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; padding-bottom: 8px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; margin-bottom: 20px;
          padding-bottom: 16px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 18px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.headline { font-size: 16px; margin: 4px 0 10px; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; }
nav a { color: #2457a6; text-decoration: none; }
p.note { color: #4a5263; font-size: 14px; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e3e6eb; padding: 4px 10px; text-align: right; }
th { background: #f0f2f5; }
td:first-child, th:first-child { text-align: left; }
.columns { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
.columns > * { min-width: 0; max-width: 100%; }
img.figure { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.wide { overflow-x: auto; }
/* On a phone a figure shrunk to the screen has unreadable labels: keep its own size and scroll it. */
@media (max-width: 700px) { img.figure { max-width: none; } header, section { padding: 0 12px; } }
.mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; }
.mistake { margin: 0; border: 1px solid #e3e6eb; border-radius: 6px; padding: 6px; font-size: 13px; }
.mistake img, img.digit { width: 84px; height: 84px; image-rendering: pixelated; display: block; }
.mistake td { padding: 0 6px; border: 0; }
.mistake .true { color: #1a7f37; font-weight: 600; }
"""


def _image(data: bytes, alt: str, css: str = "figure") -> str:
    return (f'<img class="{css}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')


def _figure(figure, alt: str) -> str:
    return f'<div class="wide">{_image(png(figure), alt)}</div>'


def _digit(image: np.ndarray, alt: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return _image(buffer.getvalue(), alt, "digit")


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header or ())
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_plain(v))}</td>" for v in row) + "</tr>" for row in rows)
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<div class="wide"><table>{head}<tbody>{body}</tbody></table></div>'


def _plain(value: Any) -> str:
    """A setting as a reader writes it, not as Python prints it: none, yes, 0.9, 0.95, rotate 10."""
    if value is None or isinstance(value, bool):
        return {None: "none", True: "yes", False: "no"}[value]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_plain, value))
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(v)}" for key, v in value.items())
    return str(value)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _configuration(payload: dict[str, Any]) -> str:
    history = payload.get("history") or []
    config, recipe = payload.get("config", {}), payload.get("recipe", {})
    status = payload.get("stopped") or ("" if payload.get("finished") else "unfinished")
    epochs = f"{len(history)} of {recipe.get('epochs', '?')}" + (f" ({status})" if status else "")
    run = [("model", payload["model"]), ("dataset", payload.get("dataset", "?")),
           ("parameters", f"{payload.get('parameters', 0):,}"), ("epochs", epochs),
           ("training images", _training_images(config)),
           ("seed", config.get("seed", "?")), ("device", payload.get("device", "?")),
           ("started", payload.get("started", "?")), ("last saved", payload.get("saved", "?")),
           ("training time", _duration(sum(h["seconds"] for h in history)) + " (the epochs alone)")]
    if payload.get("started") and payload.get("saved"):
        elapsed = datetime.fromisoformat(payload["saved"]) - datetime.fromisoformat(payload["started"])
        run.append(("wall-clock time", _duration(elapsed.total_seconds()) + " (with evaluation and saving)"))
    environment = payload.get("environment") or {"recorded": "no (a checkpoint from an older digits)"}
    return ('<div class="columns">'
            f"<div><h3>Run</h3>{_table(None, run)}</div>"
            f"<div><h3>Recipe</h3>{_table(None, recipe.items())}</div>"
            f"<div><h3>Environment</h3>{_table(None, environment.items())}</div></div>")


def _training_images(config: dict[str, Any]) -> str:
    subset, holdout = config.get("subset"), config.get("holdout")
    if holdout:
        return f"first {subset:,} of all but the last {holdout:,}" if subset else f"all but the last {holdout:,}"
    return f"first {subset:,}" if subset else "all"


def _curves(history: list[dict[str, Any]], holdout: int | None, stopped: str | None,
            recipe: dict[str, Any]) -> str:
    if not history:
        return "<p>No epoch has finished yet.</p>"
    best = max(history, key=lambda h: h["val_accuracy"])
    validation = f"the last {holdout:,} training images, held out" if holdout else "the test set"
    last, lowest = history[-1], min(history, key=lambda h: h["val_loss"])
    if len(history) == 1:
        overfitting = "One epoch: the curves need more than one to show a trend."
    elif lowest is last:
        overfitting = "Validation loss was lowest at the last epoch: no sign of overfitting yet."
    else:
        overfitting = (f"Validation loss was lowest at epoch {lowest['epoch']} ({lowest['val_loss']:.4f}) and "
                       f"ended at {last['val_loss']:.4f} while training loss went from {lowest['train_loss']:.4f}"
                       f" to {last['train_loss']:.4f}. A widening gap between the training and validation"
                       " curves is overfitting: the model fits its training images better than new ones.")
    if not holdout and (stopped or "").startswith("target accuracy"):
        chosen = (f"but this run stopped when its test accuracy reached the target ({stopped}): the test set"
                  " chose its length, so its test accuracy flatters it; --holdout watches held-out digits instead")
    else:
        chosen = "nothing is chosen by test accuracy"
    smoothing = recipe.get("label_smoothing") or 0.0
    harder = []
    if smoothing:
        harder.append(f"against targets smoothed by label smoothing {smoothing:g}, which keeps its loss above "
                      f"{smoothed_loss_floor(smoothing):.2f} (the dotted line) however well the model reads")
    if recipe.get("augment"):
        harder.append("on randomly distorted digits, harder than the plain ones validated on")
    training = "; training is also measured " + " and ".join(harder) if harder else ""
    marked = len(history) > 1  # with one epoch, the best epoch is the only one
    result = (f"The dashed line marks the epoch with the highest validation accuracy (epoch {best['epoch']}, "
              f"{best['val_accuracy']:.2%}) for information only: recipes are fixed schedules, and the run's "
              f"result is its last epoch ({last['val_accuracy']:.2%})" if marked else
              "The run's result is its last epoch")
    return (_figure(curves_figure(history, best["epoch"] if marked else None, smoothing),
                    "accuracy and loss per epoch, training and validation")
            + f"""<p>{overfitting}</p>
<p class="note">Validation is {validation}, measured after each epoch; training figures are averages
over the epoch while the weights change, so early on they trail the validation ones{training}.
{result} — {chosen}.</p>""")


def _metrics(metrics: dict[str, Any], classes: Sequence[str]) -> str:
    per_class = metrics["per_class"]
    rows = [(name, *(f"{per_class[k][i]:.4f}" for k in ("precision", "recall", "f1")), per_class["support"][i])
            for i, name in enumerate(classes)]
    summary = [("accuracy", f"{metrics['accuracy']:.4f}"), ("loss", f"{metrics['loss']:.4f}"),
               ("images", f"{metrics['count']:,}"), ("expected calibration error", f"{metrics['ece']:.4f}")]
    return (f'<div class="columns"><div>{_table(("class", "precision", "recall", "F1", "support"), rows)}</div>'
            f'<div>{_table(("test set", ""), summary)}</div></div>'
            '<p class="note">Precision: of the images predicted as the class, the share that are. Recall: of the '
            "images of the class, the share found. F1: their harmonic mean. The same numbers as "
            "<code>digits evaluate</code>.</p>")


def _confusion(result: Evaluation, classes: Sequence[str]) -> str:
    return (_figure(confusion_figure(result.confusion(), classes), "confusion matrix")
            + '<p class="note">Row: the true class; column: the predicted one. Off the diagonal are the mistakes.</p>')


def _mistakes(images: np.ndarray, result: Evaluation, classes: Sequence[str]) -> str:
    p, predictions = result.probabilities, result.predictions
    wrong = result.confident_mistakes()[:MISTAKES]
    if not len(wrong):
        return "<p>No mistakes on the test set.</p>"
    cards = []
    for i in wrong:
        top3 = np.argsort(-p[i])[:3]
        rows = "".join(f'<tr{" class=true" if k == result.labels[i] else ""}><td>{html.escape(classes[k])}</td>'
                       f"<td>{html.escape(short_percent(p[i, k]))}</td></tr>" for k in top3)
        cards.append(f'<figure class="mistake">{_digit(images[i], f"test image {i}")}'
                     f"<figcaption>test #{i} · true <b>{html.escape(classes[result.labels[i]])}</b>"
                     f"<table>{rows}</table></figcaption></figure>")
    return (f'<p>{(predictions != result.labels).sum():,} of {len(predictions):,} test images are misclassified; '
            f"the {len(wrong)} the model was surest of, with its three most probable classes "
            '(the true class in green when it is among them):</p>'
            f'<div class="mistakes">{"".join(cards)}</div>')


def _calibration(confidence: np.ndarray, accuracy: np.ndarray, counts: np.ndarray, ece: float) -> str:
    return (_figure(reliability_figure(confidence, accuracy, counts, ece), "reliability diagram")
            + f"""<p class="note">Test images grouped by the model's confidence (its top probability). A
calibrated model is right 90% of the time when it says 90%: its bars reach the diagonal. The expected
calibration error, {ece:.4f}, is the gap between confidence and accuracy averaged over all images;
bars below the diagonal mean over-confidence.</p>""")


def _filters(model: nn.Module) -> str:
    weights = first_layer_weights(model)
    if weights is None:
        return "<p>The first layer is neither a convolution nor a dense layer on the pixels.</p>"
    shape = "×".join(map(str, weights.shape[1:]))
    return (_figure(picture_grid(weights[:64], f"first layer: {min(len(weights), 64)} of {len(weights)} units, "
                                 f"{shape} weights each", cmap="RdBu_r", symmetric=True), "first-layer weights")
            + '<p class="note">What the first layer looks for: each square is one unit\'s weights on the pixels '
            "(red positive, blue negative, one scale for all). Units of a convolution slide over the image "
            "and respond to edges and strokes in these directions.</p>")


def _feature_maps(model: nn.Module, image: np.ndarray, label: str) -> str:
    maps = feature_maps(model, image)
    if not maps:
        return "<p>This model has no convolutional layers.</p>"
    figures = "".join(
        _figure(picture_grid(m[:64], f"convolution {k} (layer {name}): {min(len(m), 64)} of {len(m)} maps, "
                             f"{m.shape[1]}×{m.shape[2]} each"),
                f"feature maps of convolution {k}")
        for k, (name, m) in enumerate(maps, 1))
    return (f'<div class="columns"><div>{_digit(image, "the sample digit")}</div>'
            f'<p class="note">The first test image, labelled {html.escape(label)}, as each convolution sees it: one map per '
            "channel, brighter where the channel's pattern is present (each map on its own scale, before "
            "the activation). Early maps follow strokes; later ones are coarser and more abstract.</p></div>"
            + figures)


def _saliency(model: nn.Module, images: np.ndarray, result: Evaluation, classes: Sequence[str]) -> str:
    p, predictions, labels = result.probabilities, result.predictions, result.labels
    chosen = [*np.flatnonzero(predictions == labels)[:EXPLAINED_EACH],
              *result.confident_mistakes()[:EXPLAINED_EACH]]
    titles = [f"test #{i}: true {classes[labels[i]]}, predicted {classes[predictions[i]]} "
              f"({short_percent(p[i, predictions[i]])})" for i in chosen]
    saliencies = [integrated_gradients(model, images[i]) for i in chosen]
    figure = explanation_figure([images[i] for i in chosen], saliencies, p[chosen], classes, titles)
    return (_figure(figure, "saliency maps")
            + '<p class="note">Integrated gradients: how much each pixel moved the score of the predicted class, '
            "from a blank image to this one. Red pixels speak for the prediction, blue ones against it. The first "
            "rows are correct predictions, the last ones the most confident mistakes.</p>")
