"""Network Dissection (Bau et al. 2017): which human concept does each unit of a layer fire on?

- Each unit's activation map is upsampled (bilinear) to the image size and thresholded at its top
  `quantile` (0.5%) over every pixel of every image: the unit's mask.
- IoU of a unit and a concept over the data set: the sum over images of |unit mask ∩ concept mask| over the
  sum of |unit mask ∪ concept mask|.
- A unit is labelled with its best concept where that IoU ≥ `min_iou` (0.04, the paper's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from studio.errors import StudioError
from studio.models import Classifier, get_layer
from studio.modes import eval_mode

QUANTILE = 0.005
MIN_IOU = 0.04


@dataclass
class Unit:
    index: int
    threshold: float
    inclusive: bool  # the mask is values >= threshold (else > threshold: the top share ties with the minimum)
    ious: dict[str, float]  # concept: IoU
    top_images: list[int]  # indices of the images where the unit's upsampled map peaks highest

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.ious.items(), key=lambda kv: -kv[1])

    def label(self, min_iou: float = MIN_IOU) -> str | None:
        concept, iou = self.ranked()[0]
        return concept if iou >= min_iou else None


@torch.no_grad()
def layer_maps(model: Classifier, images: torch.Tensor, layer: str, batch_size: int = 500) -> torch.Tensor:
    """N×K×h×w activation maps of `layer` for N×C×H×W images; a layer without spatial maps is refused."""
    module = get_layer(model, layer)
    chunks: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, o: chunks.append(o.detach().float()))
    try:
        with eval_mode(model):
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    finally:
        hook.remove()
    maps = torch.cat(chunks)
    if maps.ndim != 4:
        raise StudioError(no_maps_message(layer, tuple(maps.shape[1:])))
    return maps


def no_maps_message(layer: str, shape: tuple) -> str:
    return (f"layer {layer!r} gives {'×'.join(map(str, shape))} features per image, no spatial maps; dissect needs "
            "a layer with C×H×W maps (a conv, norm, relu or pool layer, e.g. conv2)")


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×h×w maps of one unit -> N×H×W, bilinear."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def top_threshold(values: torch.Tensor, quantile: float = QUANTILE) -> tuple[float, bool]:
    """(T, inclusive): the k-th largest of `values` (k = ceil(quantile n)), and whether the mask is values ≥ T.
    Where T is also the minimum (a unit silent on more than 1 - quantile of the pixels) the mask is values > T,
    so a dead unit gets an empty mask and a sparse one only its firing pixels, not the whole image."""
    flat = values.flatten()
    k = max(1, math.ceil(quantile * flat.numel()))
    threshold = torch.topk(flat, k).values[-1].item()
    return threshold, threshold > flat.min().item()


def threshold_mask(values: torch.Tensor, threshold: float, inclusive: bool) -> torch.Tensor:
    return values >= threshold if inclusive else values > threshold


def iou_table(unit_masks: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    """K×C IoU of K unit masks (K×P bool) against C concept masks (C×P bool) over P pixels of the data set."""
    u, c = unit_masks.float(), concepts.float()
    inter = u @ c.T
    union = u.sum(1, keepdim=True) + c.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def dissect(maps: torch.Tensor, masks: dict[str, torch.Tensor], quantile: float = QUANTILE,
            top: int = 6) -> list[Unit]:
    """Every unit of N×K×h×w `maps` scored against {concept: N×H×W bool} masks (same N, image size H×W)."""
    if not masks:
        raise StudioError("dissect: no concepts to score the units against")
    names = list(masks)
    size = tuple(next(iter(masks.values())).shape[-2:])
    concepts = torch.stack([masks[n].flatten() for n in names])
    units = []
    for k in range(maps.shape[1]):
        values = upsampled(maps[:, k], size)
        threshold, inclusive = top_threshold(values, quantile)
        mask = threshold_mask(values, threshold, inclusive)
        ious = iou_table(mask.flatten()[None], concepts)[0]
        peaks = values.flatten(1).amax(1)
        order = torch.argsort(peaks, descending=True)[:top]
        units.append(Unit(k, threshold, inclusive, {n: ious[i].item() for i, n in enumerate(names)}, order.tolist()))
    return units


def unit_mask(maps: torch.Tensor, unit: Unit, indices: list[int], size: tuple[int, int]) -> torch.Tensor:
    """len(indices)×H×W bool: the unit's thresholded upsampled map on those images."""
    return threshold_mask(upsampled(maps[indices, unit.index], size), unit.threshold, unit.inclusive)
