"""The files a run leaves, and writing files so that a reader, or a crash, never sees half of one.

No PyTorch here: the ONNX-only install reads run folders too.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from .errors import DigitsError

RUNS_DIR = Path("runs")  # where runs go unless told otherwise, relative to the working folder
RUN_CHECKPOINT = "model.pt"  # in a run's folder
ENSEMBLE_MANIFEST = "ensemble.json"  # in an ensemble's folder, naming its members' checkpoints
REPORT_NAME = "report.html"  # in a run's folder, unless it trained with --no-report
EXPLAINED = "-explained.png"  # `digits explain PICTURE` draws PICTURE-explained.png beside it


def newest_runs_first(*patterns: str) -> list[Path]:
    """The files under RUNS_DIR that match any of ``patterns``, the most recently written first."""
    found = {path for pattern in patterns for path in RUNS_DIR.glob(pattern)}
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def model_file(path: str | Path) -> Path:
    """The file a path given for a model stands for: a run's folder its checkpoint, an ensemble's its manifest."""
    path = Path(path)
    if not path.is_dir():
        return path
    return path / (RUN_CHECKPOINT if (path / RUN_CHECKPOINT).is_file() else ENSEMBLE_MANIFEST)


def read_manifest(manifest: Path) -> dict[str, Any]:
    """An ensemble manifest's contents, checked to name at least one member."""
    if not manifest.is_file():
        raise DigitsError(f"{manifest.parent}: no {RUN_CHECKPOINT} or {ENSEMBLE_MANIFEST} there")
    try:
        described = json.loads(manifest.read_text())
        members = described["members"]
    except (ValueError, KeyError, TypeError):
        members = None
    if not isinstance(members, list) or not all(isinstance(member, str) for member in members):
        raise DigitsError(f"{manifest}: not a digits ensemble manifest (it names its members' checkpoints in a list)")
    if not members:
        raise DigitsError(f"{manifest}: the ensemble has no members")
    # An ensemble's members are checkpoints: one naming an ensemble (itself, say) would never end.
    nested = next((m for m in members if model_file(manifest.parent / m).name == ENSEMBLE_MANIFEST), None)
    if nested is not None:
        raise DigitsError(f"{manifest}: member {nested!r} is an ensemble, not a checkpoint; name its members instead")
    return described


def member_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoint files a model stands for: a run's own, or every member of an ensemble."""
    path = model_file(path)
    if path.name != ENSEMBLE_MANIFEST:
        return [path]
    members = read_manifest(path)["members"]
    return [file for member in members for file in member_checkpoints(os.path.normpath(path.parent / member))]


def read_only(path: Path) -> bool:
    """Whether a file is one its owner made read-only. Writing renames a new file over the old,
    which the old one's mode would not stop (and root may write anything): this check does."""
    return path.is_file() and not path.stat().st_mode & stat.S_IWUSR


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write a file that is either complete or absent: temporary file, fsync, rename."""
    path = Path(path)
    blocking = _file_in_the_way(path)
    if blocking:  # mkdir would say "File exists", which does not say which is wrong
        raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(blocking))
    if read_only(path):
        raise PermissionError(errno.EACCES, "a read-only file, not replaced", str(path))
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o644  # not mkstemp's 0600, hiding runs
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:  # named after the file asked for, not the hidden temporary one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def holds_model(folder: Path) -> bool:
    """Whether a folder already holds a run's checkpoint or an ensemble's manifest."""
    return any((folder / name).exists() for name in (RUN_CHECKPOINT, ENSEMBLE_MANIFEST))


def write_json(path: str | Path, value: Any) -> None:
    """A JSON file, indented for people to read, written atomically."""
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())


def output_file(out: str | Path, suffix: str, kind: str) -> Path:
    """A file that a command was asked to write (its --out). It must end in ``suffix``, so
    that it can never be a checkpoint, a manifest, or a picture the command reads."""
    out = Path(out)
    if out.suffix.lower() != suffix or out.is_dir():
        raise DigitsError(f"--out {out}: {kind}; give a file name ending in {suffix}")
    _refuse_file_in_the_way(out, "--out")
    return out


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest of the folders above ``path`` that exists as a file, if one does."""
    return next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None)


def _refuse_file_in_the_way(path: Path, flag: str) -> None:
    blocking = _file_in_the_way(path)
    if blocking:
        raise DigitsError(f"{flag} {path}: {blocking} is a file, not a folder — choose another place")


def output_folder(out: str | Path, flag: str = "--out") -> Path:
    """A folder that a command was asked to write its files into (its --out), checked before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DigitsError(f"{flag} {out}: a file, not a folder — give a folder for the files this writes")
    _refuse_file_in_the_way(out, flag)
    return out


def write_output(path: str | Path, data: bytes) -> None:
    """atomic_write for a file the user named: a failure is one line that says what to do."""
    try:
        atomic_write(path, data)
    except OSError as e:
        raise DigitsError(f"{path}: cannot write ({e.strerror}) — choose another --out") from None
