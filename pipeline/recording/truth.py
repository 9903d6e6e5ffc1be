"""The noise-free truth of a simulated scan, regenerated from what the database stores about it (no database here).

A scan ingested from the simulator (``Scan.source_format == 'simulator'``) stores its simulator call in
``Scan.source`` as ``simulator(seed=S, scan=K)``. The simulator is deterministic: scan K of model animal S records
the neurons of ``pipeline.recording.simulator.scan_model(S, K, n_neurons)``, and its noise-free rate to an image
at the scan's mean behaviour (centred eye) is ``model.rates(images, mean behaviour)`` (the ``mean_rates`` of
``simulate_scans``). So the truth can be regenerated from the stored source, neuron count, images and trial
behaviour, PROVIDED the scan was simulated with the model's default keyword arguments (``ingest_simulated`` passes
none). That proviso is checked, as far as the stored data allow, by comparing the regenerated neurons' cortical
positions with the stored ``Scan.Unit.position``: a mismatch (another seed, another scan index, other neurons)
means the truth is not this scan's, and :func:`simulated_model` raises instead of returning a wrong one.

Used by the 'neural-truth' target (schemas.target) and by the report's Fig 1D (pipeline.report.truth re-exports
these functions, raising the report's own error class).
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.errors import NeuralRegError

__all__ = ["SOURCE_PATTERN", "TruthError", "parse_simulator_source", "simulated_model", "simulator_truth",
           "trial_truth", "truth_correlation"]

SOURCE_PATTERN = re.compile(r"^simulator\(seed=(-?\d+), scan=(\d+)\)$")


class TruthError(NeuralRegError):
    """No noise-free truth can be regenerated for a scan: the message says why and what to do."""


def parse_simulator_source(source: str) -> tuple[int, int]:
    """(seed, scan index) of a ``Scan.source`` written by ``simulate_scans``; TruthError otherwise."""
    m = SOURCE_PATTERN.match(str(source).strip())
    if not m:
        raise TruthError(f"Scan.source {source!r} is not a simulator call 'simulator(seed=S, scan=K)': "
                         "the noise-free truth cannot be regenerated (only simulated scans have one)")
    return int(m.group(1)), int(m.group(2))


def simulated_model(source: str, n_neurons: int, positions=None, atol: float = 1e-3):
    """The ``ModelV1`` population a simulated scan recorded, regenerated from its ``Scan.source``.

    positions: (n_neurons, 3) the stored unit positions in unit_index order (None skips the check). Raises
    TruthError when the source is no simulator call or the regenerated positions differ by more than ``atol`` um.
    """
    from pipeline.recording.simulator import scan_model

    seed, scan = parse_simulator_source(source)
    model = scan_model(seed, scan, int(n_neurons))
    if positions is not None:
        stored = np.asarray(positions, np.float64)
        if stored.shape != model.positions.shape or not np.allclose(stored, model.positions, atol=atol):
            raise TruthError(f"{source}: the regenerated neurons' positions differ from the stored "
                             "Scan.Unit.position, so these are not the scan's neurons (simulated with "
                             "other model arguments?): no noise-free truth")
    return model


def simulator_truth(source: str, n_neurons: int, images, mean_behavior, positions=None,
                    atol: float = 1e-3) -> np.ndarray:
    """(n_images, n_neurons) float32 noise-free rates of a simulated scan's neurons to ``images``.

    source: the scan's ``Scan.source``; n_neurons: ``Scan.n_neurons``; images: (n_images, H, W) pixels in
    [0, 255] (``recording.load_images``); mean_behavior: (3,) the mean over the scan's trials of (pupil size,
    its derivative, running speed); positions: (n_neurons, 3) the stored unit positions in unit_index order
    (None skips the check). Raises TruthError, saying why, when the source is no simulator call, or the
    regenerated neurons' positions differ from the stored ones by more than ``atol`` um.
    """
    model = simulated_model(source, n_neurons, positions, atol)
    images = np.asarray(images, np.float32)
    behavior = np.asarray(mean_behavior, np.float64).reshape(3)
    return model.rates(images, behavior, None)


def trial_truth(source: str, n_neurons: int, trial_images, behavior, pupil_center, positions=None,
                atol: float = 1e-3) -> np.ndarray:
    """(n_trials, n_neurons) float32 noise-free rates on each trial, with that trial's own behaviour (n_trials, 3)
    and eye position (n_trials, 2), to the image it showed (trial_images: (n_trials, H, W) in [0, 255]): what a
    perfect predictive model would predict for those trials."""
    model = simulated_model(source, n_neurons, positions, atol)
    return model.rates(np.asarray(trial_images, np.float32), np.asarray(behavior, np.float64),
                       np.asarray(pupil_center, np.float64))


def truth_correlation(truth, measured) -> np.ndarray:
    """v of Eq 6 for the truth: per-neuron Pearson r of the noise-free rates and the measured single trials.

    truth, measured: (n_trials, n_neurons) on the same held-out trials (``trial_truth`` and the scan's
    responses). Returns (n_neurons,) float64, 0 for a neuron without variance, exactly as the predictor's v
    (``pipeline.predictor.train.correlation_per_neuron``). It is the ceiling of any predictor's v: the noise
    alone keeps it below 1.
    """
    from pipeline.predictor.train import correlation_per_neuron

    return correlation_per_neuron(measured, truth)
