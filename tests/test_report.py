"""The run report: written by every training run, self-contained, its numbers those of
`digits evaluate`, readable in a browser; run comparison; TensorBoard logging."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digits import Dataset, Run, TrainConfig, train
from digits.checkpoint import save_ensemble
from digits.cli import main
from digits.evaluation import calibration
from digits.plots import comparison_figure, curves_figure, png
from digits.report import compare_runs

SECTIONS = ["configuration", "curves", "metrics", "confusion", "mistakes", "calibration", "filters",
            "feature-maps", "saliency"]
CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """What a test needs from the report: section ids, every link and picture, the metrics."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: list[str] = []
        self.references: list[str] = []  # every src and href
        self.pictures: dict[str, int] = {}  # <img> elements in each section
        self.metrics: dict | None = None
        self._in_metrics = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self.sections.append(attributes["id"])
            self.pictures[attributes["id"]] = 0
        if tag == "img" and self.sections:
            self.pictures[self.sections[-1]] += 1
        self.references += [value for name, value in attrs if name in ("src", "href") and value is not None]
        self._in_metrics = tag == "script" and attributes.get("id") == "metrics-data"

    def handle_data(self, data: str) -> None:
        if self._in_metrics:
            self.metrics = json.loads(data)
            self._in_metrics = False


@pytest.fixture(scope="module")
def small(make_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MNIST-format folder of 3,000 training and 1,000 test digits, so every evaluation is quick."""
    return make_dataset(tmp_path_factory.mktemp("small"), train=3000, test=1000)


@pytest.fixture(scope="module")
def run(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A tiny seed run (2 epochs on 2,000 digits) that also logs to TensorBoard; it writes its report."""
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="seed", dataset="small", data_dir=small, epochs=2, subset=2000, out=folder / "seed",
                         tensorboard=folder / "tensorboard")
    return train(config, verbose=False)


@pytest.fixture(scope="module")
def page(run: Run) -> Page:
    return Page((run.folder / "report.html").read_text())


def test_training_writes_a_report_with_every_section(page: Page) -> None:
    assert page.sections == SECTIONS


def test_every_picture_is_embedded_and_decodes(page: Page) -> None:
    # the 12 most confident mistakes; the input and two layers' feature maps; one figure elsewhere
    assert page.pictures == {"configuration": 0, "curves": 1, "metrics": 0, "confusion": 1, "mistakes": 12,
                             "calibration": 1, "filters": 1, "feature-maps": 3, "saliency": 1}
    pictures = [r for r in page.references if r.startswith("data:")]
    assert len(pictures) == sum(page.pictures.values())
    for picture in pictures:
        assert picture.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(picture.split(",", 1)[1], validate=True))) as image:
            image.load()
            assert min(image.size) > 0


def test_the_report_needs_nothing_outside_it(run: Run, page: Page) -> None:
    assert all(r.startswith(("data:", "#")) for r in page.references)
    outside_pictures = re.sub(r'"data:[^"]*"', '""', (run.folder / "report.html").read_text())
    assert not re.search(r"https?:|//|url\(|@import", outside_pictures), "the report must open offline"
    assert {r[1:] for r in page.references if r.startswith("#")} == set(SECTIONS)


def test_the_numbers_are_those_of_digits_evaluate(run: Run, small: Path, page: Page, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(run.checkpoint), "--data-dir", str(small), "--json", "--out", str(tmp_path)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "loss", "count", "per_class", "confusion"):
        assert page.metrics[key] == evaluated[key], key
    # …and the page shows them, not just carries them.
    text = (run.folder / "report.html").read_text()
    assert f"<b>{evaluated['accuracy']:.2%}</b>" in text
    per_class = evaluated["per_class"]
    for k, name in enumerate(evaluated["classes"]):
        cells = [name, *(f"{per_class[m][k]:.4f}" for m in ("precision", "recall", "f1")), per_class["support"][k]]
        assert "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" in text, name


def test_the_best_epoch_is_marked_but_the_result_is_the_last(run: Run) -> None:
    text = " ".join((run.folder / "report.html").read_text().split())
    best = max(run.history, key=lambda h: h["val_accuracy"])
    assert f"(epoch {best['epoch']}, {best['val_accuracy']:.2%})" in text
    assert f"its last epoch ({run.history[-1]['val_accuracy']:.2%})" in text
    assert "nothing is chosen by test accuracy" in text


def test_the_configuration_and_environment_are_recorded(run: Run) -> None:
    text = (run.folder / "report.html").read_text()
    for expected in ("<td>model</td><td>seed</td>", "<td>training images</td><td>first 2,000</td>",
                     "<td>epochs</td><td>2 of 2</td>", f"<td>torch</td><td>{torch.__version__}</td>",
                     "<td>parameters</td><td>65,194</td>", "<td>lr</td><td>0.001</td>"):
        assert expected in text, expected


def test_the_report_command_writes_where_asked(run: Run, small: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "elsewhere" / "seed.html"
    assert main(["report", str(run.checkpoint), "--out", str(out), "--data-dir", str(small)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert Page(out.read_text()).sections == SECTIONS


def test_bad_input_is_one_line_and_loses_nothing(run: Run, small: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"digits: error: {tmp_path}: no model.pt here — give a run folder written by "
                                       "`digits train`\n")
    before = (run.folder / "report.html").read_bytes()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["report", str(run.folder), "--out", str(blocker / "report.html"), "--data-dir", str(small)]) == 2
    error = capsys.readouterr().err
    assert error == (f"digits: error: --out {blocker / 'report.html'}: {blocker} is a file, not a folder — choose "
                     "another place\n")
    assert (run.folder / "report.html").read_bytes() == before
    # --out names an HTML page: never the run's checkpoint, nor any other kind of file
    checkpoint = run.checkpoint.read_bytes()
    assert main(["report", str(run.folder), "--out", str(run.checkpoint), "--data-dir", str(small)]) == 2
    assert capsys.readouterr().err == (f"digits: error: --out {run.checkpoint}: the report is an HTML page; "
                                       "give a file name ending in .html\n")
    assert run.checkpoint.read_bytes() == checkpoint
    # An ensemble has no history of its own: the error names a member's run folder.
    save_ensemble(tmp_path / "ensemble", [run.checkpoint], "seed")
    for given in ("ensemble", "ensemble/ensemble.json"):
        assert main(["report", str(tmp_path / given)]) == 2
        assert capsys.readouterr().err == (f"digits: error: {tmp_path / 'ensemble'}: an ensemble — give one of its "
                                           f"members' run folders, e.g. {run.folder}\n")


def test_calibration_error() -> None:
    labels = np.array([0, 1, 2, 3])
    sure_and_right = np.eye(10)[labels]
    assert calibration(sure_and_right, labels)[3] == 0
    sure_half_wrong = np.eye(10)[[0, 1, 5, 5]]
    confidence, accuracy, counts, ece = calibration(sure_half_wrong, labels)
    assert ece == pytest.approx(0.5)
    assert counts[-1] == 4 and accuracy[-1] == 0.5 and confidence[-1] == 1.0
    # 60% sure and right 60% of the time: calibrated, whatever the bin.
    hedged = np.full((5, 10), 0.4 / 9)
    hedged[:, 0] = 0.6
    assert calibration(hedged, np.array([0, 0, 0, 1, 2]))[3] == pytest.approx(0, abs=1e-12)


def test_a_run_can_skip_its_report(mnist: Dataset, tmp_path: Path) -> None:
    data = Dataset(mnist.name, mnist.classes, mnist.train, mnist.test.take(slice(0, 100)))
    run = train(TrainConfig(epochs=1, subset=64, out=tmp_path, report=False), data=data, verbose=False)
    assert run.checkpoint.is_file() and not (tmp_path / "report.html").exists()


def test_a_holdout_run_says_what_validated_it(small: Path, tmp_path: Path, capsys) -> None:
    train(TrainConfig(dataset="small", data_dir=small, epochs=1, holdout=500, subset=500, out=tmp_path))
    assert ": 500 images (500 held out to validate), 1 epoch," in capsys.readouterr().out
    text = " ".join((tmp_path / "report.html").read_text().split())
    assert "Validation is the last 500 training images, held out" in text
    assert "<td>training images</td><td>first 500 of all but the last 500</td>" in text
    # beside a run validated on the test set, compare says which set each accuracy comes from
    tested = train(TrainConfig(dataset="small", data_dir=small, epochs=1, subset=500, out=tmp_path / "tested",
                               report=False), verbose=False)
    rows = compare_runs([tmp_path, tested.folder], tmp_path / "compare.png")
    assert [(row["dataset"], row["validation"]) for row in rows] == [("small", "500 held out"), ("small", "test set")]
    assert Page((tmp_path / "report.html").read_text()).metrics["count"] == 1000  # and the test set is reported


def test_a_run_stopped_by_its_test_accuracy_is_not_called_unchosen(small: Path, tmp_path: Path) -> None:
    train(TrainConfig(dataset="small", data_dir=small, epochs=2, subset=500, target_accuracy=0.01, out=tmp_path),
          verbose=False)
    text = " ".join((tmp_path / "report.html").read_text().split())
    assert "(target accuracy 0.01 reached): the test set chose its length, so its test accuracy flatters it" in text
    assert "nothing is chosen by test accuracy" not in text


def test_training_loss_under_label_smoothing_is_explained_and_one_epoch_marks_no_best(small: Path,
                                                                                     tmp_path: Path) -> None:
    run = train(TrainConfig(model="fast", dataset="small", data_dir=small, subset=500, out=tmp_path), verbose=False)
    text = " ".join((tmp_path / "report.html").read_text().split())
    assert ("training is also measured against targets smoothed by label smoothing 0.1, which keeps its loss "
            "above 0.50 (the dotted line)") in text
    assert "One epoch: the curves need more than one to show a trend." in text
    assert "The run's result is its last epoch — nothing is chosen by test accuracy." in text
    assert "dashed line" not in text and "no sign of overfitting" not in text
    for setting, written in (("betas", "0.9, 0.95"), ("augment", "none"), ("normalize", "yes")):  # not Python's
        assert f"<tr><td>{setting}</td><td>{written}</td></tr>" in text
    # The curves.png training wrote is the figure with the floor drawn, not without it.
    written = (tmp_path / "curves.png").read_bytes()
    assert written == png(curves_figure(run.history, label_smoothing=0.1)) != png(curves_figure(run.history))
    loss_axis = curves_figure(run.history, label_smoothing=0.1).axes[1]
    assert [line.get_ydata()[0] for line in loss_axis.get_lines() if line.get_linestyle() == ":"] == [
        pytest.approx(-0.91 * np.log(0.91) - 9 * 0.01 * np.log(0.01))]  # the targets' entropy
    assert not [line for line in curves_figure(run.history).axes[1].get_lines() if line.get_linestyle() == ":"]


def test_compare_two_runs(run: Run, learned: Run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare.png"
    rows = compare_runs([run.folder, learned.folder], out)
    assert [r["run"] for r in rows] == [str(run.folder), str(learned.folder)]
    for row, compared in zip(rows, (run, learned)):
        assert row["accuracy"] == compared.history[-1]["val_accuracy"]
        assert row["epochs"] == len(compared.history)
        assert row["seconds"] == pytest.approx(sum(h["seconds"] for h in compared.history))
        assert row["parameters"] == 65_194
    with Image.open(out) as figure:
        assert figure.size[0] > 600

    # A run's checkpoint stands for its run, as in the other commands.
    assert main(["compare", str(run.checkpoint), str(learned.folder), "--out", str(tmp_path / "cli.png")]) == 0
    printed = capsys.readouterr().out
    assert f"{run.accuracy:.2%}" in printed and f"{learned.accuracy:.2%}" in printed
    assert (tmp_path / "cli.png").is_file()


def test_names_are_drawn_as_written(run: Run, tmp_path: Path) -> None:
    """Matplotlib reads text between two $ as a formula: a run named so once failed to draw."""
    priced = tmp_path / "lr_$1e-3_$"
    shutil.copytree(run.folder, priced)
    compare_runs([run.folder, priced], tmp_path / "compare.png")
    legend = comparison_figure({str(priced): run.history}).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [str(priced)]
    assert not any(t.get_parse_math() for t in legend.get_texts())


def test_one_epoch_is_one_tick() -> None:
    one = [{"epoch": 1, "train_accuracy": 0.9, "val_accuracy": 0.91, "train_loss": 0.3, "val_loss": 0.28}]
    for figure in (curves_figure(one), comparison_figure({"run": one})):
        figure.canvas.draw()
        assert [tick for tick in figure.axes[0].get_xticks() if 0 < tick < 2] == [1]


def test_figures_leave_the_plotting_backend_alone() -> None:
    """A notebook's inline plots survive `import digits.plots`: figures are made without pyplot."""
    chosen = subprocess.run([sys.executable, "-c", "import matplotlib; matplotlib.use('svg'); "
                             "import matplotlib.pyplot, digits.plots; print(matplotlib.get_backend())"],
                            capture_output=True, text=True, check=True).stdout
    assert chosen.strip() == "svg"


def test_compare_refuses_what_is_not_a_run(run: Run, learned: Run, tmp_path: Path, capsys) -> None:
    for again in (run.folder, run.checkpoint, f"{run.folder}/."):
        assert main(["compare", str(run.folder), str(again), "--out", str(tmp_path / "c.png")]) == 2
        assert f"{again} is given twice" in capsys.readouterr().err
    assert main(["compare", str(run.folder), str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "no model.pt here" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
    checkpoint = run.checkpoint.read_bytes()
    assert main(["compare", str(run.folder), str(learned.folder), "--out", str(run.checkpoint)]) == 2
    assert "the comparison is a PNG picture; give a file name ending in .png" in capsys.readouterr().err
    assert run.checkpoint.read_bytes() == checkpoint


def test_tensorboard_gets_scalars_and_images(run: Run) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(run.folder.parent / "tensorboard"))
    events.Reload()
    for metric in ("loss", "accuracy"):
        for side, key in (("train", f"train_{metric}"), ("validation", f"val_{metric}")):
            logged = events.Scalars(f"{metric}/{side}")
            assert [e.step for e in logged] == [1, 2]
            assert [e.value for e in logged] == pytest.approx([h[key] for h in run.history], rel=1e-6)
    assert {"training digits", "confusion matrix"} <= set(events.Tags()["images"])


def test_the_report_renders_in_a_browser(run: Run, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium here (apt-get install chromium); CI installs it")
    screenshot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
                    f"--screenshot={screenshot}", (run.folder / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2400)
        pixels = np.asarray(image.convert("L"), dtype=float)
    # Text and plots, not a blank or an error page: dark ink on much of the page's height.
    inked_rows = (pixels < 100).any(axis=1).mean()
    assert inked_rows > 0.3


def test_on_a_phone_figures_keep_their_size_and_scroll_inside_the_page(run: Run) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium here (apt-get install chromium); CI installs it")
    measure = """() => ({page: document.documentElement.scrollWidth,
        figures: [...document.querySelectorAll('img.figure')].map(i => [i.width, i.naturalWidth])})"""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 400, "height": 800})
            page.goto((run.folder / "report.html").resolve().as_uri())
            phone = page.evaluate(measure)
            page.set_viewport_size({"width": 1280, "height": 800})
            desktop = page.evaluate(measure)
        finally:
            browser.close()
    figures = (run.folder / "report.html").read_text().count('<img class="figure"')
    assert phone["page"] == 400 and len(phone["figures"]) == figures >= 7  # the page itself never scrolls sideways
    assert all(shown == natural > 400 for shown, natural in phone["figures"])  # labels stay readable
    assert desktop["page"] == 1280 and all(shown <= 1000 for shown, _ in desktop["figures"])  # fitted to the column
