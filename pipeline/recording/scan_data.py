"""One scan's recording in memory: the contract between readers, the simulator and the database.

Every source of recordings (the Sensorium file tree, the simulator) produces a :class:`ScanData`;
the ingest validates it and writes it to the recording schema in one transaction.

Shapes (n_trials trials, n_neurons neurons, n_images distinct images of H x W pixels):

- images            (n_images, H, W) float32, grayscale, the stimuli, row k is image ``image_ids[k]``
- image_ids         (n_images,) int64, unique
- trial_idx         (n_trials,) int64, unique trial numbers within the scan
- trial_image_ids   (n_trials,) int64, the image shown on each trial (an entry of ``image_ids``)
- tiers             (n_trials,) str, one of TIERS; trials of repeated images are 'oracle'
- responses         (n_trials, n_neurons) float32, finite
- behavior          (n_trials, 3) float32: pupil size, its derivative, running speed
- pupil_center      (n_trials, 2) float32: eye position (x, y)
- unit_ids          (n_neurons,) int64, unique
- areas, layers     (n_neurons,) str
- positions         (n_neurons, 3) float32 cortical position, or None where unknown
- image_sources     (n_images,) str, the photograph each image was taken from (row k: image ``image_ids[k]``),
                    or None for readers that do not know; lets a caller hold images out by source
"""

from __future__ import annotations

from pipeline.errors import NeuralRegError

from dataclasses import dataclass, field

import numpy as np

TIERS = ("train", "validation", "test", "oracle")
BEHAVIOR_NAMES = ("pupil_size", "pupil_size_derivative", "running_speed")


class RecordingError(NeuralRegError):
    """Bad input: the message names the file (or source), the field and the fix."""


@dataclass
class ScanData:
    images: np.ndarray
    image_ids: np.ndarray
    trial_idx: np.ndarray
    trial_image_ids: np.ndarray
    tiers: np.ndarray
    responses: np.ndarray
    behavior: np.ndarray
    pupil_center: np.ndarray
    unit_ids: np.ndarray
    areas: np.ndarray
    layers: np.ndarray
    positions: np.ndarray | None = None
    source: str = "<memory>"  # where it came from, named in error messages
    extra: dict = field(default_factory=dict)  # e.g. the simulator's ground truth
    image_sources: np.ndarray | None = None  # (n_images,) str photograph of each image, None where unknown

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    def image_index(self) -> np.ndarray:
        """(n_trials,) int: row of ``images`` shown on each trial."""
        order = np.argsort(self.image_ids)
        pos = np.searchsorted(self.image_ids, self.trial_image_ids, sorter=order)
        return order[np.clip(pos, 0, len(order) - 1)]

    def validate(self) -> "ScanData":
        """Check shapes, dtypes, finiteness and the oracle repeats; raise RecordingError naming the field."""

        def fail(fld: str, problem: str, fix: str):
            raise RecordingError(f"{self.source}: field '{fld}': {problem}. Fix: {fix}")

        r = self.responses
        if r.ndim != 2:
            fail("responses", f"expected a 2-D trials x neurons array, got shape {r.shape}",
                 "store one response vector per trial")
        nt, nn = r.shape
        if nt == 0 or nn == 0:
            fail("responses", f"empty ({nt} trials x {nn} neurons)", "record at least one trial and neuron")
        bad = ~np.isfinite(r)
        if bad.any():
            t, n = np.argwhere(bad)[0]
            fail("responses", f"{int(bad.sum())} NaN or infinite values (first at trial {t}, neuron {n})",
                 "drop or repair those trials before ingesting")
        per_trial = {"trial_idx": self.trial_idx, "trial_image_ids": self.trial_image_ids,
                     "tiers": self.tiers, "behavior": self.behavior, "pupil_center": self.pupil_center}
        for name, arr in per_trial.items():
            if arr.shape[0] != nt:
                fail(name, f"has {arr.shape[0]} trials but responses has {nt}",
                     "every per-trial field must have one entry per trial")
        if self.behavior.shape != (nt, 3):
            fail("behavior", f"expected shape ({nt}, 3) for {BEHAVIOR_NAMES}, got {self.behavior.shape}",
                 "store pupil size, its derivative and running speed per trial")
        if self.pupil_center.shape != (nt, 2):
            fail("pupil_center", f"expected shape ({nt}, 2), got {self.pupil_center.shape}",
                 "store the eye position (x, y) per trial")
        for name in ("behavior", "pupil_center"):
            if not np.isfinite(getattr(self, name)).all():
                fail(name, "NaN or infinite values", "interpolate or drop those trials")
        if len(np.unique(self.trial_idx)) != nt:
            fail("trial_idx", "trial numbers repeat", "give every trial a unique index")
        bad_tiers = sorted(set(map(str, self.tiers)) - set(TIERS))
        if bad_tiers:
            fail("tiers", f"unknown tiers {bad_tiers}", f"use one of {TIERS}")
        per_neuron = {"unit_ids": self.unit_ids, "areas": self.areas, "layers": self.layers}
        if self.positions is not None:
            per_neuron["positions"] = self.positions
        for name, arr in per_neuron.items():
            if arr.shape[0] != nn:
                fail(name, f"has {arr.shape[0]} neurons but responses has {nn}",
                     "every per-neuron field must have one entry per neuron")
        if len(np.unique(self.unit_ids)) != nn:
            fail("unit_ids", "unit ids repeat", "give every neuron a unique id")
        if self.images.ndim != 3:
            fail("images", f"expected (n_images, height, width) grayscale, got shape {self.images.shape}",
                 "store one 2-D grayscale image per stimulus")
        if self.images.shape[0] != self.image_ids.shape[0]:
            fail("image_ids", f"{self.image_ids.shape[0]} ids for {self.images.shape[0]} images",
                 "give one id per image")
        if len(np.unique(self.image_ids)) != len(self.image_ids):
            fail("image_ids", "image ids repeat", "give every distinct image one id")
        if not np.isfinite(self.images).all():
            fail("images", "NaN or infinite pixels", "repair the stimulus files")
        if self.image_sources is not None:
            src = np.asarray(self.image_sources)
            if src.shape != (self.images.shape[0],):
                fail("image_sources", f"expected shape ({self.images.shape[0]},) (one per image), got {src.shape}",
                     "give the photograph name of every image, in the row order of images, or None")
            if src.dtype.kind not in "UO" or not all(isinstance(s, str) and s for s in src.tolist()):
                fail("image_sources", f"entries must be non-empty strings, got dtype {src.dtype}",
                     "name each image's photograph (e.g. 'astronaut'), or pass None where unknown")
        unknown = np.setdiff1d(self.trial_image_ids, self.image_ids)
        if unknown.size:
            fail("trial_image_ids", f"trials show images {unknown[:5].tolist()} that have no pixels",
                 "add those images or drop the trials")
        oracle = np.asarray(self.tiers) == "oracle"
        if oracle.any():
            ids, counts = np.unique(self.trial_image_ids[oracle], return_counts=True)
            few = ids[counts < 2]
            if few.size:
                fail("tiers", f"oracle images {few[:5].tolist()} have fewer than 2 repeats",
                     "an oracle image needs at least 2 repeats; mark single presentations 'test' or 'train'")
        return self
