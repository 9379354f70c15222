"""How far a set of images is from real ones, in an embedding: the numbers behind the judge's realism.

- frechet_distance: FD between Gaussians fitted to two sets of rows (as in FID).
- kid: kernel inception distance, the unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (x·y/d + 1)³ (Bińkowski et al. 2018); unbiased, so sound on 40 images.
- precision_recall: improved precision and recall (Kynkäänniemi et al. 2019): k-NN balls around every
  point of each set; precision = share of the images inside the real manifold (realism), recall = share
  of the real images inside the images' manifold (coverage).
- FeatureView: an embedding of images by one network: the spatial mean and standard deviation of
  every convolution's rectified output channels (the statistics blur, noise and texture change, which
  the max-pooled penultimate layer of a classifier is trained to ignore: judge_cnn's reads σ = 0.5 px
  blur as real), each layer weighted alike, centred on real images (optionally reduced by PCA) and
  scaled to unit RMS per dimension.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from studio.errors import StudioError
from studio.modes import forward_batches


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a and b. tr √(Σa Σb) is taken as
    Σ √eig(√Σa Σb √Σa), which stays real and exact when a covariance is singular (fewer rows than dims)."""
    mu = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return mu + float(np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_self_mean(x: np.ndarray, chunk: int = 1000) -> float:
    """Mean of k(x_i, x_j) over i != j (the reference's term of KID; computed once per reference)."""
    total = 0.0
    for start in range(0, len(x), chunk):
        total += float(_kernel(x[start:start + chunk], x).sum())
    diagonal = float(((x * x).sum(1) / x.shape[1] + 1).__pow__(3).sum())
    return (total - diagonal) / (len(x) * (len(x) - 1))


def kid(x: np.ndarray, reference: np.ndarray, reference_self: float | None = None) -> float:
    """Unbiased MMD² between the rows of x and of reference, cubic polynomial kernel. Real sets score
    about 0 (also below 0); pass reference_self = kernel_self_mean(reference) to reuse it."""
    if len(x) < 2:
        raise StudioError(f"KID needs at least 2 images; got {len(x)}")
    k_xx = _kernel(x, x)
    xx = (k_xx.sum() - np.trace(k_xx)) / (len(x) * (len(x) - 1))
    yy = kernel_self_mean(reference) if reference_self is None else reference_self
    return float(xx + yy - 2 * _kernel(x, reference).mean())


def knn_radii(x: np.ndarray, k: int, chunk: int = 1000) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row. In blocks of `chunk` rows: the whole
    distance matrix of Fashion-MNIST's 54,000 training images would be 23 GB (float64)."""
    if len(x) <= k:
        raise StudioError(f"precision and recall with k={k} need more than {k} images; got {len(x)}")
    rows = torch.as_tensor(x)
    return torch.cat([torch.cdist(rows[i:i + chunk], rows).kthvalue(k + 1, dim=1).values  # the 1st: the point itself
                      for i in range(0, len(rows), chunk)]).numpy()


def precision_recall(x: np.ndarray, real: np.ndarray, k: int = 3,
                     real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """(precision, recall) of the rows of x against the real rows, k-NN manifolds (k=3 as in the paper)."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    d = torch.cdist(torch.as_tensor(x), torch.as_tensor(real)).numpy()  # len(x) × len(real)
    precision = float((d <= real_radii[None, :]).any(1).mean())
    recall = float((d <= knn_radii(x, k)[:, None]).any(0).mean())
    return precision, recall


@torch.no_grad()
def conv_statistics(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> list[np.ndarray]:
    """Per Conv2d of the model (in order): N × 2C, the spatial mean and std of each of its rectified output
    channels (max(conv, 0): what the next ReLU passes on in judge_cnn and strided_cnn), float64."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise StudioError("a realism view reads the statistics of convolutions, and this network has no "
                          "nn.Conv2d; choose a convolutional one (judge_cnn, strided_cnn, small_cnn, resnet18)")
    blocks: list[list[torch.Tensor]] = [[] for _ in convs]

    def record(i):
        def hook(_m, _inputs, out):
            out = out.detach().float().clamp_min(0)
            mean = out.mean((2, 3))  # a 1x1 map (resnet18's last at 28 px) has no spread, not a NaN one
            spread = out.std((2, 3)) if out.shape[2] * out.shape[3] > 1 else torch.zeros_like(mean)
            blocks[i].append(torch.cat([mean, spread], 1).cpu())
        return hook

    forward_batches(model, images, [(conv, record(i)) for i, conv in enumerate(convs)], batch_size)
    return [torch.cat(b).numpy().astype(np.float64) for b in blocks]


class FeatureView:
    """One network's embedding for realism (module docstring), fitted on real `train_images`."""

    def __init__(self, name: str, model: nn.Module, train_images: torch.Tensor | None, dims: int | None = None,
                 seed: int = 0, blocks: list[np.ndarray] | None = None):
        """blocks: conv_statistics(model, train_images) when already known (the judge's cache of them)."""
        from sklearn.decomposition import PCA

        self.name, self.model = name, model
        blocks = conv_statistics(model, train_images) if blocks is None else blocks
        self.block_scale = [float(np.sqrt(((b - b.mean(0)) ** 2).sum(1).mean())) + 1e-12 for b in blocks]
        features = self._weighted(blocks)
        self.center = features.mean(0)
        self.pca = None if dims is None or dims >= features.shape[1] else (
            PCA(n_components=min(dims, len(features)), random_state=seed).fit(features))
        projected = self._project(features)
        self.scale = float(np.sqrt((projected ** 2).mean())) + 1e-12
        self.reference = projected / self.scale

    def _project(self, features: np.ndarray) -> np.ndarray:
        return features - self.center if self.pca is None else self.pca.transform(features)

    def _weighted(self, blocks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([b / s for b, s in zip(blocks, self.block_scale)], 1)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return self.embed_statistics(conv_statistics(self.model, images))

    def embed_statistics(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The embedding of images whose conv_statistics are `blocks`."""
        return self._project(self._weighted(blocks)) / self.scale


CALIBRATION_BLURS = (0.5, 0.7, 1.0, 1.5)


def calibration_sets(images: torch.Tensor, labels: torch.Tensor, per_class: int = 4, heldout: int = 5,
                     seed: int = 0) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """The fixed sets the realism views are calibrated on (bench/calibrate_realism.py, tests/test_judge.py):
    `real` (the first per_class images of every class), `heldout<i>` (the next ones, as many),
    `blur<σ>` (real blurred with σ px), `noise` (uniform, seeded). Each: (images, classes)."""
    from studio.blur import gaussian_blur

    classes = sorted(int(c) for c in labels.unique())
    by_class = [torch.nonzero(labels == c).flatten() for c in classes]

    def take(offset: int) -> tuple[torch.Tensor, list[int]]:
        rows = torch.cat([rows[offset:offset + per_class] for rows in by_class])
        return images[rows], labels[rows].tolist()

    real, targets = take(0)
    sets = {"real": (real, targets), **{f"heldout{i}": take(per_class * i) for i in range(1, heldout + 1)}}
    sets.update({f"blur{sigma}": (gaussian_blur(real, sigma), targets) for sigma in CALIBRATION_BLURS})
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(seed))
    sets["noise"] = (noise, targets)
    return sets
