"""ONNX export and the ONNX Runtime backend, which predicts without PyTorch."""

from __future__ import annotations

import contextlib
import io
import logging
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import digits
from digits import DigitsError
from digits.checkpoint import save_ensemble
from digits.cli import main
from digits.export import export_onnx
from pictures import ink_on_paper


@pytest.fixture(scope="module")
def exported(learned, tmp_path_factory) -> tuple[Path, Path, str]:
    """The learned checkpoint in a run folder of its own, exported with `digits export FOLDER` beside it."""
    checkpoint = tmp_path_factory.mktemp("export") / "model.pt"
    shutil.copy(learned.checkpoint, checkpoint)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(checkpoint.parent)]) == 0
    return checkpoint, checkpoint.with_suffix(".onnx"), printed.getvalue()


def test_the_export_is_onnx_with_any_batch_size(exported):
    checkpoint, path, printed = exported
    assert printed.startswith(f"wrote {path} (ONNX opset 18, any batch size)")
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (images,), (logits,) = model.graph.input, model.graph.output
    assert images.name == "images" and logits.name == "logits"
    batch = images.type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic: any batch size
    assert [d.dim_value for d in images.type.tensor_type.shape.dim[1:]] == [1, 28, 28]
    info = json.loads({p.key: p.value for p in model.metadata_props}["digits"])
    assert info["name"] == "seed" and info["parameters"] == 65_194


def test_exporting_leaves_the_caller_s_logging_as_it_was(learned, tmp_path):
    logging.disable(logging.ERROR)
    try:
        export_onnx(learned.checkpoint, tmp_path / "quiet.onnx")
        assert logging.root.manager.disable == logging.ERROR
    finally:
        logging.disable(logging.NOTSET)


def test_onnx_and_pytorch_agree_on_the_whole_test_set(exported, mnist):
    checkpoint, path, _ = exported
    images = mnist.test.images.numpy()
    # On the CPU, as ONNX Runtime computes: a GPU's fp32 convolutions round to TF32.
    reference = digits.load(checkpoint, device="cpu", precision="fp32").predict_prepared(images)
    onnx_model = digits.load(path)
    probabilities = onnx_model.predict_prepared(images)
    assert (probabilities.argmax(1) == reference.argmax(1)).all()
    assert np.abs(probabilities - reference).max() <= 1e-4
    assert onnx_model.info["backend"] == "onnx" and onnx_model.info["name"] == "seed"
    assert onnx_model.info["accuracy"] == digits.load(checkpoint).info["accuracy"]
    for size in (1, 7, 5000):  # batch sizes the example input did not have
        assert onnx_model.predict_prepared(images[:size]).shape == (size, 10)


def test_a_model_that_reads_each_digit_twice_exports_its_averaged_reading(mnist, tmp_path):
    data = digits.Dataset(mnist.name, mnist.classes, mnist.train, mnist.test.take(slice(0, 500)))
    run = digits.train(digits.TrainConfig(model="best", epochs=1, subset=256, out=tmp_path / "best", report=False),
                       data=data, verbose=False)
    assert run.model.test_time_augment
    result = export_onnx(run.checkpoint)
    images = data.test.images.numpy()
    reference = digits.load(run.checkpoint, device="cpu", precision="fp32").predict_prepared(images)
    assert result["max_difference"] <= 1e-4
    assert np.abs(digits.load(result["onnx"]).predict_prepared(images) - reference).max() <= 1e-4


def test_backend_onnx_with_a_checkpoint_uses_its_export(exported, tmp_path):
    checkpoint, path, _ = exported
    classifier = digits.load(checkpoint, backend="onnx")
    assert classifier.info["backend"] == "onnx" and classifier.info["source"] == str(path)
    assert digits.load(checkpoint.parent, backend="onnx").info["source"] == str(path)  # the run's folder
    with pytest.MonkeyPatch.context() as environment:  # also when it is the default model
        environment.setenv("DIGITS_MODEL", str(checkpoint.parent))
        assert digits.load(backend="onnx").info["source"] == str(path)
    with pytest.raises(DigitsError, match="an ONNX file runs on the onnx backend"):
        digits.load(path, backend="torch")
    lonely = tmp_path / "model.pt"
    shutil.copy(checkpoint, lonely)
    with pytest.raises(DigitsError, match=r"model.onnx: no such ONNX file — make one with `digits export"):
        digits.load(lonely, backend="onnx")
    # A checkpoint trained on after its export is not read through the stale export.
    shutil.copy(path, tmp_path / "model.onnx")
    later = (tmp_path / "model.onnx").stat().st_mtime + 60
    os.utime(lonely, (later, later))
    with pytest.raises(DigitsError, match=r"model.onnx is older than .*model.pt, which has changed since: export"):
        digits.load(lonely, backend="onnx")
    # An ensemble's export is stale as soon as one of its members has changed.
    member = tmp_path / "member" / "model.pt"
    member.parent.mkdir()
    shutil.copy(checkpoint, member)
    save_ensemble(tmp_path / "both", [checkpoint, member], "seed")
    shutil.copy(path, tmp_path / "both" / "ensemble.onnx")
    assert digits.load(tmp_path / "both", backend="onnx").info["backend"] == "onnx"
    os.utime(member, (later, later))
    with pytest.raises(DigitsError, match=r"ensemble.onnx is older than .*member/model.pt, which has changed since"):
        digits.load(tmp_path / "both", backend="onnx")


NO_TORCH = """
import json, sys
class NoTorch:  # as if PyTorch were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
import digits
classifier = digits.load(sys.argv[1])
probabilities = classifier.predict_proba([sys.argv[2]])
try:
    digits.load(sys.argv[3])
except digits.DigitsError as e:
    error = str(e)
default = str(digits.load().info["source"])  # the newest export under runs/
print(json.dumps({"p": probabilities.tolist(), "torch": "torch" in sys.modules, "error": error, "default": default}))
"""


def test_an_onnx_model_predicts_without_pytorch(exported, mnist, tmp_path):
    checkpoint, path, _ = exported
    picture = tmp_path / "digit.png"
    ink_on_paper(mnist.test.images[0].numpy(), seed=0).save(picture)
    (tmp_path / "runs" / "fast-1").mkdir(parents=True)
    shutil.copy(path, tmp_path / "runs" / "fast-1" / "model.onnx")
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(path), str(picture), str(checkpoint)],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    result = json.loads(out.stdout)
    assert result["torch"] is False and result["default"] == str(Path("runs", "fast-1", "model.onnx"))
    np.testing.assert_allclose(result["p"], digits.load(checkpoint, precision="fp32").predict_proba(picture),
                               atol=1e-4)
    assert result["error"].endswith("a checkpoint needs PyTorch, which is not installed here"
                                    " — predict from its ONNX export instead")


@pytest.mark.parametrize("command", [["export", "runs/x"], ["evaluate", "runs/x"], ["models"]])
def test_a_command_that_needs_pytorch_says_so_where_it_is_missing(command):
    script = NO_TORCH.partition("import digits")[0] + "from digits.cli import main\nsys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == (
        f"digits: error: digits {command[0]} needs PyTorch, which is not installed here (without it, digits "
        "predicts and serves from ONNX exports) — pip install torch\n")


def test_onnx_files_that_are_not_digit_models_are_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(DigitsError, match="junk.onnx: not a readable ONNX model"):
        digits.load(tmp_path / "junk.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    other = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # any ONNX Runtime reads
    onnx.save(other, tmp_path / "other.onnx")
    with pytest.raises(DigitsError, match=r"other.onnx: not a digit classifier \(it takes tensor\(float\) of shape"):
        digits.load(tmp_path / "other.onnx")
    # The right shape, but bytes in: what our images would not fit.
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                               helper.make_node("Flatten", ["f"], ["flat"]),
                               helper.make_node("Slice", ["flat", "start", "end"], ["y"])], "g", [x], [y],
                              [helper.make_tensor("start", TensorProto.INT64, [1], [0]),
                               helper.make_tensor("end", TensorProto.INT64, [1], [10])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              tmp_path / "bytes.onnx")
    with pytest.raises(DigitsError, match=r"bytes.onnx: not a digit classifier \(it takes tensor\(uint8\)"):
        digits.load(tmp_path / "bytes.onnx")


def test_an_onnx_digit_classifier_from_another_tool_reads_digits(exported, mnist, tmp_path):
    _, path, _ = exported
    model = onnx.load(path)
    del model.metadata_props[:]  # what another exporter would leave out
    onnx.save(model, tmp_path / "theirs.onnx")
    theirs, ours = digits.load(tmp_path / "theirs.onnx"), digits.load(path)
    assert theirs.info["name"] == "theirs" and theirs.info["classes"] == list("0123456789")
    assert theirs.info["accuracy"] is None
    digits_ = mnist.test.images[:50].numpy()
    np.testing.assert_array_equal(theirs.predict(digits_), ours.predict(digits_))
    for value in (model.graph.input[0], model.graph.output[0]):  # an export that takes 4 digits at a time
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, tmp_path / "fixed.onnx")
    np.testing.assert_allclose(digits.load(tmp_path / "fixed.onnx").predict_proba(digits_[:10]),
                               ours.predict_proba(digits_[:10]), atol=1e-6)


def test_export_command_errors_are_one_line(learned, tmp_path, capsys):
    assert main(["export", str(learned.checkpoint), "--onnx", str(tmp_path / "model.txt")]) == 2
    assert capsys.readouterr().err == (f"digits: error: --onnx {tmp_path / 'model.txt'}: "
                                       "the file name must end in .onnx\n")
    assert main(["export", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err == f"digits: error: {tmp_path / 'missing.pt'}: no such checkpoint\n"
    assert not list(tmp_path.iterdir())


def test_an_onnx_classifier_pickles_with_its_model(exported, mnist, tmp_path):
    import pickle

    _, path, _ = exported
    shutil.copy(path, tmp_path / "model.onnx")
    classifier = digits.load(tmp_path / "model.onnx")
    pickled = pickle.dumps(classifier)
    (tmp_path / "model.onnx").unlink()  # the file may be gone, or another model, where it is unpickled
    copy = pickle.loads(pickled)
    digits_ = mnist.test.images[:20].numpy()
    np.testing.assert_array_equal(copy.predict_proba(digits_), classifier.predict_proba(digits_))


def test_only_a_checkpoint_has_a_pytorch_network_behind_it(exported):
    from torch import nn

    checkpoint, path, _ = exported
    assert isinstance(digits.load(checkpoint).network, nn.Module)
    assert digits.load(path).network is None
