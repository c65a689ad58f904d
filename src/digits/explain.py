"""Looking inside a model: which pixels a prediction rests on, what each layer computes, what
the first layer learned.

The analyses take a prepared image — 28×28, white ink on black, 0–255, as MNIST — and a torch
model from the zoo (raw pixels in, logits out); `explain_picture` goes all the way from a
picture file to a drawing of its explanation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine import eval_mode, model_device
from .errors import DigitsError
from .files import EXPLAINED, output_file, write_output
from .mnist import FIELD
from .plots import explanation_figure, png


def _batch(model: nn.Module, image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image as the (1, 1, 28, 28) float tensor the model takes, on the model's device."""
    return torch.as_tensor(np.asarray(image), dtype=torch.float32, device=model_device(model)).reshape(1, 1, FIELD, FIELD)


def integrated_gradients(model: nn.Module, image: np.ndarray | torch.Tensor, target: int | None = None,
                         steps: int = 32) -> np.ndarray:
    """How much each pixel moved the logit of ``target`` (default: the predicted class), (28, 28).

    Integrated gradients (Sundararajan et al., 2017): the gradient averaged along the straight
    path from a black image — MNIST's empty background — to the digit, times the pixel. The
    attributions add up to the logit's change along that path, so they are in logit units:
    positive pixels speak for the class, negative ones against it.
    """
    x = _batch(model, image)
    with eval_mode(model):
        if target is None:
            with torch.no_grad():
                target = int(model(x).argmax())
        alphas = (torch.arange(steps, device=x.device, dtype=torch.float32) + 0.5) / steps  # midpoint rule
        with torch.enable_grad():
            path = (alphas.view(-1, 1, 1, 1) * x).requires_grad_()
            (gradients,) = torch.autograd.grad(model(path)[:, target].sum(), path)
    return (x * gradients.mean(0, keepdim=True))[0, 0].cpu().numpy()


@torch.no_grad()
def feature_maps(model: nn.Module, image: np.ndarray | torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """Each convolution's output for one image, in the order they run: (layer name, (C, H, W))."""
    names = {module: name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    maps: list[tuple[str, np.ndarray]] = []

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        maps.append((names[module], output[0].cpu().numpy().copy()))  # an in-place ReLU overwrites it next

    hooks = [module.register_forward_hook(keep) for module in names]
    try:
        with eval_mode(model):
            model(_batch(model, image))
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def first_layer_weights(model: nn.Module) -> np.ndarray | None:
    """The first layer's weights as pictures, (units, H, W): a convolution's kernels, or a dense
    layer's weights on the 28×28 pixels; None when the first layer is neither."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().mean(1).cpu().numpy()  # a grey image has one input channel
        if isinstance(module, nn.Linear):
            if module.in_features != FIELD * FIELD:
                return None
            return module.weight.detach().reshape(-1, FIELD, FIELD).cpu().numpy()
    return None


def explain_picture(path: str | Path, model: str | Path | None = None,
                    out: str | Path | None = None) -> dict[str, Any]:
    """Predict one picture and draw why, in one PNG: the prepared 28×28 input, the saliency over
    it and the probabilities. ``model`` defaults to `digits.load`'s default model; ``out`` to
    ``<picture>-explained.png`` beside the picture."""
    from .inference import digit_record, load

    path = Path(path)
    out = (output_file(out, ".png", "the explanation is a PNG picture") if out
           else path.with_name(path.stem + EXPLAINED))
    if out.resolve() == path.resolve():
        raise DigitsError(f"--out {out} is the picture being explained — give another name")
    classifier = load(model)
    network = classifier.network
    if network is None:
        raise DigitsError(f"{classifier.info['source']}: explaining needs the PyTorch checkpoint, not an ONNX "
                          "export — pass --model CHECKPOINT.pt")
    prepared = classifier.prepare(path)
    probabilities = classifier.predict_prepared(prepared[None])[0]
    digit = int(probabilities.argmax())
    classes = classifier.info["classes"]
    figure = explanation_figure([prepared], [integrated_gradients(network, prepared, digit)], probabilities[None],
                                classes, [f"{path.name}: {classes[digit]} ({probabilities[digit]:.1%})"])
    write_output(out, png(figure))
    return {"file": str(path), **digit_record(probabilities, classes), "model": classifier.info["source"],
            "picture": str(out)}
