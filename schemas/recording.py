"""recording: animals, scans, their neurons, the images shown and every trial's responses and behaviour.

A scan's trials x neurons response matrix is stored in blocks of rows (``Responses``) so that it loads in one
query and no row grows past what a server's redo log takes; row ``Trial.row`` of the matrix is that trial, column
``Scan.Unit.unit_index`` that neuron. Scans enter only through :func:`ingest_scan`, all or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib

import datajoint as dj
import numpy as np

from neural_reg.database import acquire_lock, check_packet_size, release_lock
from pipeline.digests import array_digest
from pipeline.recording.scan_data import BEHAVIOR_NAMES, TIERS, RecordingError, ScanData

from . import codecs  # noqa: F401  (registers <ndarray>)

schema = dj.Schema()

BLOCK_BYTES = 32 * 2**20  # rows of responses per stored block: at most 32 MB


@schema
class Animal(dj.Manual):
    definition = """
    animal_id : varchar(32)
    ---
    species = 'Mus musculus' : varchar(64)
    description = '' : varchar(255)
    """


@schema
class ImageSet(dj.Manual):
    definition = """
    # a set of stimuli that scans share; targets are indexed by its image ids
    image_set : varchar(64)
    ---
    height : int16
    width : int16
    description = '' : varchar(255)
    """


@schema
class Image(dj.Manual):
    definition = """
    -> ImageSet
    image_id : int64
    ---
    pixels : <ndarray>              # (height, width) float32 grayscale, 0..255
    provenance = '' : varchar(255)  # e.g. the photograph and crop, or the ImageNet class
    source = '' : varchar(64)       # the photograph the image was cut from ('' unknown): held-out sets split by it
    """


@schema
class Scan(dj.Manual):
    definition = """
    -> Animal
    session : int16
    scan_idx : int16
    ---
    -> ImageSet
    area = 'V1' : varchar(16)
    depth = null : float32          # um below the pia
    source : varchar(1000)          # the folder or the simulator call it came from
    source_format : enum('filetree', 'simulator')
    n_neurons : int32
    n_trials : int32
    checksum : char(40)             # SHA-1 of the trials x neurons responses and every trial's image, tier, behaviour
    ingested = CURRENT_TIMESTAMP : datetime
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit_id : int64
        ---
        unit_index : int32             # column of the scan's response matrix
        area : varchar(16)
        layer : varchar(16)
        position = null : <blob>       # (3,) cortical position in um, where known
        """


@schema
class Trial(dj.Manual):
    definition = """
    -> Scan
    trial_idx : int32
    ---
    -> Image
    row : int32                     # row of the scan's response matrix
    tier : enum('train', 'validation', 'test', 'oracle')
    pupil_size : float64
    pupil_size_derivative : float64
    running_speed : float64
    pupil_x : float64
    pupil_y : float64
    """


@schema
class Responses(dj.Manual):
    definition = """
    # the scan's trials x neurons matrix, in blocks of consecutive rows
    -> Scan
    block : int16
    ---
    first_row : int32
    responses : <npfile@bulk>       # (rows, n_neurons) float32
    """


assert TIERS == ("train", "validation", "test", "oracle")  # the enum above


def scan_key(animal_id: str, session: int, scan_idx: int) -> dict:
    return {"animal_id": animal_id, "session": int(session), "scan_idx": int(scan_idx)}


def ingest_scan(scan: ScanData, key: dict, image_set: str, source_format: str,
                image_provenance: str = "", image_set_description: str = "") -> dict:
    """Validate a scan and write it, its units, images, trials and responses in one transaction.

    Nothing is written if anything is wrong: the scan already exists, the data fail validation, or an image id
    of the image set already holds different pixels. Returns the scan key.

    Concurrent ingests (many workers, one server) are safe: ingests into one image set take turns on a
    server-wide lock of that set (see :func:`image_set_lock`), so the second sees the first's image set and images
    committed, adds only the images it lacks and checks the shared ones' pixels; two scans entering one new
    image set at once both succeed. The loser of a race to ingest the same scan twice gets the "already in the
    database" error, also when the two went into different image sets (its transaction rolls back whole).
    """
    scan.validate()
    key = scan_key(**key)
    _check_new_scan(scan, key)  # fail fast; checked again under the lock
    height, width = scan.images.shape[1:]
    # canonical order: rows by trial_idx, columns by unit_id
    rows = np.argsort(scan.trial_idx, kind="stable")
    cols = np.argsort(scan.unit_ids, kind="stable")
    responses = np.ascontiguousarray(scan.responses[np.ix_(rows, cols)], dtype=np.float32)
    trial_idx, image_ids = scan.trial_idx[rows], scan.trial_image_ids[rows]
    tiers, behavior, pupil = np.asarray(scan.tiers)[rows], scan.behavior[rows], scan.pupil_center[rows]

    units = [dict(key, unit_id=int(scan.unit_ids[c]), unit_index=i, area=str(scan.areas[c]),
                  layer=str(scan.layers[c]),
                  position=None if scan.positions is None else np.asarray(scan.positions[c], np.float32))
             for i, c in enumerate(cols)]
    trials = [dict(key, trial_idx=int(trial_idx[r]), image_set=image_set, image_id=int(image_ids[r]), row=r,
                   tier=str(tiers[r]), pupil_x=float(pupil[r, 0]), pupil_y=float(pupil[r, 1]),
                   **{name: float(behavior[r, b]) for b, name in enumerate(BEHAVIOR_NAMES)})
              for r in range(len(rows))]
    block_rows = max(1, BLOCK_BYTES // (4 * responses.shape[1]))
    blocks = [dict(key, block=b, first_row=start, responses=responses[start:start + block_rows])
              for b, start in enumerate(range(0, responses.shape[0], block_rows))]

    with image_set_lock(image_set, scan.source):
        # Under the lock (taken before the transaction, so its snapshot holds whatever an earlier holder
        # committed), what is read here stays true until the commit: only lock holders write an image set.
        _check_new_scan(scan, key)
        existing_set = (ImageSet & {"image_set": image_set}).to_dicts()
        if existing_set and (existing_set[0]["height"], existing_set[0]["width"]) != (height, width):
            raise RecordingError(f"{scan.source}: field 'images': {height} x {width} pixels, but image set "
                                 f"'{image_set}' holds {existing_set[0]['height']} x {existing_set[0]['width']}. "
                                 "Fix: ingest it under another --image-set name.")
        new_images = _images_to_insert(scan, image_set)
        # a server that would refuse a row for its size says so now, naming max_allowed_packet, not mid-transaction
        check_packet_size(Scan.connection, sum(p.nbytes for _, p in new_images), f"{scan.source}: its new images",
                          rows=max(1, len(new_images)))
        check_packet_size(Scan.connection, max(b["responses"].nbytes for b in blocks),
                          f"{scan.source}: a block of its responses")
        with Scan.connection.transaction:
            try:
                if not existing_set:
                    ImageSet.insert1(dict(image_set=image_set, height=height, width=width,
                                          description=image_set_description))
                sources = _image_sources(scan)
                Image.insert([dict(image_set=image_set, image_id=int(i), pixels=p, provenance=image_provenance,
                                   source=sources.get(int(i), "")) for i, p in new_images])
            except dj.errors.DuplicateError as err:  # only a writer that bypassed ingest_scan gets here
                raise RecordingError(f"{scan.source}: image set '{image_set}' was changed by a writer outside "
                                     f"ingest_scan during this ingest ({err.args[0]}). Fix: ingest it again; "
                                     "nothing of it was written") from err
            Animal.insert1(dict(animal_id=key["animal_id"]), skip_duplicates=True)
            try:
                Scan.insert1(dict(key, image_set=image_set, source=str(scan.source)[:1000],
                                  source_format=source_format, n_neurons=scan.n_neurons, n_trials=scan.n_trials,
                                  checksum=scan_checksum(responses, image_ids, tiers, behavior, pupil)))
            except dj.errors.DuplicateError as err:  # the same scan, ingested at once into another image set
                raise _already_there(scan, key) from err
            Scan.Unit.insert(units)
            Trial.insert(trials)
            for block in blocks:
                Responses.insert1(block)
    return key


LOCK_TIMEOUT_S = 600  # how long an ingest waits for another one into the same image set (paper size: ~7 s each)


@contextlib.contextmanager
def image_set_lock(image_set: str, source="", timeout: float | None = None):
    """Hold the server-wide lock of ``image_set`` (in this schema) inside the block: ingests take turns per set.

    timeout: seconds to wait for it (None: LOCK_TIMEOUT_S), then a RecordingError.

    A MySQL/MariaDB user-level lock (GET_LOCK), a session-level advisory lock on PostgreSQL: it needs no
    privilege, is never part of a deadlock with row locks, and is released when the block ends or the connection drops. Different image sets (and schema
    prefixes) have different locks.
    """
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    connection = ImageSet.connection
    name = image_set_lock_name(image_set)
    if not acquire_lock(connection, name, timeout):  # GET_LOCK; pg_try_advisory_lock on PostgreSQL
        raise RecordingError(f"{source}: another ingest into image set '{image_set}' was still running after "
                             f"{timeout:g} s of waiting for it (or the server refused the lock). Fix: let it "
                             "finish, then ingest again; nothing was written")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a dropped connection has released it already
            release_lock(connection, name)


def image_set_lock_name(image_set: str) -> str:
    """The user-level lock's name: per schema and image set, within MySQL's 64 characters."""
    return f"neuralreg-imageset-{hashlib.md5(f'{ImageSet.database}.{image_set}'.encode()).hexdigest()}"


def _already_there(scan: ScanData, key: dict) -> RecordingError:
    pairs = " ".join(f"{k}={v}" for k, v in key.items())
    return RecordingError(f"{scan.source}: scan {key} is already in the database. Fix: choose another "
                          f"session/scan index, or delete it first: neural-reg delete scan {pairs} (it lists what "
                          "goes with it and asks; a scan in a scan group needs --part-integrity cascade)")


def _check_new_scan(scan: ScanData, key: dict) -> None:
    if Scan & key:
        raise _already_there(scan, key)


def scan_checksum(responses, image_ids, tiers, behavior, pupil_center) -> str:
    """What a scan's downstream three-part makes verify instead of re-hashing the arrays (all in row order)."""
    return array_digest(np.asarray(responses, np.float32), np.asarray(image_ids, np.int64),
                        np.asarray(tiers, str), np.asarray(behavior, np.float32), np.asarray(pupil_center, np.float32))


def _image_sources(scan: ScanData) -> dict[int, str]:
    """{image_id: the photograph it was cut from} where the reader knows it (ScanData.image_sources), else {}."""
    sources = getattr(scan, "image_sources", None)
    if sources is None:
        return {}
    return {int(i): str(src)[:64] for i, src in zip(np.asarray(scan.image_ids), np.asarray(sources))}


def load_image_sources(image_set: str, image_ids) -> np.ndarray:
    """(n,) str: the source photograph of each of ``image_ids`` (in their order; '' where unknown)."""
    ids, sources = (Image & {"image_set": image_set}).to_arrays("image_id", "source")
    lookup = dict(zip(ids.astype(np.int64).tolist(), sources))
    return np.array([lookup.get(int(i), "") for i in np.asarray(image_ids)], dtype=object)


def _images_to_insert(scan: ScanData, image_set: str) -> list[tuple[int, np.ndarray]]:
    """Images of the scan that the set lacks; an id the set already has must hold the same pixels."""
    ids = np.asarray(scan.image_ids)
    known = (Image & {"image_set": image_set}).to_arrays("image_id") if ImageSet & {"image_set": image_set} \
        else np.array([], np.int64)
    shared = np.isin(ids, known)
    if shared.any():
        stored_ids, stored = load_images(image_set, ids[shared])
        order = np.searchsorted(stored_ids, ids[shared])
        differs = ~np.isclose(stored[order], scan.images[shared], atol=1e-3).all(axis=(1, 2))
        if differs.any():
            raise RecordingError(f"{scan.source}: field 'images': image {int(ids[shared][differs][0])} differs from "
                                 f"the image with that id already in image set '{image_set}'. Fix: ingest under "
                                 "another --image-set name, or correct the frame_image_id.")
    return [(int(i), np.asarray(p, np.float32)) for i, p in zip(ids[~shared], scan.images[~shared])]


def load_responses(key: dict) -> np.ndarray:
    """The scan's (n_trials, n_neurons) float32 response matrix, rows by trial_idx, columns by unit_id."""
    blocks = (Responses & key).to_arrays("responses", order_by="block")
    if len(blocks) == 0:
        raise RecordingError(f"no responses stored for scan {key}. Fix: ingest the scan again")
    return np.concatenate(list(blocks), axis=0) if len(blocks) > 1 else blocks[0]


def load_scan(key: dict) -> ScanData:
    """Read one scan back as a ScanData (the inverse of :func:`ingest_scan`, in canonical order)."""
    key = (Scan & key).fetch1("KEY")
    scan = (Scan & key).fetch1()
    trials = load_trials(key)
    units = (Scan.Unit & key).to_arrays("unit_id", "area", "layer", "position", order_by="unit_index")
    positions = None if any(p is None for p in units[3]) else np.stack(units[3]).astype(np.float32)
    image_ids, pixels = load_images(scan["image_set"], trials["image_id"])
    return ScanData(images=pixels, image_ids=image_ids, trial_idx=trials["trial_idx"],
                    trial_image_ids=trials["image_id"], tiers=trials["tier"], responses=load_responses(key),
                    behavior=trials["behavior"], pupil_center=trials["pupil_center"],
                    unit_ids=units[0].astype(np.int64), areas=np.asarray(units[1], str),
                    layers=np.asarray(units[2], str), positions=positions, source=scan["source"])


def load_trials(key: dict) -> dict:
    """The scan's trials as arrays in response-matrix row order: trial_idx, image_id, tier, behavior (n, 3),
    pupil_center (n, 2)."""
    cols = (Trial & key).to_arrays("trial_idx", "image_id", "tier", *BEHAVIOR_NAMES, "pupil_x", "pupil_y",
                                   order_by="row")
    return {"trial_idx": cols[0].astype(np.int64), "image_id": cols[1].astype(np.int64),
            "tier": np.asarray(cols[2], dtype=str),
            "behavior": np.stack(cols[3:6], axis=1).astype(np.float32),
            "pupil_center": np.stack(cols[6:8], axis=1).astype(np.float32)}


def load_images(image_set: str, image_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids (n,), pixels (n, H, W) float32) of an image set, sorted by id; all of them if image_ids is None."""
    ids, pixels = (Image & {"image_set": image_set}).to_arrays("image_id", "pixels", order_by="image_id")
    ids = ids.astype(np.int64)
    keep = np.ones(len(ids), bool) if image_ids is None else np.isin(ids, image_ids)
    if image_ids is not None and keep.sum() < len(np.unique(image_ids)):
        missing = np.setdiff1d(image_ids, ids)[:5].tolist()
        raise RecordingError(f"image set {image_set!r} has no images {missing}. Fix: ingest the scans that "
                             "showed them")
    return ids[keep], np.stack([p for p, k in zip(pixels, keep) if k]).astype(np.float32)
