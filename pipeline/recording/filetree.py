"""The Sensorium / neuralpredictors static "file tree" exchange format: read into and write from ScanData.

Layout of one scan (k = 0..n_trials-1, file names carry no order; ``trial_idx`` does)::

    data/images/{k}.npy         (1, H, W) stimulus of trial k (uint8 in Sensorium; any real dtype read)
    data/responses/{k}.npy      (n_neurons,) response of every neuron on trial k
    data/behavior/{k}.npy       (3,) pupil size, its derivative, running speed
    data/pupil_center/{k}.npy   (2,) eye position (x, y)
    meta/trials/frame_image_id.npy, tiers.npy, trial_idx.npy   (n_trials,) each
    meta/neurons/unit_ids.npy, area.npy, layer.npy            (n_neurons,) each
    meta/neurons/cell_motor_coordinates.npy                   (n_neurons, 3) um, optional
    meta/statistics/{images,responses,behavior,pupil_center}/{all,stimulus_frame}/{mean,std,min,max,median}.npy
                                written for neuralpredictors' loaders (normalisation); ignored on reading

Tiers. Ours are train / validation / test / oracle. Sensorium's are train, validation, test, final_test
and sometimes none. On reading: train and validation stay; a trial in test or final_test whose image
(frame_image_id) is shown on 2 or more test/final_test trials becomes 'oracle', the others 'test';
a tree that contains 'oracle' (what our writer writes) is read back as is (see map_sensorium_tiers);
'none' marks trials the data provider excluded from every split, so they are DROPPED, with the images
only they showed (their count is in ``extra['dropped_none_trials']``).
Trials that share a frame_image_id must show identical pixels.

Every bad input raises RecordingError naming the file, the field and the fix.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.recording.scan_data import RecordingError, ScanData

DATA_FIELDS = ("images", "responses", "behavior", "pupil_center")
TRIAL_FILES = {"trial_image_ids": "meta/trials/frame_image_id.npy", "tiers": "meta/trials/tiers.npy",
               "trial_idx": "meta/trials/trial_idx.npy"}
NEURON_FILES = {"unit_ids": "meta/neurons/unit_ids.npy", "areas": "meta/neurons/area.npy",
                "layers": "meta/neurons/layer.npy"}
POSITIONS_FILE = "meta/neurons/cell_motor_coordinates.npy"
# where each ScanData field lives, to name the file when ScanData.validate() rejects a field
FIELD_FILES = {**TRIAL_FILES, **NEURON_FILES, "positions": POSITIONS_FILE, "images": "data/images",
               "image_ids": "meta/trials/frame_image_id.npy", **{f: f"data/{f}" for f in DATA_FIELDS[1:]}}
SENSORIUM_TEST_TIERS = ("test", "final_test")
KNOWN_TIERS = ("train", "validation", "test", "final_test", "oracle", "none")


def _fail(file: Path | str, field: str, problem: str, fix: str):
    raise RecordingError(f"{file}: field '{field}': {problem}. Fix: {fix}")


# -------------------------------------------------------------------------------------------- reading

def _load(file: Path, field: str, allow_pickle: bool) -> np.ndarray:
    """One .npy file; a missing, unreadable or pickled file is a RecordingError naming it."""
    if not file.is_file():
        _fail(file, field, "file is missing", f"add {file.name} to {file.parent} (one array, saved with np.save)")
    try:
        return np.load(file, allow_pickle=allow_pickle)
    except ValueError as e:
        with open(file, "rb") as f:
            is_npy = f.read(6) == b"\x93NUMPY"
        if not is_npy:
            _fail(file, field, "is not a .npy file", "save the array with np.save")
        if "allow_pickle" in str(e):
            _fail(file, field, "holds pickled Python objects", "re-save it as a plain (e.g. string) array, or pass "
                  "allow_pickle=True if you trust the file")
        _fail(file, field, f"cannot be read as a .npy array ({e})", "re-save it with np.save")
    except OSError as e:
        _fail(file, field, f"cannot be read ({e})", "re-save it with np.save")


def _trial_files(folder: Path, field: str, n_trials: int, counted_in: Path) -> list[Path]:
    """The files {0..n_trials-1}.npy of a data folder, checked against the trial count of the meta files."""
    if not folder.is_dir():
        _fail(folder, field, "folder is missing", f"store one {field} array per trial as {folder}/{{k}}.npy")
    present = {name for name in os.listdir(folder) if not name.startswith(".")}
    expected = {f"{k}.npy" for k in range(n_trials)}
    if present != expected:
        missing = sorted(expected - present, key=lambda s: int(s[:-4]))
        extra = sorted(present - expected)
        detail = (f"missing {folder / missing[0]}" if missing else f"unexpected file {folder / extra[0]}")
        _fail(folder, field, f"holds {len(present)} files but {counted_in} lists {n_trials} trials ({detail})",
              f"provide exactly one file per trial, named 0.npy .. {n_trials - 1}.npy, or fix {counted_in}")
    return [folder / f"{k}.npy" for k in range(n_trials)]


def _vector(arr: np.ndarray) -> np.ndarray:
    """Accept (1, m) as (m,): some exports keep a leading singleton axis."""
    return arr[0] if arr.ndim == 2 and arr.shape[0] == 1 else arr


def _npy_header(file: Path, field: str) -> tuple[bytes, np.dtype, tuple]:
    """(header bytes, dtype, shape) of a plain .npy file; anything else is a RecordingError naming it."""
    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                return b"", np.dtype(np.uint8), ()  # rare version 3.0: no fast path
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            n = f.tell()
            f.seek(0)
            header = f.read(n)
    except (ValueError, OSError) as e:
        _fail(file, field, f"cannot be read as a .npy array ({e})", "re-save it with np.save")
    if dtype.hasobject or fortran:
        _load(file, field, False)  # raises for pickled objects
        return b"", dtype, shape  # Fortran order: no fast path
    return header, dtype, shape


def _iter_npy(files: list[Path], field: str):
    """Yield (k, array) for every trial file of a data folder.

    Hand-written fast path: np.load parses every header with ast.literal_eval (~40 us a file); the files
    of one folder share one header, so a file whose header bytes equal the first file's is read with
    np.frombuffer (about 4x faster on a 6000-trial scan). Any other file goes through np.load.
    """
    header, dtype, shape = _npy_header(files[0], field)
    n = len(header)
    for k, file in enumerate(files):
        with open(file, "rb") as f:
            raw = f.read()
        if n and raw[:n] == header and len(raw) - n == dtype.itemsize * int(np.prod(shape)):
            yield k, np.frombuffer(raw, dtype=dtype, offset=n).reshape(shape)
        else:
            yield k, _load(file, field, False)


def _load_stack(files: list[Path], field: str, shape: tuple, dtype, shape_from: str) -> np.ndarray:
    """(n_files, *shape) array of one data folder; a file of another shape is named in the error."""
    out = np.empty((len(files),) + shape, dtype=dtype)
    for k, arr in _iter_npy(files, field):
        arr = _vector(arr)
        if arr.shape != shape:
            _fail(files[k], field, f"has shape {arr.shape} but {shape_from} implies {shape}",
                  f"store every {field} file with shape {shape}")
        out[k] = arr
    return out


def _load_images(files: list[Path], frame_image_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct images and their ids (sorted); trials sharing an id must show identical pixels.

    Returns images (n_images, H, W) float32 and image_ids (n_images,) int64.
    """
    first_file: dict[int, int] = {}
    pixels: dict[int, np.ndarray] = {}
    shape = None
    for k, img in _iter_npy(files, "images"):
        file = files[k]
        if img.ndim == 3 and img.shape[0] == 1:
            img = img[0]
        if img.ndim != 2:
            _fail(file, "images", f"has shape {img.shape}, expected (1, height, width) grayscale",
                  "store one grayscale image per trial as a (1, H, W) array")
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            _fail(file, "images", f"has shape {img.shape} but {files[0]} has {shape}",
                  "store every stimulus at the same resolution")
        iid = int(frame_image_id[k])
        if iid in pixels:
            if not np.array_equal(pixels[iid], img):
                _fail(file, "images", f"differs from {files[first_file[iid]]} although both trials have "
                      f"frame_image_id {iid}", "give different images different frame_image_id values in "
                      "meta/trials/frame_image_id.npy, or store the identical pixels")
        else:
            pixels[iid], first_file[iid] = img, k
    image_ids = np.array(sorted(pixels), dtype=np.int64)
    images = np.stack([pixels[i] for i in image_ids]).astype(np.float32)
    return images, image_ids


def map_sensorium_tiers(tiers: np.ndarray, frame_image_id: np.ndarray, source: str = "tiers") -> np.ndarray:
    """(n_trials,) our tiers from Sensorium tiers; 'none' stays 'none' (the caller drops those trials).

    test / final_test trials of images shown on 2+ such trials become 'oracle', the rest 'test'. If the
    tiers already contain 'oracle' (our writer's vocabulary) they are kept as they are and only
    final_test is mapped this way. (So a scan we write with a repeated 'test' image and no oracle
    trials at all reads back with that image as 'oracle'.)
    """
    tiers = np.asarray(tiers).astype(str)
    unknown = sorted(set(tiers) - set(KNOWN_TIERS))
    if unknown:
        _fail(source, "tiers", f"unknown tiers {unknown[:5]}", f"use Sensorium's {KNOWN_TIERS[:4]} or 'none', or ours")
    out = tiers.astype("<U10")
    # a tree that already uses 'oracle' speaks our vocabulary: its 'test' trials are single presentations
    is_test = np.isin(tiers, ("final_test",) if "oracle" in tiers else SENSORIUM_TEST_TIERS)
    ids, counts = np.unique(frame_image_id[is_test], return_counts=True)
    repeated = is_test & np.isin(frame_image_id, ids[counts >= 2])
    out[is_test] = "test"
    out[repeated] = "oracle"
    return out


def read_filetree(path: str | os.PathLike, allow_pickle: bool = False) -> ScanData:
    """Read one scan stored as a Sensorium / neuralpredictors static file tree into a validated ScanData.

    Images: (n_images, H, W) float32, one per distinct frame_image_id (ids sorted ascending); per-trial rows
    follow the file numbers k. ``allow_pickle`` lets the meta files hold pickled object arrays (only
    for trusted files). Raises RecordingError (file, field, fix) on any bad input.
    """
    root = Path(path)
    if not root.is_dir():
        _fail(root, "path", "is not a folder", "unzip the scan and pass the folder that holds data/ and meta/")
    for sub in ("data", "meta"):
        if not (root / sub).is_dir():
            _fail(root / sub, "path", "folder is missing", "pass the scan folder that holds data/ and meta/")

    meta = {f: _load(root / rel, f, allow_pickle) for f, rel in {**TRIAL_FILES, **NEURON_FILES}.items()}
    n_trials = len(meta["trial_image_ids"])
    if n_trials == 0:
        _fail(root / TRIAL_FILES["trial_image_ids"], "trial_image_ids", "lists no trials",
              "store one frame_image_id per trial")
    for f in TRIAL_FILES:
        if meta[f].ndim != 1 or len(meta[f]) != n_trials:
            _fail(root / TRIAL_FILES[f], f, f"has shape {meta[f].shape} but {TRIAL_FILES['trial_image_ids']} "
                  f"lists {n_trials} trials", "store one entry per trial in every meta/trials file")
    n_neurons = len(meta["unit_ids"])
    for f in NEURON_FILES:
        if meta[f].ndim != 1 or len(meta[f]) != n_neurons:
            _fail(root / NEURON_FILES[f], f, f"has shape {meta[f].shape} but {NEURON_FILES['unit_ids']} "
                  f"lists {n_neurons} neurons", "store one entry per neuron in every meta/neurons file")
    positions = None
    if (root / POSITIONS_FILE).exists():
        positions = _load(root / POSITIONS_FILE, "positions", allow_pickle)
        if positions.shape != (n_neurons, 3):
            _fail(root / POSITIONS_FILE, "positions", f"has shape {positions.shape}, expected ({n_neurons}, 3)",
                  "store x, y, z (um) per neuron, or delete the file")
        positions = positions.astype(np.float32)
    for f in ("trial_image_ids", "trial_idx", "unit_ids"):
        rel = {**TRIAL_FILES, **NEURON_FILES}[f]
        if not np.issubdtype(meta[f].dtype, np.integer):
            _fail(root / rel, f, f"has dtype {meta[f].dtype}, expected integers", "store integer ids")

    counted_in = root / TRIAL_FILES["trial_image_ids"]
    files = {f: _trial_files(root / "data" / f, f, n_trials, counted_in) for f in DATA_FIELDS}
    images, image_ids = _load_images(files["images"], meta["trial_image_ids"])
    responses = _load_stack(files["responses"], "responses", (n_neurons,), np.float32,
                            f"{root / NEURON_FILES['unit_ids']} ({n_neurons} neurons)")
    bad = ~np.isfinite(responses)
    if bad.any():
        k, a = np.argwhere(bad)[0]
        _fail(files["responses"][k], "responses", f"NaN or infinite response of neuron {a} "
              f"({int(bad.any(1).sum())} trial files affected)", "repair or remove those trials")
    behavior = _load_stack(files["behavior"], "behavior", (3,), np.float32,
                           "the format (pupil size, its derivative, running speed)")
    pupil_center = _load_stack(files["pupil_center"], "pupil_center", (2,), np.float32, "the format (x, y)")

    tiers = map_sensorium_tiers(meta["tiers"], meta["trial_image_ids"], str(root / TRIAL_FILES["tiers"]))
    keep = tiers != "none"
    if not keep.any():
        _fail(root / TRIAL_FILES["tiers"], "tiers", "every trial is 'none'", "mark the usable trials with a tier")
    trial_image_ids = meta["trial_image_ids"].astype(np.int64)
    shown = np.isin(image_ids, trial_image_ids[keep])  # drop images seen only on dropped trials
    images, image_ids = images[shown], image_ids[shown]
    scan = ScanData(
        images=images, image_ids=image_ids, trial_idx=meta["trial_idx"].astype(np.int64)[keep],
        trial_image_ids=trial_image_ids[keep], tiers=tiers[keep], responses=responses[keep],
        behavior=behavior[keep], pupil_center=pupil_center[keep], unit_ids=meta["unit_ids"].astype(np.int64),
        areas=meta["areas"].astype(str), layers=meta["layers"].astype(str), positions=positions,
        source=str(root), extra={"dropped_none_trials": int((~keep).sum())})
    try:
        return scan.validate()
    except RecordingError as e:  # name the file that holds the rejected field
        msg = str(e).removeprefix(f"{scan.source}: ")
        m = re.search(r"field '(\w+)'", msg)
        rel = FIELD_FILES.get(m.group(1)) if m else None
        raise RecordingError(f"{root / rel if rel else root}: {msg}") from None


# -------------------------------------------------------------------------------------------- writing

def _statistics(arr: np.ndarray, per_column: bool) -> dict[str, np.ndarray]:
    """mean / std / min / max / median over trials (per column, or of all values for images)."""
    axis = 0 if per_column else None
    return {"mean": np.mean(arr, axis), "std": np.std(arr, axis), "min": np.min(arr, axis),
            "max": np.max(arr, axis), "median": np.median(arr, axis)}


def write_filetree(scan: ScanData, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write a validated scan as a Sensorium / neuralpredictors static file tree in the folder ``path``.

    File k holds row k of the per-trial arrays; images are written per trial as (1, H, W) in the dtype
    of ``scan.images``; tiers are ours (train / validation / test / oracle). The tree is written into a
    temporary sibling folder and moved into place, so a failure leaves no half-written tree.
    An existing tree at ``path`` is an error unless ``overwrite`` (then its data/ and meta/ are replaced).
    """
    scan.validate()
    root = Path(path)
    if (root / "data").exists() or (root / "meta").exists():
        if not overwrite:
            _fail(root, "path", "already holds a file tree (data/ or meta/)",
                  "choose an empty folder or pass overwrite=True")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".filetree-", dir=root))
    try:
        per_trial = {"images": scan.images[scan.image_index()][:, None], "responses": scan.responses,
                     "behavior": scan.behavior, "pupil_center": scan.pupil_center}
        for field, arr in per_trial.items():
            folder = tmp / "data" / field
            folder.mkdir(parents=True)
            for k in range(scan.n_trials):
                np.save(folder / f"{k}.npy", arr[k])
            stats = _statistics(arr, per_column=field != "images")
            for name in ("all", "stimulus_frame"):  # one kind of frame here, so both are over all trials
                sdir = tmp / "meta" / "statistics" / field / name
                sdir.mkdir(parents=True)
                for stat, val in stats.items():
                    np.save(sdir / f"{stat}.npy", np.asarray(val, dtype=np.float32))
        meta = {TRIAL_FILES["trial_image_ids"]: scan.trial_image_ids.astype(np.int64),
                TRIAL_FILES["tiers"]: np.asarray(scan.tiers).astype("<U10"),
                TRIAL_FILES["trial_idx"]: scan.trial_idx.astype(np.int64),
                NEURON_FILES["unit_ids"]: scan.unit_ids.astype(np.int64),
                NEURON_FILES["areas"]: np.asarray(scan.areas).astype(str),
                NEURON_FILES["layers"]: np.asarray(scan.layers).astype(str)}
        if scan.positions is not None:
            meta[POSITIONS_FILE] = np.asarray(scan.positions, dtype=np.float32)
        for rel, arr in meta.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp / rel, arr)
        for sub in ("data", "meta"):
            if (root / sub).exists():
                shutil.rmtree(root / sub)
            os.replace(tmp / sub, root / sub)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
