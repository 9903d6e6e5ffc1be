"""PGD adversarial training (the positive control): settings, the perturbation's bounds, and that it buys robustness."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.classifier.adversarial import adversarial_batch, pgd_perturb, resolve_adversarial
from pipeline.classifier.config import TrainConfigError, resolve_train_config
from pipeline.classifier.inference import load_classifier
from pipeline.classifier.tasks import load_task
from pipeline.classifier.train import train_classifier
from pipeline.errors import ConfigError


def test_settings_are_completed_and_checked():
    s = resolve_adversarial({"eps": 0.05})
    assert s == {"norm": "Linf", "eps": 0.05, "steps": 5, "rel_stepsize": 0.4, "fraction": 1.0}
    assert resolve_adversarial(s) == s and resolve_adversarial(None) is None
    for bad, field in [({"epsilon": 0.1}, "epsilon"), ({"norm": "L1"}, "norm"), ({"eps": 0}, "eps"),
                       ({"steps": 2, "rel_stepsize": 0.25}, "reach the edge"), ({"fraction": 1.5}, "fraction")]:
        with pytest.raises(ConfigError, match=field):
            resolve_adversarial(bad)
    cfg = resolve_train_config({"preset": "cpu-test", "adversarial": {"norm": "L2", "eps": 1.0}})
    assert cfg["adversarial"]["norm"] == "L2" and resolve_train_config(cfg) == cfg
    assert resolve_train_config("cpu-test")["adversarial"] is None
    with pytest.raises(TrainConfigError, match="norm"):
        resolve_train_config({"preset": "cpu-test", "adversarial": {"norm": "Linfinity"}})


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.3)])
def test_pgd_stays_in_the_ball_and_in_the_image_range_and_raises_the_loss(norm, eps):
    model = Linear()
    x = torch.rand(32, 1, 4, 4)
    y = model(x).argmax(1)
    settings = resolve_adversarial({"norm": norm, "eps": eps, "steps": 10, "rel_stepsize": 0.25})
    adv = pgd_perturb(model, x, y, settings, torch.Generator().manual_seed(0))
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "Linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(adv), y)) > float(loss(model(x), y)) + 1e-3
    assert all(p.requires_grad for p in model.parameters()) and model.fc.weight.grad is None


def test_a_partial_fraction_keeps_the_rest_of_the_batch_clean():
    model = Linear()
    x, y = torch.rand(10, 1, 4, 4), torch.zeros(10, dtype=torch.long)
    out = adversarial_batch(model, x, y, resolve_adversarial({"fraction": 0.3}), torch.Generator().manual_seed(1))
    assert torch.equal(out[3:], x[3:]) and not torch.equal(out[:3], x[:3])
    assert adversarial_batch(model, x, y, None, torch.Generator()) is x


def _robust_accuracy(model, x, y, eps):
    settings = resolve_adversarial({"norm": "Linf", "eps": eps, "steps": 10, "rel_stepsize": 0.25})
    adv = pgd_perturb(model, x, y, settings, torch.Generator().manual_seed(5))
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def test_adversarial_training_buys_robustness_on_digits():
    task = load_task("digits")
    base = {"preset": "cpu-demo", "epochs": 3, "lr_step_epochs": 2, "max_steps_per_epoch": 20}
    adv = {**base, "adversarial": {"norm": "Linf", "eps": 0.1, "steps": 3, "rel_stepsize": 0.5}}
    x, y = torch.from_numpy(task.test_x[:200]), torch.from_numpy(task.test_y[:200]).long()
    scores = {}
    for name, cfg in [("plain", base), ("adversarial", adv)]:
        result = train_classifier(task, "resnet10-w8", cfg, seed=0, progress=False)
        assert result.torch_threads == torch.get_num_threads() and "torch=" in result.versions
        model = load_classifier("resnet10-w8", 10, result.state_dict).eval()
        scores[name] = _robust_accuracy(model, x, y, 0.05), result.test_accuracy
    assert scores["adversarial"][0] > scores["plain"][0] + 0.2, scores
    assert scores["adversarial"][1] > 0.5, scores  # it still classifies
    np.testing.assert_array_less(0, scores["plain"][1])
