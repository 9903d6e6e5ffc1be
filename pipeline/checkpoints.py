"""Per-epoch checkpoints of a training run (classifier or predictor): one file, checksummed, written atomically.

A checkpoint is one file, ``<checkpoint_dir>/checkpoint.pt``: a one-line header ``NEURALREG-CHECKPOINT <format>
sha256=<64 hex digits>`` and then the ``torch.save`` bytes of the state, whose SHA-256 the header holds. It is
written to a temporary file in the same folder, flushed to disk and renamed over the old one, so a reader sees the
old checkpoint or the new one, never half of one.

Loading (:func:`load_checkpoint`) refuses, with an error naming the file and the fix, a checkpoint that

- is damaged (checksum mismatch: a flipped byte, a truncated copy) or not a checkpoint of this format;
- belongs to another run (its ``fingerprint`` differs: another task, data, configuration or seed);
- has an epoch counter that is not 0 < epoch <= the epochs asked for, or disagrees with its curves (one entry per
  epoch);
- holds a floating-point tensor with NaN or infinite values anywhere in its state (weights, optimiser and
  regulariser state, best weights, ...): resuming it would train from garbage.

The state is the caller's dict; it must hold ``fingerprint`` (str), ``epoch`` (int) and ``curves`` (dict of
per-epoch lists), and only what ``torch.load(weights_only=True)`` reads back (tensors, plain Python values).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from pipeline.errors import NeuralRegError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 1: a bare torch.save file without checksum
MAGIC = "NEURALREG-CHECKPOINT"
MAX_HEADER = 256
FRESH_START = "delete it to start the run afresh"


class CheckpointError(NeuralRegError):
    """A checkpoint that cannot be resumed: the message names the file, what is wrong and the fix."""


def checkpoint_path(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """``<checkpoint_dir>/checkpoint.pt``, or None without a folder."""
    return None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE


def fingerprint(description: Mapping) -> str:
    """SHA-1 of a run's description (canonical JSON): what a checkpoint must match to be resumed."""
    return hashlib.sha1(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def key_folder(root: str | os.PathLike, namespace: str, key: Mapping) -> Path:
    """``<root>/<namespace>-<32 hex digits of the key>``: one folder per populate key of one table.

    namespace: the table's schema (its database name), so two prefixes or two tables never share a folder.
    The digest is the MD5 of the key's values as strings in canonical JSON (schemas.paramset.params_hash).
    """
    text = json.dumps({str(k): str(v) for k, v in key.items()}, sort_keys=True, separators=(",", ":"))
    return Path(root) / f"{namespace}-{hashlib.md5(text.encode()).hexdigest()}"


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> None:
    """Write ``state`` with its checksum to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getbuffer()
    header = f"{MAGIC} {CHECKPOINT_FORMAT} sha256={hashlib.sha256(payload).hexdigest()}\n".encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable; not every file system lets a folder be opened
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike, error: type[Exception] = CheckpointError) -> dict:
    """The state stored at ``path`` once its checksum checks out (nothing else is checked)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise error(f"checkpoint {path} is unreadable ({err}); {FRESH_START}") from err
    end = data.find(b"\n", 0, MAX_HEADER)
    fields = data[:end].decode("ascii", "replace").split() if end > 0 else []
    if len(fields) != 3 or fields[0] != MAGIC or not fields[2].startswith("sha256="):
        raise error(f"checkpoint {path} is not a checksummed neural-reg checkpoint (damaged, or written by an "
                    f"older version); {FRESH_START}")
    if fields[1] != str(CHECKPOINT_FORMAT):
        raise error(f"checkpoint {path} has format {fields[1]}, this version reads format {CHECKPOINT_FORMAT}; "
                    f"{FRESH_START}")
    payload = memoryview(data)[end + 1:]
    if hashlib.sha256(payload).hexdigest() != fields[2][len("sha256="):]:
        raise error(f"checkpoint {path} is damaged: its contents do not match its SHA-256 checksum (a changed "
                    f"byte or a truncated copy); {FRESH_START}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types; with a matching checksum: written by other code
        raise error(f"checkpoint {path} is unreadable ({err}); {FRESH_START}") from err
    if not isinstance(state, dict):
        raise error(f"checkpoint {path} holds a {type(state).__name__}, not a training state; {FRESH_START}")
    return state


def load_checkpoint(path: str | os.PathLike, run_fingerprint: str, epochs: int, required=(),
                    error: type[Exception] = CheckpointError) -> dict:
    """The state at ``path``, if it is intact, this run's, at a sound epoch <= ``epochs``, and finite.

    required: further keys the state must have. error: the exception class raised (a CheckpointError, or a
    caller's subclass of it).
    """
    path = Path(path)
    state = read_checkpoint(path, error)
    if state.get("fingerprint") != run_fingerprint:
        raise error(f"checkpoint {path} belongs to another run (different task or data, architecture, config, "
                    "target or seed); use another checkpoint_dir or delete it")
    missing = sorted(set(required) - set(state))
    if missing:
        raise error(f"checkpoint {path} lacks {missing} (written by another version?); {FRESH_START}")
    epoch, curves = state.get("epoch"), state.get("curves")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise error(f"checkpoint {path} has epoch counter {epoch!r}, not a completed epoch (an integer >= 1); "
                    f"{FRESH_START}")
    if epoch > epochs:
        raise error(f"checkpoint {path} is at epoch {epoch}, beyond the {epochs} epochs asked for; ask for at "
                    "least that many epochs or use another checkpoint_dir")
    lengths = {k: len(v) for k, v in curves.items() if isinstance(v, list)} if isinstance(curves, dict) else {}
    if not lengths or len(lengths) != len(curves) or set(lengths.values()) != {epoch}:
        raise error(f"checkpoint {path} is inconsistent: its epoch counter says {epoch} epochs, its curves hold "
                    f"{lengths or curves!r} entries; {FRESH_START}")
    for where, tensor in _floating_tensors(state):
        if not bool(torch.isfinite(tensor).all()):
            raise error(f"checkpoint {path} holds NaN or infinite values in {where} (the run diverged by "
                        f"epoch {epoch}, or the file was altered); {FRESH_START}, and if the run diverges again, "
                        "lower its learning rate")
    return state


def _floating_tensors(value, where: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(where, tensor) for every floating-point or complex tensor in nested dicts, lists and tuples.

    Plain floats are not tensors and are left alone: a curve may hold NaN by design (an unregularised run's
    similarity loss)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield where or "the state", value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _floating_tensors(v, f"{where}[{k!r}]" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _floating_tensors(v, f"{where}[{i}]")
