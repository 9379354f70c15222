"""Feature visualization by gradient ascent over pixels: objectives, parameterizations, transforms,
regularizers and the batched render loop; `latent(generator)` optimizes a generator's z instead of pixels.
Lucent-style API:

    from studio.optvis import render, channel, l2, fft
    rendering = render(model, channel("conv2", 7) - 1e-3 * l2(), param=fft(28, channels=1), steps=256)
"""

from studio.optvis.objectives import Objective, channel, class_, deepdream, direction, diversity, neuron
from studio.optvis.params import fft, latent, pixel
from studio.optvis.regularizers import (REGULARIZERS, blur, clip_contrib, clip_norm, hf, l1, l2, penalty, register,
                                        tv, weight_decay)
from studio.optvis.render import RenderOptions, Rendering, render
from studio.optvis.transforms import jitter, pad, rotate, scale, standard

__all__ = ["Objective", "channel", "class_", "deepdream", "direction", "diversity", "neuron", "fft", "latent", "pixel",
           "REGULARIZERS", "blur", "clip_contrib", "clip_norm", "hf", "l1", "l2", "penalty", "register", "tv",
           "weight_decay", "RenderOptions", "Rendering", "render", "jitter", "pad", "rotate", "scale", "standard"]
