"""How strong is an attack preset's minimum on the demo's classifiers? Both independent checks say (issue 14).

For seed 0 of every demo condition whose regulariser name contains one of the given words, the preset's attacks
of each headline norm run on the first N test samples (``robustness.test_samples``, seed 0) and their per-sample
minimum is attacked again by ART's APGD (``attacks.art_check``) and by this project's ensemble
(``attacks.check.independent_check``, 1 restart) at 0.995 x the minimum. Prints per classifier and norm the preset's
seconds, the median minimum and the share each check beats, and both together. Needs the demo's database.

    .venv/bin/python benchmarks/preset_check.py [N WORDS PRESET]   # default 40 None,Neural,Adversarial fast
    (about 5 minutes per classifier on 2 cores; 'Neural' also matches 'Neural (data)' and 'Neural (truth)')
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(n: int, words: list[str], preset: str = "fast") -> None:
    import schemas

    schemas.activate()
    from neural_reg import queries
    from pipeline.robustness.attacks import minimal_perturbations, preset_configs, resolve_attack_config, warm_up
    from pipeline.robustness.attacks.art_check import art_check
    from pipeline.robustness.attacks.check import independent_check
    from pipeline.robustness.samples import select_samples
    from schemas import classifier, robustness

    base = queries.classifiers()
    pk = classifier.TrainedClassifier.primary_key
    warm_up(("L2",))
    for k, regulariser, seed in zip(base["key"], base["regulariser"], base["seed"]):
        if seed != 0 or not any(w in regulariser for w in words):
            continue
        key = {p: k[p] for p in pk} if isinstance(k, dict) else dict(zip(pk, k))
        _, x, y = robustness.test_samples(key, None, 0)
        model = classifier.load_trained(key).eval()
        idx = select_samples(len(x), n, seed=0)
        xs, ys = x[idx], y[idx]
        for norm in ("Linf", "L2"):
            t0, ds = time.perf_counter(), []
            for name, cfg in preset_configs(preset).items():
                if name.startswith(norm + "-"):
                    cfg = resolve_attack_config({**cfg, "n_samples": n, "batch_size": n, "seed": 0})
                    ds.append(minimal_perturbations(model, xs, ys, cfg, progress=False).distances)
            t = time.perf_counter() - t0
            d = np.min(ds, axis=0)
            ra = art_check(model, xs, ys, d, norm)
            rp = independent_check(model, xs, ys, d, norm, restarts=1)
            both = ra.beaten | rp.beaten
            print(f"{regulariser} {norm}: {preset} {t:.0f}s median {np.median(d):.4f}; beaten art "
                  f"{ra.beaten.mean():.3f} project {rp.beaten.mean():.3f} either {both.mean():.3f} "
                  f"of {len(ra.beaten)}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    args = sys.argv[1:]  # make bench runs it bare: the measurement of the note
    main(int(args[0]) if args else 40, (args[1] if len(args) > 1 else "None,Neural,Adversarial").split(","),
         *(args[2:3]))
