"""Linear probes (Alain & Bengio 2016): how linearly decodable is the label from each layer?

A probe is multinomial logistic regression on frozen, standardized activations, fitted full-batch
with L-BFGS. Its training accuracy is reported beside its test accuracy: a probe that cannot even
fit its training set is too weak to prove anything about the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from studio.errors import StudioError


@dataclass
class Probe:
    """A fitted linear probe: standardization plus one linear layer."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # K×D
    bias: torch.Tensor  # K

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return (((features - self.mean) / self.std) @ self.weight.T + self.bias).argmax(1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return (self.predict(features) == labels).float().mean().item()


def check_enough_samples(labels: torch.Tensor, num_classes: int, minimum: int = 2) -> None:
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.min() < minimum:
        raise StudioError(f"too few samples to probe: class {int(counts.argmin())} has {int(counts.min())} "
                          f"training image(s); need at least {minimum} per class")


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = 1e-3,
              max_iter: int = 200, seed: int = 0) -> Probe:
    """Logistic regression on N×D `features` (float) for int64 `labels`; deterministic for a seed."""
    check_enough_samples(labels, num_classes)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(num_classes, x.shape[1], generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return Probe(mean, std, weight.detach(), bias.detach())


def majority_accuracy(train_labels: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Accuracy of always answering the most common training class: the floor every probe must beat."""
    return (test_labels == torch.bincount(train_labels).argmax()).float().mean().item()
