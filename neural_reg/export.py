"""Exports for the field's other tools: a trained classifier as a plain PyTorch state dict, a scan as NWB.

Classifier: ``export_classifier(key, "model.pt")`` writes

- ``model.pt``: ``torch.save`` of the state dict, a dict of plain tensors (``torch.load(path, weights_only=True)``
  reads it), and
- ``model.json`` beside it: the key, the task and its number of classes, the architecture and how to build it
  (``pipeline.classifier.resnet.build_classifier(arch, n_classes)``; that module needs only torch and
  ``pipeline.errors``, so it can be copied out of this repository), the input convention (grayscale
  ``(N, 1, 32, 32)`` float32 in [0, 1], no mean/std normalisation; output: logits ``(N, n_classes)``), the resolved
  train configuration and regulariser (alpha, layers, target name/kind/hash), the test accuracy, the softmax
  weight gamma of each regularised layer, and the lineage: the target's scans (animal_id, session, scan_idx,
  with each scan's content checksum) and the code version that exported it (git commit, package version).

Loading it without neural-reg::

    import json, torch
    from pipeline.classifier.resnet import build_classifier   # or a copy of that file
    meta = json.load(open("model.json"))
    model = build_classifier(meta["architecture"]["arch"], meta["task"]["n_classes"])
    model.load_state_dict(torch.load("model.pt", weights_only=True))
    logits = model.eval()(x)   # x: (N, 1, 32, 32) float32 in [0, 1]

Scan: ``export_scan(key, "scan.nwb")`` writes the scan as NWB 2 (pynwb). A static-image scan has one response
vector per trial and no clock, so the file has no acquisition time series; its layout:

- file: ``identifier`` ``neural-reg:<animal>/<session>/<scan_idx>:<checksum>``, ``session_id``
  ``<animal>-<session>-<scan_idx>``, ``session_description`` (neurons, trials, area, depth, image set),
  ``session_start_time`` the scan's ingestion time (the static format carries no acquisition time),
  ``data_collection`` where the scan came from, ``notes`` a JSON of the neural-reg key, image set, area, depth,
  source and checksum, ``source_script`` the exporting code version.
- ``general/subject``: ``subject_id`` = animal_id, species.
- ``stimulus/templates/images`` (an ``Images`` collection): one ``GrayscaleImage`` per image shown, named
  ``image_<image_id>``, float32 (height, width) in 0..255, with ``order_of_images`` in image-id order.
- ``intervals/trials`` (the trials table), one row per trial in response-matrix row order (by trial_idx):
  ``start_time`` / ``stop_time`` NaN (no clock), ``trial_idx``, ``image_id`` (the template ``image_<id>``),
  ``tier`` (train / validation / test / oracle), ``pupil_size``, ``pupil_size_derivative``, ``running_speed``,
  ``pupil_x``, ``pupil_y`` (float32), and ``responses``: a (n_trials, n_neurons) float32 column, column j the
  neuron of row j of ``processing/ophys/neurons``.
- ``processing/ophys/neurons`` (a ``DynamicTable``): one row per neuron in response-matrix column order (by
  unit_id): ``unit_id``, ``area``, ``layer`` and, where every neuron's is known, ``position`` (n, 3) float32, um.

:func:`read_scan_nwb` reads such a file back as a ScanData, equal array for array to ``recording.load_scan``, and
checks it against the checksum it was exported with.

Every export writes to a temporary file beside the target and renames it into place, so a failed export leaves
nothing half-written; an existing file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import NeuralRegError
from pipeline.version import code_version

if TYPE_CHECKING:
    from pipeline.recording.scan_data import ScanData

FORMAT_CLASSIFIER = "neural-reg classifier export, version 1"
FORMAT_SCAN = "neural-reg scan export, version 1"


class ExportError(NeuralRegError):
    """An export that cannot be made: an unknown or ambiguous key, a file in the way, a file not of this format."""


# ---------------------------------------------------------------- keys given on the command line

def parse_key(pairs: list[str]) -> dict:
    """``['animal_id=sim0', 'session=1']`` -> ``{'animal_id': 'sim0', 'session': '1'}`` (types fixed on lookup)."""
    key = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ExportError(f"key part {pair!r} is not attr=value. Fix: give the key as attr=value pairs, e.g. "
                              "animal_id=sim0 session=1 scan_idx=1")
        key[name.strip()] = value.strip()
    return key


def _one_row(query, key: dict, allowed: list[str], what: str, fix: str) -> dict:
    """The primary key of the one row of ``query`` that ``key`` names; values converted to the columns' types."""
    unknown = sorted(set(key) - set(allowed))
    if unknown:
        raise ExportError(f"{what} key {key}: {unknown} not attributes of it. Fix: use attributes among {allowed}")
    typed = {}
    for name, value in key.items():
        attr = query.heading[name]
        if attr.numeric and isinstance(value, str):
            try:
                value = int(value) if "int" in str(attr.type).lower() else float(value)
            except ValueError:
                raise ExportError(f"{what} key {key}: {name}={value!r} is not a number. Fix: give a number") from None
        typed[name] = value
    matches = (query & typed).keys() if typed else query.keys()
    if len(matches) == 1:
        return matches[0]
    if not matches:
        some = query.keys(limit=3)
        raise ExportError(f"no {what} matches {_pairs(typed)}. Fix: {fix}" +
                          (f"; for example {'; '.join(map(_pairs, some))}" if some
                           else f"; there is no {what} in this database yet"))
    differ = [a for a in query.heading.primary_key if len({str(m[a]) for m in matches}) > 1]
    raise ExportError(f"{what} key {_pairs(typed)} matches {len(matches)} rows. Fix: add {differ} to the key to "
                      f"name one, e.g. {_pairs(matches[0])}")


def _pairs(key: dict) -> str:
    """A key as the command line takes it: 'animal_id=sim0 session=1 scan_idx=1'."""
    return " ".join(f"{k}={v}" for k, v in key.items()) or "(empty key)"


# ---------------------------------------------------------------- files written whole or not at all

def _check_target(path, suffixes: tuple[str, ...], overwrite: bool, what: str) -> Path:
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ExportError(f"{path}: a {what} export is written to a {' or '.join(suffixes)} file. Fix: name the "
                          f"output e.g. {path.with_suffix(suffixes[0]).name}")
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; not overwritten. Fix: choose another file name, or pass "
                          "--overwrite (overwrite=True)")
    if path.exists() and path.is_dir():
        raise ExportError(f"{path} is a directory. Fix: give a file name")
    if not path.parent.is_dir():
        raise ExportError(f"{path}: the folder {path.parent} does not exist. Fix: create it first")
    return path


def _temp_beside(path: Path) -> Path:
    """A new empty hidden file in the target's folder (so the rename is atomic), ending in the target's suffix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# ---------------------------------------------------------------- classifier

def classifier_metadata(key: dict) -> dict:
    """The JSON that goes beside a classifier's state dict (see the module docstring); key: a full primary key."""
    import torch

    from schemas import classifier, recording, target

    row = (classifier.TrainedClassifier.proj("test_accuracy", "epochs", "pairs_per_step", "wall_time", "device")
           & key).fetch1()
    task = (classifier.TaskDataset & key).fetch1()
    arch_description = (classifier.Architecture & key).fetch1("description")
    train = (classifier.TrainConfig & key).fetch1("train_name")
    reg = (classifier.Regulariser.proj("regulariser_name", "alpha", "target_hash") & key).fetch1()
    reg_params = classifier.Regulariser.params_of(key)
    gamma = dict(zip(*(classifier.TrainedClassifier.LayerWeight & key).to_arrays("layer", "gamma",
                                                                                   order_by="layer")))
    regulariser = {"regulariser_name": reg["regulariser_name"], "regulariser_hash": key["regulariser_hash"],
                   "alpha": float(reg["alpha"]), "layers": reg_params.get("layers"), "params": reg_params,
                   "target": None}
    scans = []
    if reg["target_hash"] is not None:
        t_key = {"target_hash": reg["target_hash"]}
        tc = (target.TargetConfig.proj("target_name", "kind", "scan_group") & t_key).fetch1()
        t_row = (target.Target.proj("image_set", "checksum") & t_key).fetch1()
        regulariser["target"] = {"target_name": tc["target_name"], "kind": tc["kind"],
                                 "target_hash": reg["target_hash"], "scan_group": tc["scan_group"],
                                 "image_set": t_row["image_set"], "checksum": t_row["checksum"],
                                 "params": target.TargetConfig.params_of(t_key)}
        scans = (target.Target.Scan * recording.Scan.proj("image_set", "checksum", "area", "depth") & t_key).to_dicts(
            order_by=("animal_id", "session", "scan_idx"))
        scans = [{k: s[k] for k in ("animal_id", "session", "scan_idx", "image_set", "area", "depth", "checksum")}
                 for s in scans]
    arch, n_classes = key["arch"], int(task["n_classes"])
    from pipeline.classifier.resnet import parse_arch

    blocks, width = parse_arch(arch)
    return _jsonable({
        "format": FORMAT_CLASSIFIER,
        "key": dict(key),
        "task": {"name": key["task"], "n_classes": n_classes, "description": task["description"]},
        "architecture": {
            "arch": arch, "description": arch_description, "blocks": list(blocks), "width": width,
            "in_channels": 1,
            "module": "pipeline.classifier.resnet", "function": "build_classifier",
            "build": f"pipeline.classifier.resnet.build_classifier({arch!r}, {n_classes})",
            "load": "model.load_state_dict(torch.load(PT_FILE, weights_only=True)); model.eval()",
        },
        "input": {"shape": ["N", 1, 32, 32], "dtype": "float32", "range": [0.0, 1.0],
                  "channels": "1, grayscale (CIFAR: ITU-R 601 luma of the RGB image)",
                  "normalisation": "none: intensities scaled to [0, 1], no mean/std subtracted",
                  "output": f"logits (N, {n_classes}); eval mode (batch norm running statistics)"},
        "train": {"train_name": train, "train_hash": key["train_hash"],
                  "params": classifier.TrainConfig.params_of(key)},
        "regulariser": regulariser,
        "seed": key["classifier_seed"],
        "results": {"test_accuracy": float(row["test_accuracy"]), "gamma": {k: float(v) for k, v in gamma.items()},
                    "epochs": row["epochs"], "pairs_per_step": row["pairs_per_step"],
                    "wall_time_s": float(row["wall_time"]), "device": row["device"]},
        "lineage": {"scans": scans,
                    "database": classifier.TrainedClassifier.database},
        "code": {"exported_with": code_version(), "torch": torch.__version__,
                 "note": "the code that exported this file; the training row does not record the code version "
                         "that trained it"},
        "exported": datetime.now(timezone.utc),
    })


CLASSIFIER_ATTRS = ["task", "arch", "train_hash", "regulariser_hash", "classifier_seed", "train_name",
                    "regulariser_name"]


def find_classifier(key: dict) -> dict:
    """The full primary key of the one trained classifier ``key`` names (hashes or train_name/regulariser_name)."""
    from schemas import classifier

    query = (classifier.TrainedClassifier.proj() * classifier.TrainConfig.proj("train_name")
             * classifier.Regulariser.proj("regulariser_name"))
    full = _one_row(query, key, CLASSIFIER_ATTRS, "trained classifier",
                    "name it by task, arch, train_hash (or train_name), regulariser_hash (or regulariser_name) "
                    "and classifier_seed, as `neural-reg status` and classifier.TrainedClassifier() list them")
    return {k: full[k] for k in classifier.TrainedClassifier.primary_key}


def export_classifier(key: dict, path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a trained classifier's state dict to ``path`` (.pt) and its configuration and lineage to the .json
    beside it; return both paths. Nothing is written if anything fails."""
    import torch

    from schemas import classifier

    pt_path = _check_target(path, (".pt", ".pth"), overwrite, "classifier")
    json_path = pt_path.with_suffix(".json")
    if json_path.exists() and not overwrite:
        raise ExportError(f"{json_path} already exists; not overwritten. Fix: choose another file name, or pass "
                          "--overwrite (overwrite=True)")
    key = find_classifier(key)
    meta = classifier_metadata(key)
    state = (classifier.TrainedClassifier & key).fetch1("state_dict")
    tensors = {k: torch.from_numpy(np.array(v)).clone() for k, v in state.items()}
    with ExitStack() as stack:
        tmp_pt, tmp_json = _temp_beside(pt_path), _temp_beside(json_path)
        stack.callback(lambda: [p.unlink(missing_ok=True) for p in (tmp_pt, tmp_json)])
        torch.save(tensors, tmp_pt)
        meta["files"] = {"state_dict": pt_path.name, "tensors": len(tensors),
                         "sha1": hashlib.sha1(tmp_pt.read_bytes()).hexdigest()}
        tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp_pt, pt_path)
        os.replace(tmp_json, json_path)
    return pt_path, json_path


# ---------------------------------------------------------------- scan

SCAN_ATTRS = ["animal_id", "session", "scan_idx"]
TRIAL_COLUMNS = ("trial_idx", "image_id", "tier", "pupil_size", "pupil_size_derivative", "running_speed",
                 "pupil_x", "pupil_y", "responses")


def find_scan(key: dict) -> dict:
    from schemas import recording

    return _one_row(recording.Scan.proj(), key, SCAN_ATTRS, "scan",
                    "name it by animal_id, session and scan_idx, as recording.Scan() lists them")


def export_scan(key: dict, path, overwrite: bool = False) -> Path:
    """Write one scan as NWB (layout: the module docstring); return the path. Nothing is written if anything
    fails."""
    from schemas import recording

    path = _check_target(path, (".nwb",), overwrite, "scan")
    key = find_scan(key)
    scan = recording.load_scan(key)
    row = (recording.Scan & key).fetch1()
    animal = (recording.Animal & key).fetch1()
    image_set_description = (recording.ImageSet & row).fetch1("description")
    nwbfile = scan_to_nwb(scan, key, row, animal, image_set_description)

    from pynwb import NWBHDF5IO

    tmp = _temp_beside(path)
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def scan_to_nwb(scan, key: dict, row: dict, animal: dict, image_set_description: str = ""):
    """The in-memory NWBFile of a scan (a ScanData in canonical order) and its Scan row."""
    from hdmf.common import DynamicTable, VectorData
    from pynwb import NWBFile
    from pynwb.base import ImageReferences, Images
    from pynwb.epoch import TimeIntervals
    from pynwb.file import Subject
    from pynwb.image import GrayscaleImage

    from pipeline.recording.scan_data import BEHAVIOR_NAMES

    name = f"{key['animal_id']}-{key['session']}-{key['scan_idx']}"
    depth = None if row.get("depth") is None else float(row["depth"])
    notes = {"format": FORMAT_SCAN, "key": key, "image_set": row["image_set"], "area": row["area"], "depth": depth,
             "source": row["source"], "source_format": row["source_format"], "checksum": row["checksum"],
             "n_neurons": scan.n_neurons, "n_trials": scan.n_trials}
    version = code_version()
    started = row["ingested"]
    started = started.astimezone() if isinstance(started, datetime) else datetime.now(timezone.utc)
    nwbfile = NWBFile(
        session_description=(f"neural-reg scan {name}: {scan.n_neurons} neurons x {scan.n_trials} trials of static "
                             f"images (image set {row['image_set']!r}), area {row['area']}"
                             + (f", {depth:g} um below the pia" if depth is not None else "")
                             + "; one response per neuron per trial, no time series"),
        identifier=f"neural-reg:{key['animal_id']}/{key['session']}/{key['scan_idx']}:{row['checksum']}",
        session_start_time=started,
        session_id=name,
        data_collection=f"{row['source_format']}: {row['source']}",
        experiment_description=image_set_description or None,
        notes=json.dumps(_jsonable(notes)),
        source_script=f"neural-reg {version['version']} (git {version['git_commit']})",
        source_script_file_name="neural_reg/export.py",
        subject=Subject(subject_id=str(key["animal_id"]), species=animal.get("species") or None,
                        description=animal.get("description") or None),
    )

    images = [GrayscaleImage(name=f"image_{int(i)}", data=np.asarray(p, np.float32),
                             description=f"stimulus image_id {int(i)}, float32 grayscale 0..255")
              for i, p in zip(scan.image_ids, scan.images)]
    nwbfile.add_stimulus_template(Images(
        name="images", images=images, order_of_images=ImageReferences(name="order_of_images", data=images),
        description=f"the {len(images)} images of image set {row['image_set']!r} this scan showed, by image_id"))

    def col(name, data, description):
        return VectorData(name=name, data=data, description=description)

    n = scan.n_trials
    behavior = np.asarray(scan.behavior, np.float32)
    pupil = np.asarray(scan.pupil_center, np.float32)
    columns = [
        col("start_time", np.full(n, np.nan), "unknown: the static format has no clock (NaN)"),
        col("stop_time", np.full(n, np.nan), "unknown: the static format has no clock (NaN)"),
        col("trial_idx", np.asarray(scan.trial_idx, np.int64), "trial number within the scan"),
        col("image_id", np.asarray(scan.trial_image_ids, np.int64),
            "the image shown: stimulus/templates/images/image_<image_id>"),
        col("tier", [str(t) for t in scan.tiers], "data split: train, validation, test or oracle (repeated image)"),
        *(col(b, behavior[:, k], d) for k, (b, d) in enumerate(zip(
            BEHAVIOR_NAMES, ("pupil size", "derivative of the pupil size", "running speed")))),
        col("pupil_x", pupil[:, 0], "eye position, x"),
        col("pupil_y", pupil[:, 1], "eye position, y"),
        col("responses", np.asarray(scan.responses, np.float32),
            "(n_trials, n_neurons) float32: each neuron's response on the trial; column j is row j of "
            "processing/ophys/neurons"),
    ]
    nwbfile.trials = TimeIntervals(name="trials", columns=columns, id=np.arange(n),
                                   description="one row per trial, in response-matrix row order (by trial_idx)")

    unit_cols = [col("unit_id", np.asarray(scan.unit_ids, np.int64), "the neuron's unit id in the scan"),
                 col("area", [str(a) for a in scan.areas], "brain area"),
                 col("layer", [str(a) for a in scan.layers], "cortical layer")]
    if scan.positions is not None:
        unit_cols.append(col("position", np.asarray(scan.positions, np.float32), "(x, y, z) cortical position, um"))
    neurons = DynamicTable(name="neurons", columns=unit_cols, id=np.arange(scan.n_neurons),
                           description="one row per neuron, in response-matrix column order (by unit_id)")
    ophys = nwbfile.create_processing_module(name="ophys", description="the scan's neurons (two-photon ROIs)")
    ophys.add(neurons)
    return nwbfile


def read_scan_nwb(path) -> ScanData:
    """A scan exported by :func:`export_scan`, as a ScanData; ``extra`` holds the export's notes (key, image set,
    checksum, source). Raises ExportError if the file is not such an export or its content fails its checksum."""
    from pynwb import NWBHDF5IO

    from pipeline.recording.scan_data import BEHAVIOR_NAMES, ScanData
    from schemas.recording import scan_checksum

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file. Fix: give the path of an NWB file written by export_scan")
    try:
        io = NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as err:  # h5py / hdmf raise many kinds
        raise ExportError(f"{path}: not a readable NWB file ({err}). Fix: give a file written by export_scan") from err
    with io:
        try:
            notes = json.loads(nwbfile.notes or "")
            assert notes.get("format") == FORMAT_SCAN
            trials = nwbfile.trials
            neurons = nwbfile.processing["ophys"]["neurons"]
            templates = nwbfile.stimulus_template["images"]
        except (ValueError, AssertionError, KeyError, TypeError, AttributeError) as err:
            raise ExportError(f"{path}: not a neural-reg scan export (no {FORMAT_SCAN!r} notes, trials table, "
                              f"processing/ophys/neurons or stimulus template 'images': {err!r}). Fix: give a file "
                              "written by export_scan") from None
        missing = [c for c in TRIAL_COLUMNS if c not in trials.colnames]
        if missing:
            raise ExportError(f"{path}: the trials table lacks {missing}. Fix: export the scan again")
        t = {c: trials[c].data[:] for c in TRIAL_COLUMNS}
        ids = np.array(sorted(int(name.split("_", 1)[1]) for name in templates.images), np.int64)
        pixels = np.stack([np.asarray(templates.images[f"image_{i}"].data[:], np.float32) for i in ids]) \
            if len(ids) else np.zeros((0, 0, 0), np.float32)
        positions = (np.asarray(neurons["position"].data[:], np.float32) if "position" in neurons.colnames
                     else None)
        scan = ScanData(
            images=pixels, image_ids=ids, trial_idx=np.asarray(t["trial_idx"], np.int64),
            trial_image_ids=np.asarray(t["image_id"], np.int64), tiers=np.asarray(_strs(t["tier"]), str),
            responses=np.asarray(t["responses"], np.float32),
            behavior=np.stack([np.asarray(t[b], np.float32) for b in BEHAVIOR_NAMES], axis=1),
            pupil_center=np.stack([np.asarray(t["pupil_x"], np.float32), np.asarray(t["pupil_y"], np.float32)],
                                  axis=1),
            unit_ids=np.asarray(neurons["unit_id"].data[:], np.int64),
            areas=np.asarray(_strs(neurons["area"].data[:]), str),
            layers=np.asarray(_strs(neurons["layer"].data[:]), str),
            positions=positions, source=str(path), extra={"export": notes})
    checksum = scan_checksum(scan.responses, scan.trial_image_ids, scan.tiers, scan.behavior, scan.pupil_center)
    if checksum != notes.get("checksum"):
        raise ExportError(f"{path}: its responses, images shown, tiers or behaviour do not match the checksum they "
                          f"were exported with ({notes.get('checksum')}). Fix: export the scan again")
    return scan


def _strs(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
