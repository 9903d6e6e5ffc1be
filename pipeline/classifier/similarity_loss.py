"""The neural similarity regulariser (Eq 8 - 10 of paper/equations.md).

For one batch of B stimuli the CNN's activations at K layers give:

- Eq 9, per layer k: S^k_ij = cos(f^k_i - fbar^k, f^k_j - fbar^k), f^k_i the (C, H, W) feature map of stimulus i
  flattened; fbar^k a running mean PER CHANNEL (broadcast over space), updated from the detached batch mean
  with momentum 0.9: fbar <- 0.9 fbar + 0.1 batch_mean (initialised with the first batch's mean; not
  updated in eval mode). No gradient flows through fbar.
- Eq 10: S = sum_k gamma_k S^k, gamma = softmax(beta), beta a trainable (K,) vector initialised to zeros.
- Eq 8: L_sim = mean over all B (B - 1) / 2 pairs i < j of (arctanh(clip S_ij) - arctanh(clip T_ij))^2, T the
  target similarity of the same stimuli, clip |S| <= 1 - clip_eps. This is the form used by default
  (``loss_form='arctanh'``); ``'arctanh-4x'`` is the descendant code's log(1+x) - log(1-x) = 2 arctanh x form,
  exactly 4 times larger, so alpha means 4 times as much there.

One forward pass of B stimuli therefore yields B (B - 1) / 2 pairs (21 for B = 7).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import NeuralRegError

LOSS_FORMS = {"arctanh": 1.0, "arctanh-4x": 4.0}


class RegulariserError(NeuralRegError):
    """Bad regulariser configuration or input."""


def check_settings(momentum: float, clip_eps: float, loss_form: str) -> None:
    """The regulariser's settings are usable: momentum in [0, 1), clip_eps in (0, 1), a known loss_form."""
    if not 0.0 <= momentum < 1.0:
        raise RegulariserError(f"momentum={momentum} must lie in [0, 1)")
    if not 0.0 < clip_eps < 1.0:
        raise RegulariserError(f"clip_eps={clip_eps} must lie in (0, 1)")
    if loss_form not in LOSS_FORMS:
        raise RegulariserError(f"loss_form={loss_form!r} is unknown: use one of {sorted(LOSS_FORMS)}")


class SimilarityRegulariser(nn.Module):
    """Similarity loss between a CNN's representational similarity and a target similarity.

    layer_channels: ordered {layer name: channels}, e.g. ``ResNet.layer_channels()`` restricted to the layers used.
    momentum: weight of the old running mean (0.9 in the paper's descendant code).
    clip_eps: |S| is clipped to 1 - clip_eps before arctanh.
    loss_form: 'arctanh' (Eq 8) or 'arctanh-4x'.
    """

    def __init__(self, layer_channels: Mapping[str, int], momentum: float = 0.9, clip_eps: float = 1e-3,
                 loss_form: str = "arctanh"):
        super().__init__()
        if not layer_channels:
            raise RegulariserError("layer_channels is empty: name at least one layer, e.g. {'layer1': 64}")
        check_settings(momentum, clip_eps, loss_form)
        self.layers = tuple(layer_channels)
        self.momentum, self.clip_eps, self.loss_form = float(momentum), float(clip_eps), loss_form
        self.beta = nn.Parameter(torch.zeros(len(self.layers)))
        for name, channels in layer_channels.items():
            self.register_buffer(self.mean_name(name), torch.zeros(int(channels)))
        self.register_buffer("initialised", torch.zeros(len(self.layers), dtype=torch.bool))

    @staticmethod
    def mean_name(layer: str) -> str:
        return f"running_mean_{layer}"

    def running_mean(self, layer: str) -> torch.Tensor:
        """fbar^k: (C_k,) running channel mean of ``layer``."""
        return getattr(self, self.mean_name(layer))

    def gamma(self) -> torch.Tensor:
        """Layer weights gamma = softmax(beta), (K,), summing to 1 (Eq 10)."""
        return torch.softmax(self.beta, dim=0)

    def gamma_dict(self) -> dict[str, float]:
        """{layer: gamma_k} as Python floats."""
        return dict(zip(self.layers, self.gamma().detach().cpu().tolist()))

    @torch.no_grad()
    def update_running_mean(self, k: int, f: torch.Tensor) -> None:
        """fbar <- momentum fbar + (1 - momentum) batch mean over stimuli and space; the first batch sets it."""
        batch_mean = f.detach().mean(dim=[d for d in range(f.ndim) if d != 1])
        mean = self.running_mean(self.layers[k])
        if batch_mean.shape != mean.shape:
            raise RegulariserError(f"layer {self.layers[k]!r} has {batch_mean.numel()} channels, the regulariser "
                                   f"was built for {mean.numel()}")
        if bool(self.initialised[k]):
            mean.mul_(self.momentum).add_(batch_mean, alpha=1.0 - self.momentum)
        else:
            mean.copy_(batch_mean)
            self.initialised[k] = True

    def layer_similarities(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Eq 9 per layer: features {layer: (B, C_k, ...)} -> (K, B, B) cosine similarities of centred features.

        In training mode the running means are updated first, then used to centre this batch.
        """
        missing = [n for n in self.layers if n not in features]
        if missing:
            raise RegulariserError(f"features lack layers {missing}; compute them with model.features(x, "
                                   f"{list(self.layers)})")
        sims = []
        for k, name in enumerate(self.layers):
            f = features[name]
            if self.training:
                self.update_running_mean(k, f)
            mean = self.running_mean(name).to(f.dtype)
            centred = f - mean.view(1, -1, *([1] * (f.ndim - 2)))
            u = F.normalize(centred.flatten(1), dim=1)
            sims.append(u @ u.T)
        return torch.stack(sims)

    def similarity(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Eq 10: S = sum_k gamma_k S^k, (B, B)."""
        return torch.einsum("k,kij->ij", self.gamma(), self.layer_similarities(features))

    def fisher_z(self, s: torch.Tensor) -> torch.Tensor:
        bound = 1.0 - self.clip_eps
        return torch.atanh(s.clamp(-bound, bound))

    def pair_loss(self, s_cnn: torch.Tensor, s_target: torch.Tensor) -> torch.Tensor:
        """Eq 8 on (B, B) similarities: mean over the B (B - 1) / 2 pairs i < j of the squared Fisher-z gap."""
        if s_cnn.shape != s_target.shape or s_cnn.ndim != 2 or s_cnn.shape[0] != s_cnn.shape[1]:
            raise RegulariserError(f"target block must be (B, B) = {tuple(s_cnn.shape)}, got {tuple(s_target.shape)}")
        b = s_cnn.shape[0]
        if b < 2:
            raise RegulariserError("a stimulus batch needs at least 2 stimuli (B >= 2) to form a pair")
        i, j = torch.triu_indices(b, b, offset=1, device=s_cnn.device)
        gap = self.fisher_z(s_cnn[i, j]) - self.fisher_z(s_target[i, j].to(s_cnn.dtype))
        return LOSS_FORMS[self.loss_form] * gap.pow(2).mean()

    def forward(self, features: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """L_sim (scalar) for one batch: features {layer: (B, C_k, H_k, W_k)}, target (B, B) similarity."""
        return self.pair_loss(self.similarity(features), target)


def n_pairs(batch_size: int) -> int:
    """Pairs i < j from one batch of B stimuli: B (B - 1) / 2."""
    return batch_size * (batch_size - 1) // 2


def min_batch_for_pairs(pairs: int) -> int:
    """Smallest B with B (B - 1) / 2 >= pairs (7 for the paper's 16 pairs)."""
    b = 2
    while n_pairs(b) < pairs:
        b += 1
    return b
