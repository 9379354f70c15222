"""Classifiers by name, with their input normalization inside, and layer lookup by module name.

Every classifier is a `Classifier`: it takes images in [0, 1] (the studio's pixel range), normalizes
them with its own mean/std buffers and runs `net`. Layer names are `net`'s own module names
(`"conv2"`, `"layer2.1.conv1"`), as Lucent and torchvision spell them.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from studio.errors import StudioError, lookup
from studio.modes import eval_mode
from studio.vit import vit


class Classifier(nn.Module):
    """Normalize with (mean, std), repeat a grey image for an RGB net, then `net`. Input N×C×H×W in [0, 1]."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], in_channels: int | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.in_channels = in_channels or len(mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if x.shape[1] == 1 and self.in_channels == 3:  # a 1-channel data set on an RGB architecture
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


def small_cnn(channels: int, num_classes: int) -> nn.Module:
    """The default model: 3 conv blocks with batch norm; conv2 has the source material's 12 filters."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, 32, 3, padding=1), bn1=nn.BatchNorm2d(32), relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(32, 12, 3, padding=1), bn2=nn.BatchNorm2d(12), relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        conv3=nn.Conv2d(12, 64, 3, padding=1), bn3=nn.BatchNorm2d(64), relu3=nn.ReLU(),
        pool3=nn.AdaptiveMaxPool2d(3),
        flatten=nn.Flatten(),
        fc1=nn.Linear(64 * 9, 128), relu4=nn.ReLU(),
        fc=nn.Linear(128, num_classes),
    ))


def judge_cnn(channels: int, num_classes: int) -> nn.Module:
    """The independent judge: another architecture (5×5 convs, no batch norm, dropout), trained on another seed."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, 32, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(32, 64, 5, padding=2), relu2=nn.ReLU(), pool2=nn.AdaptiveMaxPool2d(4),
        flatten=nn.Flatten(),
        fc1=nn.Linear(64 * 16, 256), relu3=nn.ReLU(), dropout=nn.Dropout(0.3),
        fc=nn.Linear(256, num_classes),
    ))


def strided_cnn(channels: int, num_classes: int) -> nn.Module:
    """The realism judge's second eye: 3x3 convs that downsample by stride (no max pooling, no batch norm),
    average pooling to 2x2, its own seed. Layers: conv1 relu1 conv2 relu2 conv3 relu3 pool flatten fc1 relu4 fc."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, 32, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(32, 64, 3, stride=2, padding=1), relu2=nn.ReLU(),
        conv3=nn.Conv2d(64, 128, 3, stride=2, padding=1), relu3=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(),
        fc1=nn.Linear(128 * 4, 128), relu4=nn.ReLU(),
        fc=nn.Linear(128, num_classes),
    ))


def torchvision_model(channels: int, num_classes: int, arch: str = "resnet18",
                      weights: str | None = None) -> nn.Module:
    """Any torchvision classifier by name. `weights=None` works offline; `"DEFAULT"` downloads (once, into
    torch.hub's cache: `$TORCH_HOME/hub/checkpoints`)."""
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if arch not in available:
        raise StudioError(f"unknown torchvision model {arch!r}; choose from: {', '.join(available)}")
    if weights is None:
        return tvm.get_model(arch, weights=None, num_classes=num_classes)
    names = ["DEFAULT", *(w.name for w in tvm.get_model_weights(arch))]
    if weights not in names:
        raise StudioError(f"unknown torchvision weights {weights!r} for {arch}; choose from: {', '.join(names)} "
                          "or null (untrained)")
    try:
        net = tvm.get_model(arch, weights=weights)
    except Exception as e:  # noqa: BLE001 - no network (URLError), a broken cached file (UnpicklingError), ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise StudioError(f"could not load torchvision weights {weights!r} for {arch} ({type(e).__name__}: {reason}); "
                          f"they are downloaded once into {torch.hub.get_dir()}/checkpoints (delete a broken file "
                          "there); offline, use model.options.weights=null") from None
    if num_classes != 1000:
        _replace_head(net, arch, num_classes)
    return net


def _replace_head(net: nn.Module, arch: str, num_classes: int) -> None:
    """Swap the last Linear layer for one with `num_classes` outputs (fine-tuning a pretrained net)."""
    linear = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise StudioError(f"torchvision {arch} has no nn.Linear head to replace for {num_classes} classes; with "
                          "pretrained weights choose an arch that ends in one (resnet18, mobilenet_v3_small, ...)")
    name, last = linear[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Linear(last.in_features, num_classes))


ARCHITECTURES = {"small_cnn": small_cnn, "judge_cnn": judge_cnn, "strided_cnn": strided_cnn,
                 "torchvision": torchvision_model, "vit": vit}


def build_net(architecture: str, channels: int, num_classes: int, **options) -> nn.Module:
    """An untrained network from the registry (`options` go to its builder)."""
    return lookup(ARCHITECTURES, "architecture", architecture)(channels, num_classes, **options)


def build_classifier(model_cfg, channels: int, num_classes: int, mean, std) -> Classifier:
    """A Classifier from a `model` config (arch + options), normalizing with (mean, std)."""
    options = dict(model_cfg.get("options") or {})
    net_channels = 3 if model_cfg.arch == "torchvision" else channels
    net = build_net(model_cfg.arch, net_channels, num_classes, **options)
    if options.get("weights") is not None:  # pretrained torchvision nets expect their own normalization
        import torchvision.models as tvm

        t = tvm.get_model_weights(options.get("arch", "resnet18"))[options["weights"]].transforms()
        mean, std = (t.mean, t.std) if channels == 3 else ([sum(t.mean) / 3], [sum(t.std) / 3])
    return Classifier(net, list(mean), list(std), in_channels=net_channels)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict read with weights_only=True; anything that needs more than tensors is refused."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"checkpoint not found: {str(path)!r}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise StudioError(f"refusing to load checkpoint {str(path)!r}: it is not a plain weights file "
                          f"(torch.load(weights_only=True): {_load_failure_reason(e)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning checkpoint
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise StudioError(f"checkpoint {str(path)!r} is not a state dict (name -> tensor)")
    return state


def _load_failure_reason(error: Exception) -> str:
    """The informative line of torch's long weights_only message (e.g. 'unsupported GLOBAL os.system')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return reasons[-1] if reasons else (lines[0] if lines else type(error).__name__)


def load_weights(model: Classifier, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a Classifier's or a bare net's state dict (also with Lightning's `model.` prefix)."""
    state = {k.removeprefix("model."): v for k, v in state.items()}
    if not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
        state.update({k: v for k, v in model.state_dict().items() if k in ("mean", "std")})
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                       f"expected {tuple(expected[wrong[0]].shape)}")
        raise StudioError(f"checkpoint {source!r} does not fit this model: {detail}; the weights must match "
                          "model.arch, data.channels and data.num_classes")
    model.load_state_dict(state)


def checkpoint_path(model_cfg) -> str | None:
    """The user's weights file of a `model=checkpoint` config (raises if it is still ???), else None."""
    return model_cfg.path if "path" in model_cfg.keys() else None  # `in` alone skips ??? values


def untrained_copy(model_cfg, data_cfg) -> Classifier | None:
    """The configured architecture with random weights: enough to check layer names, indices and sizes
    before any training. None for pretrained weights (they would be downloaded just for a check)."""
    if (model_cfg.get("options") or {}).get("weights") is not None:
        return None
    d = data_cfg
    return build_classifier(model_cfg, d.channels, d.num_classes, [0.0] * d.channels, [1.0] * d.channels)


def check_layer_names(model_cfg, data_cfg, names) -> None:
    """Unknown layer names fail in one line before any training (the trained model checks them otherwise)."""
    model = untrained_copy(model_cfg, data_cfg)
    for name in names if model is not None else ():
        get_layer(model, str(name))


def layer_names(model: Classifier) -> list[str]:
    """Every named module of the net, in definition order."""
    return [name for name, _ in model.net.named_modules() if name]


def get_layer(model: Classifier, name: str) -> nn.Module:
    """The module called `name`; an unknown name lists the valid ones."""
    modules = dict(model.net.named_modules())
    modules.pop("", None)
    return lookup(modules, "layer", name)


@torch.no_grad()
def layer_shapes(model: Classifier, image_shape: tuple[int, int, int], output: str | None = None,
                 settings: str = "data.channels, data.size, data.size") -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every layer for one input of `image_shape` (C, H, W); with `output`,
    the model's own output's shape under that key too. `settings` names what set the image shape (for the
    one-line error when the model cannot take it)."""
    shapes, hooks = {}, []
    for name in layer_names(model):
        module = model.net.get_submodule(name)

        def record(_m, _inp, out, name=name):
            if torch.is_tensor(out):
                shapes[name] = tuple(out.shape[1:])

        hooks.append(module.register_forward_hook(record))
    device = next(model.parameters()).device
    try:
        with eval_mode(model):
            out = model(torch.zeros(1, *image_shape, device=device))
    except (RuntimeError, ValueError) as e:  # e.g. images too small for the net's pooling: torch's reason
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StudioError(f"the model cannot take images of shape {tuple(image_shape)} ({settings}): "
                          f"{reason}") from None
    finally:
        for hook in hooks:
            hook.remove()
    shapes = {name: shapes[name] for name in layer_names(model) if name in shapes}
    if output is not None:
        shapes[output] = tuple(out.shape[1:])
    return shapes
