"""The paper's claims about the neural side, checked on the simulator where the truth is known.

- Fig 1D: the predictive model's similarity (Eq 6) matches the noise-free similarity much better than the
  single-trial similarity (Eq 2) does (real mice: r = 0.73 vs 0.39 against the oracle similarity).
- Fig 1C: the similarity fluctuates much less across scans than across repeats.
- The predictor's held-out correlation is clearly above chance and below the oracle ceiling.
"""

import numpy as np
import pytest
import torch

from pipeline.oracle.statistics import oracle_stats, repeat_fluctuations, scan_fluctuations
from pipeline.oracle.similarity import model_similarity, oracle_similarity, population_similarity
from pipeline.predictor.config import CPU_FAST_CONFIG
from pipeline.predictor.train import predict, train_predictor
from pipeline.recording.simulator import simulate_scans


def offdiag_r(a, b):
    iu = np.triu_indices(a.shape[0], 1)
    return float(np.corrcoef(a[iu], b[iu])[0, 1])


@pytest.fixture(scope="module")
def scans():
    # 2000 images (1600 to train on): with the RF-local normalisation of the simulator the cpu-fast predictor
    # needs them: trained on 560 images it reaches r(model, truth) 0.46 only, on 1200 0.61, on 1600 0.66, on 2400 0.69
    return simulate_scans(n_scans=3, n_neurons=250, n_images=2000, n_oracle_images=30, n_repeats=8, seed=4)


@pytest.fixture(scope="module")
def fig1d(scans):
    """For the first scan: (truth, single-trial data, model) similarity over its non-oracle images, and v."""
    torch.set_num_threads(1)
    scan = scans[0]
    oracle = scan.tiers == "oracle"
    w = oracle_stats(scan.responses[oracle], scan.trial_image_ids[oracle]).snr_weight
    single = ~oracle
    order = np.argsort(scan.trial_image_ids[single])
    image_ids = scan.trial_image_ids[single][order]
    rows = scan.image_index()[single][order]
    data = population_similarity(scan.responses[single][order], w)
    truth = population_similarity(scan.extra["mean_rates"][rows], w)
    result = train_predictor({"images": scan.images[scan.image_index()], "responses": scan.responses,
                              "behavior": scan.behavior, "pupil_center": scan.pupil_center, "tiers": scan.tiers},
                             CPU_FAST_CONFIG, seed=0, progress=False)
    predicted = predict(result.model(), scan.images[rows])
    model = model_similarity(predicted, w, result.correlation)
    assert len(np.unique(image_ids)) == len(image_ids)
    return truth, data, model, result, scan


def test_model_similarity_is_closer_to_the_truth_than_single_trials(fig1d):
    truth, data, model, _, _ = fig1d
    r_data, r_model = offdiag_r(data, truth), offdiag_r(model, truth)
    print(f"Fig 1D on the simulator: r(single-trial, truth) = {r_data:.2f}, r(model, truth) = {r_model:.2f}")
    assert r_model > r_data + 0.1
    assert r_model > 0.6


def test_predictor_is_above_chance_and_below_the_oracle_ceiling(fig1d):
    _, _, _, result, scan = fig1d
    oracle = scan.tiers == "oracle"
    ceiling = oracle_stats(scan.responses[oracle], scan.trial_image_ids[oracle]).oracle_correlation
    v = result.correlation
    print(f"predictor: mean v = {v.mean():.3f}, mean oracle correlation = {ceiling.mean():.3f}")
    # chance: a single neuron's v over 200 held-out trials spreads +-0.07 around 0; the mean of 250 +-0.005
    assert v.mean() > 0.1 and (v > 0.05).mean() > 0.6
    # the oracle correlation (mean of the other repeats) bounds what any image-driven model can reach
    assert v.mean() < ceiling.mean() + 0.05


def test_fluctuations_across_scans_are_narrower_than_across_repeats(scans):
    sims, repeats = [], []
    for scan in scans:
        oracle = scan.tiers == "oracle"
        r, ids = scan.responses[oracle], scan.trial_image_ids[oracle]
        w = oracle_stats(r, ids).snr_weight
        sims.append(oracle_similarity(r, ids, w)[0])
        repeats.append(repeat_fluctuations(r, ids, w))
    scan_width, repeat_width = np.std(scan_fluctuations(np.stack(sims))), np.std(np.concatenate(repeats))
    print(f"Fig 1C on the simulator: sd across scans {scan_width:.3f}, across repeats {repeat_width:.3f}")
    assert scan_width < 0.6 * repeat_width
