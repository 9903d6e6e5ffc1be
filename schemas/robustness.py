"""robustness: how each trained classifier stands up to noise, corruptions and minimal adversarial perturbations.

NoiseRobustness (Fig 4), CorruptionRobustness (CIFAR-10-C style), Adversarial (per attack: per-sample minimal
perturbations and the queries-vs-size curve, Fig 5), RobustnessScore (the Schott et al. per-sample minimum over
the attacks of an AttackSet, and its median), BrainLikeness (the classifier's similarity vs a neural target).
Every configuration is resolved and checked when it is entered (schemas.paramset).
"""

from __future__ import annotations

import contextlib
import functools
from types import SimpleNamespace

import datajoint as dj
import numpy as np

from neural_reg.logs import progress_enabled
from neural_reg.settings import load_settings
from pipeline.classifier import tasks
from pipeline.errors import ConfigError
from pipeline.robustness import attacks, corruptions, noise, scores
from pipeline.robustness import brain_likeness as bl
from pipeline.robustness.norms import NORMS
from pipeline.robustness.samples import select_samples
from pipeline.target.config import NEURAL_KINDS

from . import classifier, codecs, recording, target  # noqa: F401
from .paramset import ParamSet

schema = dj.Schema()
_NORM_ENUM = ", ".join(f"'{n}'" for n in NORMS)
POPULATE_ORDER = ("NoiseRobustness", "CorruptionRobustness", "Adversarial", "RobustnessScore", "BrainLikeness")
# robust accuracy at RobustBench's Linf and L2 thresholds; L1 and L0 have no common standard, these (10 and 12
# pixels' worth on 32 x 32 images in [0, 1]) are this project's reference points
THRESHOLDS = {**scores.ROBUSTBENCH_EPSILONS, "L1": 10.0, "L0": 12.0}


@functools.lru_cache(maxsize=2)
def _task(name: str, root: str) -> tasks.TaskData:
    """A task's arrays, read once per worker: every robustness row of a classifier needs the same test set."""
    return tasks.load_task(name, root=root)


def test_samples(key: dict, n_samples: int | None, seed: int):
    """(indices, x (n, 1, 32, 32), y) of the classifier's test set: a seeded subset, the same for every model."""
    task = _task(key["task"], str(load_settings().data_dir))
    idx = select_samples(len(task.test_y), n_samples, seed)
    return idx, task.test_x[idx], task.test_y[idx]


@schema
class NoiseConfig(ParamSet, dj.Manual):
    definition = """
    noise_hash : char(32)
    ---
    noise_name : varchar(64)
    params : <blob>                 # resolved: {'stds': [...], 'n_samples': int or None (all), 'seed': int}
    unique index (noise_name)
    """
    hash_attr, name_attr = "noise_hash", "noise_name"
    resolve = staticmethod(noise.resolve_noise_config)


@schema
class NoiseRobustness(dj.Computed):
    definition = """
    # Fig 4: accuracy under additive Gaussian noise (pixels in [0, 1], clipped); one noise draw for all models
    -> classifier.TrainedClassifier
    -> NoiseConfig
    ---
    stds : <ndarray>                # (k,)
    accuracy : <ndarray>            # (k,)
    n_samples : int32
    """

    def make(self, key):
        params = NoiseConfig.params_of(key)
        _, x, y = test_samples(key, params.get("n_samples"), params["seed"])
        acc = noise.noise_accuracy(classifier.load_trained(key), x, y, params["stds"], params["seed"])
        self.insert1(dict(key, stds=np.asarray(params["stds"], np.float32), accuracy=np.asarray(acc, np.float32),
                          n_samples=len(y)))


@schema
class CorruptionConfig(ParamSet, dj.Manual):
    definition = """
    corruption_hash : char(32)
    ---
    corruption_name : varchar(64)
    params : <blob>                 # resolved: {'corruptions': [...], 'severities': [...], 'n_samples', 'seed'}
    unique index (corruption_name)
    """
    hash_attr, name_attr = "corruption_hash", "corruption_name"
    resolve = staticmethod(corruptions.resolve_corruption_config)


@schema
class CorruptionRobustness(dj.Computed):
    definition = """
    # accuracy under CIFAR-10-C style corruptions of the grayscale test images
    -> classifier.TrainedClassifier
    -> CorruptionConfig
    ---
    mean_accuracy : float32         # over every corruption and severity
    n_samples : int32
    """

    class Score(dj.Part):
        definition = """
        -> master
        corruption : varchar(32)
        severity : int8
        ---
        accuracy : float32
        """

    def make(self, key):
        params = CorruptionConfig.params_of(key)
        _, x, y = test_samples(key, params.get("n_samples"), params["seed"])
        acc = corruptions.corruption_accuracy(classifier.load_trained(key), x, y, params["corruptions"],
                                              params["severities"], params["seed"])
        self.insert1(dict(key, mean_accuracy=float(np.mean(list(acc.values()))), n_samples=len(y)))
        self.Score.insert(dict(key, corruption=name, severity=int(sev), accuracy=float(a))
                          for (name, sev), a in acc.items())


@schema
class AttackConfig(ParamSet, dj.Manual):
    definition = f"""
    attack_hash : char(32)
    ---
    attack_name : varchar(64)
    norm : enum({_NORM_ENUM})
    params : <blob>                 # resolved: pipeline.robustness.attacks.resolve_attack_config
    unique index (attack_name)
    """
    hash_attr, name_attr = "attack_hash", "attack_name"
    resolve = staticmethod(attacks.resolve_attack_config)

    @classmethod
    def insert_attack(cls, name: str, params: dict) -> dict:
        resolved = attacks.resolve_attack_config(params)
        return cls.insert_params(name, resolved, norm=resolved["norm"])


@schema
class Adversarial(dj.Computed):
    definition = """
    # the smallest perturbation of each sample that flips the label, over one attack's sweep (re-verified)
    -> classifier.TrainedClassifier
    -> AttackConfig
    ---
    sample_idx : <ndarray>          # (n,) test-set indices
    distances : <ndarray>           # (n,) 0: already misclassified; inf: every run failed
    median : float32
    success_rate : float32
    queries_curve : <ndarray>       # (k, 2): model queries per sample, median perturbation so far (Fig 5)
    wall_time : float32             # s
    """

    def make(self, key):
        params = AttackConfig.params_of(key)
        idx, x, y = test_samples(key, params.get("n_samples"), params["seed"])
        result = attacks.minimal_perturbations(classifier.load_trained(key), x, y, params, keep_adversarials=False,
                                               progress=progress_enabled())
        self.insert1(dict(key, sample_idx=idx[result.indices], distances=result.distances.astype(np.float32),
                          median=float(scores.median_perturbation(result.distances)),
                          success_rate=float(np.mean(result.success)),
                          queries_curve=np.asarray(result.queries_curve, np.float32).reshape(-1, 2),
                          wall_time=float(result.wall_time)))


def _attack_set_members(attack_hashes) -> list[str]:
    hashes = sorted({str(h) for h in attack_hashes})
    if not hashes:
        raise ConfigError("an attack set needs at least one attack. Fix: list the attacks it takes the minimum over")
    return hashes


@schema
class AttackSet(ParamSet, dj.Manual):
    definition = """
    # the attacks whose per-sample minimum a RobustnessScore takes: adding an attack later changes no old score
    attack_set_hash : char(32)
    ---
    attack_set_name : varchar(64)
    params : <blob>                 # {'attacks': sorted attack hashes}
    unique index (attack_set_name)
    """
    hash_attr, name_attr = "attack_set_hash", "attack_set_name"
    resolve = staticmethod(lambda params: {"attacks": _attack_set_members(params["attacks"])})

    class Member(dj.Part):
        definition = """
        -> master
        -> AttackConfig
        """

    @classmethod
    def insert_attack_set(cls, name: str, attack_keys) -> dict:
        """An attack set of existing AttackConfig rows (keys or attack names); idempotent like every paramset."""
        hashes = []
        for k in attack_keys:
            query = AttackConfig & ({"attack_name": k} if isinstance(k, str) else k)
            if len(query) != 1:
                raise ConfigError(f"attack set {name!r}: attack {k!r} is not configured. Fix: enter it first "
                                  "(AttackConfig.insert_attack)")
            hashes.append(query.fetch1("attack_hash"))
        params = {"attacks": _attack_set_members(hashes)}
        with contextlib.nullcontext() if cls.connection.in_transaction else cls.connection.transaction:
            key = cls.insert_params(name, params)
            cls.Member.insert((dict(key, attack_hash=h) for h in params["attacks"]), skip_duplicates=True)
        return key


@schema
class RobustnessScore(dj.Computed):
    definition = """
    # per norm: the per-sample minimum over the attack set's Adversarial rows of the classifier, and its median
    -> classifier.TrainedClassifier
    -> AttackSet
    """

    class Norm(dj.Part):
        definition = f"""
        -> master
        norm : enum({_NORM_ENUM})
        ---
        median : float32                # the score: median over samples of the minimal perturbation
        robust_accuracy : float32       # fraction of samples whose minimal perturbation exceeds the threshold
        threshold : float32
        n_attacks : int32
        sample_idx : <ndarray>
        distances : <ndarray>           # (n,) per-sample minimum over attacks
        """

    @property
    def key_source(self):  # (classifier, attack set) pairs with every member attack done
        pairs = classifier.TrainedClassifier.proj() * AttackSet.proj()
        missing = (classifier.TrainedClassifier.proj() * AttackSet.Member.proj()) - Adversarial.proj()
        return pairs - missing

    def make(self, key):
        self.insert1(key)
        rows = (Adversarial * AttackConfig * AttackSet.Member & key).to_dicts()
        for norm in sorted({r["norm"] for r in rows}):
            runs = [r for r in rows if r["norm"] == norm]
            idx, best = scores.minimal_over_attacks(
                [SimpleNamespace(indices=r["sample_idx"], distances=r["distances"], norm=norm) for r in runs])
            self.Norm.insert1(dict(key, norm=norm, median=float(scores.median_perturbation(best)),
                                   robust_accuracy=float(scores.robust_accuracy(best, THRESHOLDS[norm])),
                                   threshold=THRESHOLDS[norm], n_attacks=len(runs), sample_idx=idx,
                                   distances=best.astype(np.float32)))


@schema
class BrainLikeness(dj.Computed):
    definition = """
    # correlation of the classifier's similarity (Eq 9-10) with a neural target, on the held-out images
    -> classifier.TrainedClassifier
    -> target.Target
    ---
    correlation : float32           # as trained: train-mode BN, the regulariser's channel-mean centring, gamma
    correlation_eval : float32      # eval-mode BN, per-element centring (Eq 2 on the features); see brain_likeness
    n_images : int32
    """

    class Layer(dj.Part):
        definition = """
        -> master
        layer : varchar(16)
        ---
        correlation : float32       # as trained
        correlation_eval : float32  # eval mode
        """

    @property
    def key_source(self):
        kinds = ", ".join(f"'{k}'" for k in NEURAL_KINDS)
        neural = target.Target * target.TargetConfig & f"kind in ({kinds})"
        return classifier.TrainedClassifier.proj() * neural.proj()

    def make(self, key):
        image_set, image_ids, heldout, S = (target.Target & key).fetch1("image_set", "image_ids", "heldout",
                                                                        "similarity")
        keep = heldout.astype(bool)
        _, stimuli = recording.load_images(image_set, image_ids[keep])
        gamma = dict(zip(*(classifier.TrainedClassifier.LayerWeight & key).to_arrays("layer", "gamma")))
        means = (classifier.TrainedClassifier & key).fetch1("similarity_means")
        model, target_block = classifier.load_trained(key), S[np.ix_(keep, keep)]
        trained, trained_layers = bl.brain_likeness_as_trained(model, stimuli, target_block, gamma, means)
        evaluated, eval_layers = bl.brain_likeness(model, stimuli, target_block, gamma)
        self.insert1(dict(key, correlation=trained, correlation_eval=evaluated, n_images=int(keep.sum())))
        self.Layer.insert(dict(key, layer=k, correlation=r, correlation_eval=eval_layers[k])
                          for k, r in trained_layers.items())
