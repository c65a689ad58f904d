"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is a plain dict of tensors and JSON-like values saved with torch.save and
read back with ``torch.load(weights_only=True)``, so a file from a stranger cannot run
code. It holds what inference needs (model name, weights, classes, metrics) and what
resuming needs (optimizer and scheduler state, epochs done, history, configuration).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import DigitsError
from .files import (ENSEMBLE_MANIFEST, RUN_CHECKPOINT, atomic_write, holds_model, member_checkpoints, model_file,
                    newest_runs_first, output_folder, read_manifest, write_json)
from .models import Ensemble, ZooModel, create_model

FORMAT = "digits-checkpoint-1"
REQUIRED = ("format", "model", "normalize", "state_dict", "classes")
# What each field holds when present: a damaged or hand-edited file is refused on loading, in
# one line, rather than met later as a traceback.
KINDS = {"model": str, "normalize": bool, "state_dict": dict, "classes": list, "dataset": str, "recipe": dict,
         "config": dict, "history": list, "stopped": str}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save so that a kill at any moment leaves either the old or the new file whole."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; any problem is one DigitsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DigitsError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file can fail anywhere in the unpickler: all mean the same
        hint = ("an ONNX export; give the run's model.pt" if path.suffix == ".onnx" else
                "damaged, or not written by `digits train`; give a run's model.pt or its folder")
        raise DigitsError(f"{path}: not a readable digits checkpoint ({hint})") from None
    if not isinstance(payload, dict) or not str(payload.get("format")).startswith(FORMAT[:-1]):
        raise DigitsError(f"{path}: not a digits checkpoint")
    if payload["format"] != FORMAT:
        raise DigitsError(f"{path}: written by another version of digits ({payload['format']}; this version reads "
                          f"{FORMAT}) — use that version, or retrain")
    problem = _field_problem(payload)
    if problem:
        raise DigitsError(f"{path}: a damaged digits checkpoint ({problem})")
    return payload


def _field_problem(payload: dict[str, Any]) -> str | None:
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [key for key, kind in KINDS.items() if payload.get(key) is not None and not isinstance(payload[key], kind)]
    if wrong:
        return f"{', '.join(wrong)} of the wrong kind"
    if len(payload["classes"]) != 10 or not all(isinstance(name, str) for name in payload["classes"]):
        return "classes are not ten names"
    if not all(isinstance(row, dict) and _is_number(row.get("val_accuracy")) for row in payload.get("history") or []):
        return "a history row without its val_accuracy"
    recipe = payload.get("recipe") or {}
    if not (isinstance(recipe.get("test_time_augment", False), bool) and _is_number(recipe.get("temperature", 1))
            and recipe.get("temperature", 1) > 0):
        return "a recipe of the wrong kind"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def newest_checkpoint(accept: Callable[[dict[str, Any]], bool] | None = None,
                      ensembles: bool = False) -> Path | None:
    """The newest checkpoint under RUNS_DIR, whatever its run's folder is called (`--out runs/try`
    names a run too), that ``accept`` takes (given its payload; any, without it). With
    ``ensembles``, an ensemble's manifest counts too: it is written once all its members are."""
    manifests = [f"*/{ENSEMBLE_MANIFEST}"] if ensembles else []
    for path in newest_runs_first(f"*/{RUN_CHECKPOINT}", *manifests):
        try:
            if path.name == ENSEMBLE_MANIFEST:
                read_manifest(path)
                return path
            if accept is None or accept(load_checkpoint(path)):
                return path
        except DigitsError:  # not a checkpoint or manifest of ours
            continue
    return None


def load_weights(model: torch.nn.Module, payload: dict[str, Any], source: str | Path = "checkpoint") -> None:
    """Put a checkpoint's weights into ``model``, the zoo network of the same name."""
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError):
        # A zoo model's layers may change between versions; an old checkpoint then fits no more.
        raise DigitsError(f"{source}: its weights do not fit model {payload['model']!r} as this version of "
                          f"digits builds it — the file is damaged, or an earlier version trained it; "
                          f"retrain with `digits train --model {payload['model']}`") from None


def build_model(payload: dict[str, Any], source: str | Path = "checkpoint") -> ZooModel:
    """The network a checkpoint describes, with its weights, in evaluation mode."""
    # A checkpoint saved before recipes had test_time_augment or temperature reads as it did then.
    recipe = payload.get("recipe") or {}
    try:
        model = create_model(payload["model"], payload["normalize"], recipe.get("test_time_augment", False),
                             recipe.get("temperature", 1.0))
    except DigitsError:
        raise DigitsError(f"{source}: model {payload['model']!r} is not in this version's zoo (digits models lists "
                          "them) — use the version that trained it") from None
    load_weights(model, payload, source)
    return model.eval()


def load_model(path: str | Path) -> tuple[ZooModel | Ensemble, dict[str, Any]]:
    """A checkpoint's model (the file or its run's folder), or an ensemble's (its folder or its ensemble.json)."""
    path = model_file(path)
    if path.name == ENSEMBLE_MANIFEST:
        return load_ensemble(path)
    payload = load_checkpoint(path)
    return build_model(payload, path), payload


def load_ensemble(manifest: str | Path) -> tuple[Ensemble, dict[str, Any]]:
    """The members an ensemble manifest names, averaged; the payload describes the whole."""
    manifest = Path(manifest)
    described = read_manifest(manifest)
    return assemble([manifest.parent / member for member in described["members"]], described)


def assemble(members: Sequence[str | Path], described: dict[str, Any]) -> tuple[Ensemble, dict[str, Any]]:
    """The ensemble of the ``members``' checkpoints, and a payload for it from the facts a
    manifest records (``described``): its accuracy is the ensemble's, never a member's."""
    loaded = [load_model(member) for member in members]
    payloads = [payload for _, payload in loaded]
    validated_on_test_set = not described.get("holdout")
    payload = {"model": f"{described.get('model', payloads[0]['model'])} ensemble of {len(loaded)}",
               "members": [Path(member).as_posix() for member in described.get("members", members)],
               "classes": payloads[0]["classes"], "dataset": payloads[0].get("dataset"),
               "saved": max((p.get("saved") or "" for p in payloads)) or None,
               "accuracy": described.get("accuracy") if validated_on_test_set else None}
    return Ensemble([model for model, _ in loaded]).eval(), payload


def save_ensemble(folder: str | Path, checkpoints: Sequence[str | Path], model: str, **facts: Any) -> Path:
    """Write FOLDER/ensemble.json naming the members' checkpoint files relative to FOLDER, so the
    folders can move together; ``facts`` join the manifest. Returns the manifest's path."""
    folder = Path(folder)
    # Relative between real paths: through a symbolic link, ".." leads out of where the link points.
    members = [Path(os.path.relpath(Path(file).resolve(), folder.resolve())).as_posix() for file in checkpoints]
    manifest = {"model": model, "members": members, **facts}
    write_json(folder / ENSEMBLE_MANIFEST, manifest)
    return folder / ENSEMBLE_MANIFEST


def ensemble_members(models: Sequence[str | Path], out: str | Path) -> tuple[list[Path], str]:
    """The checkpoint files of an ensemble of ``models`` (runs, checkpoints or ensembles, which
    stand for their members) to be written to OUT, checked, and the name of the kind of model
    they are ("fast", "fast+seed")."""
    out = output_folder(out)
    if len(models) < 2:
        raise DigitsError("give two or more models to combine into an ensemble")
    if holds_model(out):
        raise DigitsError(f"{out}: already holds a model; give --out a new folder")
    files = [file for model in models for file in member_checkpoints(model)]
    if len(set(map(os.path.realpath, files))) < len(files):
        raise DigitsError("a model is given twice: each member of an ensemble must be a different checkpoint")
    payloads = [load_checkpoint(file) for file in files]
    datasets = sorted({(p.get("dataset", "mnist"), tuple(p["classes"])) for p in payloads})
    if len(datasets) > 1:
        raise DigitsError(f"the models read different datasets ({', '.join(d for d, _ in datasets)}):"
                          " an ensemble's members must share their classes")
    return files, "+".join(dict.fromkeys(p["model"] for p in payloads))


def make_ensemble(models: Sequence[str | Path], out: str | Path) -> Path:
    """An ensemble of trained models (runs, checkpoints or ensembles, which stand for their
    members), written as OUT/ensemble.json; the members' files stay where they are. Returns the
    manifest's path. (`digits ensemble` also measures its accuracy: see evaluation.combine.)"""
    return save_ensemble(out, *ensemble_members(models, out))
