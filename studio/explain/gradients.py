"""Gradient and perturbation attributions through captum, behind the same verb as LIME.

Every method is built from the model (Grad-CAM also from a layer name) and answers
`attribute(x, target, seed=None)`: x N×C×H×W in [0, 1], target None (the prediction), an int or N ints;
it returns maps N×C×H×W (pixel methods) or N×1×H×W (Grad-CAM), attributing the target's logit. The
registry's verb `attribution(...)` adds the metrics only a method can report (IG: its completeness delta).
Each method is registered at the end of this file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studio.errors import StudioError, lookup
from studio.explain.checks import check_finite, logits, resolve_target
from studio.explain.registry import Attribution, MethodSpec, heatmap, register
from studio.modes import eval_mode
from studio.blur import gaussian_blur
from studio.vit import check_map_layer


class GradientMethod:
    """Shared plumbing: input checks, eval mode, a resolved target, captum's forward function."""

    name = ""

    def __init__(self, model: nn.Module, batch_size: int = 256, seed: int = 0):
        self.model, self.batch_size, self.seed = model, batch_size, seed

    def _prepare(self, x: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = logits(self.model, x, self.batch_size)
        return x.detach().clone().requires_grad_(True), resolve_target(target, outputs)

    def attribute(self, x: torch.Tensor, target=None, seed: int | None = None) -> torch.Tensor:
        """Maps of x for the target; seed (None: the method's own) overrides it for this call only."""
        x, target = self._prepare(x, target)
        with eval_mode(self.model), torch.random.fork_rng(devices=[]):
            # SmoothGrad's noise comes from torch's global generator
            torch.manual_seed(self.seed if seed is None else seed)
            maps = self._attribute(x, target)
        return check_finite(maps.detach().float())

    def attribution(self, x: torch.Tensor, target=None, segments: torch.Tensor | None = None,
                    seed: int | None = None) -> Attribution:
        """The registry's verb: N×1×H×W maps (pixel methods ignore `segments`) and no extra metrics."""
        return Attribution(heatmap(self.attribute(x, target, seed)))

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Saliency(GradientMethod):
    """|∂ logit_target / ∂x| per pixel and channel (Simonyan et al. 2014)."""

    name = "saliency"

    def _attribute(self, x, target):
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(self.model).attribute(x, target=target, abs=True)


class SmoothGrad(GradientMethod):
    """Mean |gradient| over `samples` noisy copies (Smilkov et al. 2017); noise σ = `noise` × the
    pixel range (the studio's range is [0, 1], so σ = noise)."""

    name = "smoothgrad"

    def __init__(self, model, samples: int = 50, noise: float = 0.15, batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        if samples < 1 or noise < 0:
            raise StudioError(f"SmoothGrad needs samples ≥ 1 and noise ≥ 0, got samples={samples}, noise={noise}")
        self.samples, self.noise = samples, noise

    def _attribute(self, x, target):
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as CaptumSaliency

        per_batch = max(1, min(self.samples, self.batch_size // max(len(x), 1)))
        return NoiseTunnel(CaptumSaliency(self.model)).attribute(
            x, target=target, nt_type="smoothgrad", nt_samples=self.samples, stdevs=self.noise * 1.0,
            nt_samples_batch_size=per_batch, abs=True)


def zero_baseline(x: torch.Tensor) -> torch.Tensor:
    """Black: the usual choice for images on a black background (MNIST)."""
    return torch.zeros_like(x)


def mean_baseline(x: torch.Tensor) -> torch.Tensor:
    """Each image's mean colour: no edges, the same brightness."""
    return x.mean((2, 3), keepdim=True).expand_as(x).contiguous()


def blur_baseline(x: torch.Tensor) -> torch.Tensor:
    """A blur with σ = 0.1 × the image side: the path then adds detail, not brightness."""
    return gaussian_blur(x, 0.1 * max(x.shape[-2:]))


BASELINES = {"zero": zero_baseline, "mean": mean_baseline, "blur": blur_baseline}


class IntegratedGradients(GradientMethod):
    """(x − x')·∫₀¹ ∂f(x' + α(x − x'))/∂x dα with `steps` Gauss-Legendre points (Sundararajan et al.
    2017). Baseline x': 'zero' (black), 'mean' (each image's mean colour) or 'blur'. Keeps captum's
    convergence delta Σ attributions − (f(x) − f(x')) in `last_delta` (N)."""

    name = "ig"

    def __init__(self, model, steps: int = 50, baseline: str = "zero", batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        self.steps = steps
        self.baselines = lookup(BASELINES, "IG baseline", baseline)
        self.last_delta: torch.Tensor | None = None

    def _attribute(self, x, target):
        from captum.attr import IntegratedGradients as CaptumIG

        maps, delta = CaptumIG(self.model).attribute(
            x, baselines=self.baselines(x), target=target, n_steps=self.steps, method="gausslegendre",
            internal_batch_size=max(self.batch_size, len(x)), return_convergence_delta=True)
        self.last_delta = delta.detach().float()
        return maps

    def attribution(self, x, target=None, segments=None, seed=None) -> Attribution:
        """Maps and ig_delta: |Σ attributions − (f(x) − f(x'))| per image, how far from complete (logits)."""
        maps = self.attribute(x, target, seed)
        return Attribution(heatmap(maps), {"ig_delta": self.last_delta.abs()})


class Occlusion(GradientMethod):
    """Slide a `window`-pixel square of `value` (grey) with `stride`; attribution = drop of the target
    logit where it covers a pixel (Zeiler & Fergus 2014). window/stride None: image side / 7 and half that."""

    name = "occlusion"

    def __init__(self, model, window: int | None = None, stride: int | None = None, value: float = 0.5,
                 batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        self.window, self.stride, self.value = window, stride, value

    def _attribute(self, x, target):
        from captum.attr import Occlusion as CaptumOcclusion

        c, h, w = x.shape[1:]
        window = self.window or max(2, min(h, w) // 7)
        stride = self.stride or max(1, window // 2)
        if window > min(h, w):
            raise StudioError(f"occlusion window {window} px is larger than the {h}×{w} image; "
                              f"use window ≤ {min(h, w)}")
        return CaptumOcclusion(self.model).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=self.value,
            target=target, perturbations_per_eval=max(1, self.batch_size // max(len(x), 1)))


def default_gradcam_layer(model: nn.Module) -> str:
    """The last top-level block of model.net that holds a Conv2d: conv3 (small_cnn), conv2
    (judge_cnn), layer4 (torchvision ResNets)."""
    net = getattr(model, "net", model)
    if hasattr(net, "gradcam_layer"):  # a ViT names its own: its last block, on the patch grid
        return net.gradcam_layer
    name = None
    for child_name, child in net.named_children():
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            name = child_name
    if name is None:
        raise StudioError("Grad-CAM needs a convolutional layer; this model has none (give layer=<name> of a "
                          "layer with N×C×H×W output)")
    return name


class GradCam(GradientMethod):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k mean(∂y/∂A_k)·A_k) at `layer`, upsampled bilinearly
    to the input. layer: a module name of model.net (None: `default_gradcam_layer`)."""

    name = "gradcam"

    def __init__(self, model, layer: str | None = None, batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        self.layer_name = layer or default_gradcam_layer(model)
        net = getattr(model, "net", model)  # a studio Classifier's layers are named inside .net (`studio layers`)
        self.layer = lookup({k: m for k, m in net.named_modules() if k}, "layer", self.layer_name)
        check_map_layer(net, self.layer_name, "Grad-CAM layer")

    def _attribute(self, x, target):
        from captum.attr import LayerGradCam

        cams = LayerGradCam(self.model, self.layer).attribute(x, target=target, relu_attributions=True)
        if cams.ndim != 4:
            raise StudioError(f"Grad-CAM needs a layer with N×C×H×W output; {self.layer_name!r} gives "
                              f"shape {tuple(cams.shape)} (pick a conv layer: studio layers)")
        return F.interpolate(cams, size=x.shape[-2:], mode="bilinear", align_corners=False)


register(MethodSpec("saliency", Saliency))
register(MethodSpec("smoothgrad", SmoothGrad, block="smoothgrad", stochastic=True))
register(MethodSpec("ig", IntegratedGradients, block="ig", metrics=("ig_delta",)))
register(MethodSpec("occlusion", Occlusion, block="occlusion"))
register(MethodSpec("gradcam", GradCam, config_keys={"layer": "gradcam_layer"}, layer_options=("layer",)))
