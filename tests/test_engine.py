"""The engine: precision choice, batch layout, compilation fallback, batched augmentation,
and that bf16 mixed precision keeps a trained model's predictions."""

from __future__ import annotations

import pytest
import torch

from digits import Dataset, DigitsError, TrainConfig, train
from digits.augment import Augment
from digits.engine import (CPU_PASS_BYTES, GPU_PASS, as_batch, autocast, cpu_has_bf16, inference_batch_size,
                           maybe_compile, model_device, predict_logits, resolve_precision)
from digits.explain import integrated_gradients
from digits.models import create_model

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_it():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(DigitsError, match="--precision fp8: choose auto, bf16, fp32"):
        resolve_precision("fp8", CPU)


def test_autocast_runs_convolutions_in_bf16_only_when_asked():
    conv, x = torch.nn.Conv2d(1, 4, 3), torch.rand(2, 1, 8, 8)
    with autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert conv(x).dtype == torch.float32


def test_a_batch_is_float_channels_last_with_one_channel():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    batch = as_batch(images)
    assert batch.shape == (5, 1, 28, 28) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch[:, 0], images.float())


def test_compilation_is_off_unless_asked():
    model = torch.nn.Linear(2, 2)
    assert maybe_compile(model, False) is model
    compiled = maybe_compile(model, True)  # compiles lazily, at its first call
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule) and compiled._orig_mod is model


def test_augmentation_distorts_each_image_differently_and_reproducibly(mnist):
    batch = as_batch(mnist.train.images[:8])
    augment = Augment(rotate=10, scale=0.1, shift=2, elastic=1.5)
    torch.manual_seed(1)
    first = augment(batch)
    torch.manual_seed(1)
    assert torch.equal(first, augment(batch))
    assert first.shape == batch.shape
    assert not torch.allclose(first, batch, atol=1)
    # The ink stays roughly the same amount: a distortion, not a different picture.
    ink_ratio = first.sum((1, 2, 3)) / batch.sum((1, 2, 3))
    assert ((ink_ratio > 0.7) & (ink_ratio < 1.4)).all()


def test_augmentation_with_zero_ranges_is_the_identity(mnist):
    batch = as_batch(mnist.train.images[:4])
    assert torch.allclose(Augment(rotate=0, scale=0, shift=0, elastic=0)(batch), batch, atol=0.01)


def test_bf16_and_fp32_predictions_of_a_trained_model_agree(mnist: Dataset, tmp_path):
    run = train(TrainConfig(model="fast", subset=10_000, out=tmp_path, report=False), mnist, verbose=False)
    assert run.accuracy > 0.95
    fp32 = predict_logits(run.model, mnist.test.images).argmax(1)
    with autocast(model_device(run.model), "bf16"):  # where it trained: a GPU if there is one
        bf16 = predict_logits(run.model, mnist.test.images).argmax(1)
    assert (fp32 == bf16).float().mean() >= 0.995


def test_forward_passes_on_a_cpu_keep_the_largest_activation_cache_sized():
    seed, fast = create_model("seed"), create_model("fast")
    # seed's largest activation is its first convolution's output, 64 × 26 × 26 fp32 per image.
    assert inference_batch_size(seed, CPU) == CPU_PASS_BYTES // (64 * 26 * 26 * 4)
    assert inference_batch_size(fast, CPU) > 4 * inference_batch_size(seed, CPU)
    assert inference_batch_size(seed, torch.device("cuda")) == GPU_PASS
    assert seed.training  # measuring switched modes only for its one-image pass


def test_predictions_do_not_depend_on_the_size_of_the_forward_passes(learned):
    images = torch.randint(0, 256, (100, 28, 28), dtype=torch.uint8)
    chosen = predict_logits(learned.model, images)
    assert torch.allclose(predict_logits(learned.model, images, batch_size=7), chosen, atol=1e-5)
    assert torch.allclose(predict_logits(learned.model, images[:, None].float()), chosen, atol=1e-5)


def test_a_failed_prediction_or_explanation_leaves_a_training_model_training():
    model = create_model("fast").train()
    with pytest.raises(RuntimeError):
        predict_logits(model, torch.zeros(4, 20, 20, dtype=torch.uint8))
    assert model.training
    with pytest.raises(IndexError):
        integrated_gradients(model, torch.zeros(28, 28), target=12)
    assert model.training
