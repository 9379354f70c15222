"""2-D maps of hidden layers (PCA and t-SNE) and a number for how well they separate the classes."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import KNeighborsClassifier


def pca_2d(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """N×D -> N×2 by PCA on standardized features."""
    x = features.numpy().astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return PCA(n_components=2, random_state=seed).fit_transform(x)


def tsne_2d(features: torch.Tensor, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """N×D -> N×2 by t-SNE (PCA-initialized, so it is repeatable for a seed)."""
    x = features.numpy().astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    if x.shape[1] > 50:  # the usual PCA step before t-SNE: same neighbourhoods, much faster
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    return TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca",
                random_state=seed).fit_transform(x)


def knn_separation(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy of the class labels in a 2-D map: 1.0 = classes never mix."""
    knn = KNeighborsClassifier(n_neighbors=k + 1).fit(points, labels)
    neighbours = knn.kneighbors(points, return_distance=False)[:, 1:]  # drop each point itself
    votes = labels[neighbours]
    predicted = np.array([np.bincount(row).argmax() for row in votes])
    return float((predicted == labels).mean())
