"""How good are visualizations? Numbers an independent judge gives (definitions in DESIGN.md):

- judge recognition: share of class images the judge (another architecture and seed) labels as the
  target class. Noise that fools the model rarely fools the judge, but adversarial textures can.
- realism, in several views (studio/realism.py: the convolution statistics of the judge and of each
  "eye", another independently trained network): the Fréchet ratio = Fréchet distance between the
  view's embeddings of the images and of many real images, divided by the mean Fréchet distance of
  class-matched sets of as many *real* images (real data scores about 1; higher is less natural; the
  class-matched baseline is what makes the number readable: FD on 40 images is noisy and depends on
  the classes); KID beside the KID of those real sets; improved precision (realism) and recall
  (coverage). realism_ratio is the largest ratio over the views: one blind view cannot hide a flaw.
- diversity: mean pairwise distance of judge embeddings across the seeds of one target.

    judge = Judge(judge_model, real_train_images, real_pool_images, real_pool_labels, eyes={"eye": eye_model})
    judge.recognition(images, classes)      # per-image (correct, prob of the target)
    judge.realism(images, classes)          # {"realism_ratio": ~1 for real data, "realism_ratio/eye", "kid/eye", ...}
    judge.diversity(images, groups)         # one number per group of seeds
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from studio.errors import StudioError
from studio.files import atomic_path
from studio.modes import eval_mode, forward_batches
from studio.realism import (FeatureView, conv_statistics, frechet_distance, kernel_self_mean, kid, knn_radii,
                            precision_recall)

__all__ = ["Judge", "Recognition", "frechet_distance", "generator_quality", "hidden_features", "real_statistics"]


@torch.no_grad()
def hidden_features(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """N×D: what the model's final linear layer reads (its last hidden layer), in fp32 on the CPU."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        name = type(getattr(model, "net", model)).__name__  # a Classifier's own net, not "Classifier"
        raise StudioError(f"the judge {name} has no nn.Linear layer whose input embeds the images; choose a "
                          "judge whose classifier ends in one (model@judge=judge_cnn, small_cnn or resnet18)")
    chunks: list[torch.Tensor] = []
    forward_batches(model, images, [(last[-1], lambda _m, inputs, _o: chunks.append(inputs[0].detach().float().cpu()))],
                    batch_size)
    return torch.cat(chunks)


# Part of every statistics cache file's key (studio/commands/shared.py): raise it when what real_statistics
# or reference_terms compute changes, so caches written by an older studio are not read as current.
STATISTICS_VERSION = 1


def real_statistics(networks: dict[str, nn.Module], train_images: torch.Tensor,
                    pool_images: torch.Tensor) -> dict[str, np.ndarray]:
    """What a Judge computes from the real images (most of the cost of building one: ~10 CPU-s on
    mnist5k's 5,000 images), by name: hidden.train and hidden.pool (the judge's last hidden layer; the
    first network is the judge), <view>.train.<i> and <view>.pool.<i> (each view's conv_statistics, per
    convolution). Kept float32: the statistics are float32 sums widened to float64, so nothing is lost."""
    judge = next(iter(networks.values()))
    out = {f"hidden.{split}": hidden_features(judge, images).numpy()
           for split, images in (("train", train_images), ("pool", pool_images))}
    for name, net in networks.items():
        for split, images in (("train", train_images), ("pool", pool_images)):
            out.update({f"{name}.{split}.{i}": b.astype(np.float32) for i, b in enumerate(conv_statistics(net, images))})
    return out


def _networks(judge: nn.Module, eyes: dict[str, nn.Module] | None) -> dict[str, nn.Module]:
    """The realism views by name, the judge first: the names real_statistics' keys and the views share."""
    return {"judge": judge, **(eyes or {})}


def _blocks(statistics: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    count = sum(1 for key in statistics if key.rsplit(".", 1)[0] == prefix)
    return [statistics[f"{prefix}.{i}"].astype(np.float64) for i in range(count)]


@dataclass
class Recognition:
    correct: torch.Tensor  # (N,) bool: the judge's top class is the target
    prob: torch.Tensor  # (N,) the judge's softmax of the target class
    predicted: torch.Tensor  # (N,) the judge's top class


def _read_npz(path: str | Path | None) -> dict[str, np.ndarray] | None:
    if path is None or not Path(path).exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return dict(stored)


def _write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _locked(path: str | Path | None):
    """A file lock beside a cache file (nothing without one): processes that need the same statistics at
    once (the jobs of a parallel sweep) compute them once; the others wait and read the file."""
    from filelock import FileLock

    return nullcontext() if path is None else FileLock(f"{path}.lock")


def _reference_cache(cache: str | Path, options: dict) -> Path:
    """Beside the statistics cache: the reference terms of a judge with these dims, seed and k (Judge's own
    defaults where options leave them out, so the name cannot drift from what the judge computes)."""
    defaults = inspect.signature(Judge.__init__).parameters
    dims, seed, k = (options.get(name, defaults[name].default) for name in ("dims", "seed", "k"))
    return Path(cache).with_name(f"{Path(cache).stem}.reference-d{dims}-s{seed}-k{k}.npz")


class Judge:
    """An independent classifier plus real images: scores recognition, realism and diversity.

    train_images: the real set the embeddings (PCA) are fitted on and compared against.
    pool_images/pool_labels: other real images, from which the class-matched baselines are drawn.
    eyes: {name: network} more independently trained networks, each one more realism view beside the
    judge's own ("judge"); realism_ratio is the largest ratio over the views.
    dims: PCA dimensions of every view (None: all its statistics); k: neighbours of precision and recall.
    """

    def __init__(self, model: nn.Module, train_images: torch.Tensor, pool_images: torch.Tensor,
                 pool_labels: torch.Tensor, dims: int | None = None, baselines: int = 16, seed: int = 0,
                 eyes: dict[str, nn.Module] | None = None, k: int = 3,
                 statistics: dict[str, np.ndarray] | None = None, reference: dict[str, np.ndarray] | None = None):
        """statistics: real_statistics(...) of these networks and images, when already known (a cache);
        reference: reference_terms() of a judge built from the same statistics, dims, seed and k (a cache of
        the O(N²) terms: 54,000 training images take minutes of one core)."""
        from sklearn.decomposition import PCA

        self.model, self.baselines, self.seed, self.k = model, baselines, seed, k
        networks = _networks(model, eyes)
        if statistics is None:
            statistics = real_statistics(networks, train_images, pool_images)
        features = statistics["hidden.train"]
        self.pca = PCA(n_components=min(10, features.shape[1], len(features)), random_state=seed).fit(features)
        self.reference = self.pca.transform(features)
        self.pool = self.pca.transform(statistics["hidden.pool"])
        self.pool_labels = pool_labels.cpu().numpy()
        self.views = [FeatureView(name, net, None, dims, seed, blocks=_blocks(statistics, f"{name}.train"))
                      for name, net in networks.items()]
        reference = reference or {}
        for view in self.views:  # what every score of a view reuses
            view.pool = view.embed_statistics(_blocks(statistics, f"{view.name}.pool"))
            stored = reference.get(f"{view.name}.reference_self")
            view.reference_self = kernel_self_mean(view.reference) if stored is None else float(stored)
            stored = reference.get(f"{view.name}.radii")
            view.radii = knn_radii(view.reference, k) if stored is None else stored
        self._baselines: dict = {}  # (classes, n) -> the class-matched real sets' numbers (_real_baselines)

    @classmethod
    def for_data(cls, model: nn.Module, dm, cache: str | Path | None = None, **options) -> "Judge":
        """The judge on a data module: embeddings fitted on the training split, baselines drawn from
        the validation and test splits (real images the visualizations never saw either). cache: an .npz
        file for the real images' statistics (read if it exists, written if not); its name must change
        with the networks and the data (studio/commands/shared.py keys it by their bytes). Beside it, the
        reference terms (reference_terms(), per dims, seed and k) are cached the same way."""
        train_images, _ = dm.split("train")
        pool_images, pool_labels = real_pool(dm)
        with _locked(cache):
            statistics = _read_npz(cache)
            if cache is not None and statistics is None:
                statistics = real_statistics(_networks(model, options.get("eyes")), train_images, pool_images)
                _write_npz(cache, statistics)
        terms = None if cache is None else _reference_cache(cache, options)
        with _locked(terms):
            reference = _read_npz(terms)
            judge = cls(model, train_images, pool_images, pool_labels, statistics=statistics, reference=reference,
                        **options)
            if terms is not None and reference is None:
                _write_npz(terms, judge.reference_terms())
        return judge

    def reference_terms(self) -> dict[str, np.ndarray]:
        """Each view's O(N²) terms over the real training images (KID's self term, the k-NN radii of
        precision and recall): what `reference=` takes back."""
        terms = {f"{v.name}.reference_self": np.asarray(v.reference_self) for v in self.views}
        return terms | {f"{v.name}.radii": v.radii for v in self.views}

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """N×10 judge embedding for diversity (PCA of the last hidden layer, fitted on real images)."""
        return self.pca.transform(hidden_features(self.model, images).numpy())

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """N×classes: the judge's softmax, fp32 on the CPU."""
        device = next(self.model.parameters()).device
        with eval_mode(self.model):
            return torch.cat([self.model(images[i:i + 500].to(device)).float().softmax(1).cpu()
                              for i in range(0, len(images), 500)])

    def recognition(self, images: torch.Tensor, classes: Sequence[int]) -> Recognition:
        probs = self.probabilities(images)
        classes = torch.as_tensor(list(classes), dtype=torch.long)
        predicted = probs.argmax(1)
        return Recognition(predicted == classes, probs[torch.arange(len(classes)), classes], predicted)

    def class_matched_rows(self, classes: Sequence[int] | None, rng: np.random.Generator, n: int = 0) -> np.ndarray:
        """Rows of real pool images: one of the same class per element of `classes`, or, with
        classes=None (e.g. filter images, which have no class), n drawn from every class."""
        if classes is None:
            return rng.choice(len(self.pool_labels), size=n, replace=n > len(self.pool_labels))
        rows = []
        for c, count in zip(*np.unique(np.asarray(classes), return_counts=True)):
            candidates = np.flatnonzero(self.pool_labels == c)
            if len(candidates) == 0:
                raise StudioError(f"no real images of class {int(c)} to compare with; the judge's real images "
                                  f"have classes {', '.join(str(k) for k in np.unique(self.pool_labels))}")
            rows.append(rng.choice(candidates, size=count, replace=count > len(candidates)))
        return np.concatenate(rows)

    def class_matched(self, classes: Sequence[int] | None, rng: np.random.Generator, n: int = 0) -> np.ndarray:
        """Diversity embeddings of class-matched real pool images (class_matched_rows)."""
        return self.pool[self.class_matched_rows(classes, rng, n)]

    def realism(self, images: torch.Tensor, classes: Sequence[int] | None = None) -> dict:
        """Per view v: realism_ratio/v = FD(images, real) / mean FD(class-matched real sets of as many
        images, real) (~1 for real data, higher is less natural), frechet/v, frechet_real/v, kid/v and
        kid_real/v (the same for KID: real sets ~0), precision/v, recall/v (k-NN manifolds, real
        manifold from the reference). Over the views: realism_ratio (largest), realism_ratio_real_min and
        realism_ratio_real_max (the range of the class-matched real sets' own ratios), precision and recall
        (smallest), precision_real and recall_real (the same for the class-matched real sets)."""
        if len(images) < 3:
            raise StudioError(f"realism needs at least 3 images to fit a covariance; got {len(images)}")
        fd_reals, kid_reals, real_pr, real_ratios = self._real_baselines(classes, len(images))
        out: dict = {}
        for i, view in enumerate(self.views):
            x, v = view.embed(images), view.name
            fd = frechet_distance(x, view.reference)
            fd_real, kid_real = fd_reals[i], kid_reals[i]
            out.update({f"realism_ratio/{v}": fd / fd_real, f"frechet/{v}": fd, f"frechet_real/{v}": fd_real,
                        f"kid/{v}": kid(x, view.reference, view.reference_self), f"kid_real/{v}": kid_real})
            if len(images) > self.k:  # k neighbours among the images
                out[f"precision/{v}"], out[f"recall/{v}"] = precision_recall(x, view.reference, self.k, view.radii)
        names = [view.name for view in self.views]
        out["realism_ratio"] = max(out[f"realism_ratio/{v}"] for v in names)
        # what real sets of as many images read, the same way: a ratio inside this range is one real data gives
        out.update(realism_ratio_real_min=float(real_ratios.min()), realism_ratio_real_max=float(real_ratios.max()))
        if len(images) > self.k:
            out.update(precision=min(out[f"precision/{v}"] for v in names),
                       recall=min(out[f"recall/{v}"] for v in names),
                       precision_real=float(real_pr[:, :, 0].min(0).mean()),
                       recall_real=float(real_pr[:, :, 1].min(0).mean()))
        return out

    def _real_baselines(self, classes: Sequence[int] | None, n: int) -> tuple[list, list, np.ndarray, np.ndarray]:
        """Per view, the mean FD and KID of `baselines` class-matched real sets of n images, and their
        (precision, recall) (views x sets x 2); then each set's own realism ratio, read as a run's is (its FD
        over the view's mean, the largest over the views): the range real data gives. The draws depend only on
        the seed, the classes and n, so the numbers are computed once per (classes, n) and reused: scoring
        several sets of the same classes (calibration sets, samples beside noise) costs one set of baselines,
        not one each."""
        key = (None if classes is None else tuple(int(c) for c in classes), n)
        cache = self._baselines
        if key not in cache:
            rng = np.random.default_rng(self.seed)
            draws = [self.class_matched_rows(classes, rng, n) for _ in range(self.baselines)]
            real_pr = np.zeros((len(self.views), len(draws), 2))
            fd_reals, kid_reals, set_ratios = [], [], []
            for i, view in enumerate(self.views):
                fds = np.array([frechet_distance(view.pool[rows], view.reference) for rows in draws])
                fd_reals.append(float(fds.mean()))
                set_ratios.append(fds / fd_reals[-1])
                kid_reals.append(float(np.mean([kid(view.pool[rows], view.reference, view.reference_self)
                                                for rows in draws])))
                if n > self.k:
                    real_pr[i] = [precision_recall(view.pool[rows], view.reference, self.k, view.radii)
                                  for rows in draws]
            cache[key] = (fd_reals, kid_reals, real_pr, np.max(set_ratios, axis=0))
        return cache[key]

    def diversity(self, images: torch.Tensor, groups: Sequence) -> float:
        """Mean pairwise embedding distance within each group (e.g. the seeds of one target), averaged."""
        return mean_pairwise_distance(self.embed(images), groups)

    def real_diversity(self, classes: Sequence[int] | None, groups: Sequence) -> float:
        """The same number for real images of the same classes, grouped alike (the scale to read it by)."""
        rng = np.random.default_rng(self.seed)
        return mean_pairwise_distance(self.class_matched(classes, rng, len(groups)), groups)

    def score(self, images: torch.Tensor, classes: Sequence[int] | None, groups: Sequence) -> tuple[list, dict]:
        """Per-image metrics (judge_correct, judge_prob for class images) and the set's summary
        (judge_recognition, realism(): realism_ratio, kid, precision, recall, ..., diversity beside
        diversity_real) of visualizations."""
        per_image: list[dict] = [{} for _ in range(len(images))]
        summary: dict = {}
        if classes is not None:
            rec = self.recognition(images, classes)
            for i, (ok, p) in enumerate(zip(rec.correct.tolist(), rec.prob.tolist())):
                per_image[i].update(judge_correct=int(ok), judge_prob=p)
            summary.update(judge_recognition=float(rec.correct.float().mean()), judge_prob_mean=float(rec.prob.mean()))
        if len(images) >= 3:
            summary.update(self.realism(images, classes))
        if len(set(groups)) < len(groups):  # some target has several seeds
            summary.update(diversity=self.diversity(images, groups), diversity_real=self.real_diversity(classes, groups))
        return per_image, summary


def real_pool(dm) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the real images a judge draws its class-matched sets from, in its row order: the
    validation and test splits, which the visualizations never saw either."""
    pool = [dm.split(name) for name in ("val", "test")]
    return torch.cat([p[0] for p in pool]), torch.cat([p[1] for p in pool])


def mean_pairwise_distance(embedding: np.ndarray, groups: Sequence) -> float:
    members: dict = defaultdict(list)
    for row, group in enumerate(groups):
        members[group].append(row)
    distances = []
    for rows in members.values():
        if len(rows) > 1:
            points = torch.as_tensor(embedding[rows])
            d = torch.cdist(points, points)
            distances.append(float(d.sum() / (len(rows) * (len(rows) - 1))))
    if not distances:
        raise StudioError(f"diversity compares seeds of the same target, but each of the {len(members)} target(s) "
                          "has 1 image: give 2 or more seeds")
    return float(np.mean(distances))


def generator_quality(judge: Judge, samples: torch.Tensor, num_classes: int) -> dict:
    """What the judge says about a generator's samples: class shares (by the judge's labels), mean
    confidence, and realism() against real sets drawn from every class."""
    confidence, predicted = judge.probabilities(samples).max(1)
    shares = torch.bincount(predicted, minlength=num_classes).float() / len(samples)
    # against random real sets: a generator that over-makes some classes should score worse for it
    # (and noise the judge calls all one class must not find a flattering class-matched baseline)
    return {"judge_confidence": float(confidence.mean()), "class_share_min": float(shares.min()),
            **{f"class_share/{c}": float(s) for c, s in enumerate(shares)}, **judge.realism(samples)}
