"""The noise-free truth of a simulated scan, regenerated from what the database stores about it (no database here).

A scan ingested from the simulator (``Scan.source_format == 'simulator'``) stores its simulator call in
``Scan.source`` as ``simulator(seed=S, scan=K)``. The simulator is deterministic: scan K of model animal S records
the neurons of ``pipeline.recording.simulator.scan_model(S, K, n_neurons)``, and its noise-free rate to an image
at the scan's mean behaviour (centred eye) is ``model.rates(images, mean behaviour)`` (the ``mean_rates`` of
``simulate_scans``). So the truth can be regenerated from the stored source, neuron count, images and trial
behaviour, PROVIDED the scan was simulated with the model's default keyword arguments (``ingest_simulated`` passes
none). That proviso is checked, as far as the stored data allow, by comparing the regenerated neurons' cortical
positions with the stored ``Scan.Unit.position``: a mismatch (another seed, another scan index, other neurons)
means the truth is not this scan's, and :func:`simulator_truth` raises instead of returning a wrong one.
"""

from __future__ import annotations

import re

import numpy as np

from .stats import ReportInputError

__all__ = ["SOURCE_PATTERN", "parse_simulator_source", "simulator_truth"]

SOURCE_PATTERN = re.compile(r"^simulator\(seed=(-?\d+), scan=(\d+)\)$")


def parse_simulator_source(source: str) -> tuple[int, int]:
    """(seed, scan index) of a ``Scan.source`` written by ``simulate_scans``; ReportInputError otherwise."""
    m = SOURCE_PATTERN.match(str(source).strip())
    if not m:
        raise ReportInputError(f"Scan.source {source!r} is not a simulator call 'simulator(seed=S, scan=K)': "
                               "the noise-free truth cannot be regenerated (only simulated scans have one)")
    return int(m.group(1)), int(m.group(2))


def simulator_truth(source: str, n_neurons: int, images, mean_behavior, positions=None,
                    atol: float = 1e-3) -> np.ndarray:
    """(n_images, n_neurons) float32 noise-free rates of a simulated scan's neurons to ``images``.

    source: the scan's ``Scan.source``; n_neurons: ``Scan.n_neurons``; images: (n_images, H, W) pixels in
    [0, 255] (``recording.load_images``); mean_behavior: (3,) the mean over the scan's trials of (pupil size,
    its derivative, running speed); positions: (n_neurons, 3) the stored unit positions in unit_index order
    (None skips the check). Raises ReportInputError, saying why, when the source is no simulator call, or the
    regenerated neurons' positions differ from the stored ones by more than ``atol`` um.
    """
    from pipeline.recording.simulator import scan_model

    seed, scan = parse_simulator_source(source)
    model = scan_model(seed, scan, int(n_neurons))
    if positions is not None:
        stored = np.asarray(positions, np.float64)
        if stored.shape != model.positions.shape or not np.allclose(stored, model.positions, atol=atol):
            raise ReportInputError(f"{source}: the regenerated neurons' positions differ from the stored "
                                   "Scan.Unit.position, so these are not the scan's neurons (simulated with "
                                   "other model arguments?): no noise-free truth")
    images = np.asarray(images, np.float32)
    behavior = np.asarray(mean_behavior, np.float64).reshape(3)
    return model.rates(images, behavior, None)
