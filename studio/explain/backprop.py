"""Modified backpropagation through ReLUs (captum's): guided backprop and the deconvnet.

Both pass the target logit's gradient back to the pixels, changing only what a ReLU (an nn.ReLU
module; functional ReLUs are plain gradients) lets through: the deconvnet (Zeiler & Fergus 2014)
keeps the positive part of the gradient arriving from above, whatever the forward pass did; guided
backprop (Springenberg et al. 2015) keeps it only where the forward input was positive too. Maps are
N×C×H×W, signed. Both are registered at the end of this file.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from studio.explain.gradients import GradientMethod
from studio.explain.registry import MethodSpec, register


@contextmanager
def quiet_hooks():
    """captum warns on every call that it hooks the ReLUs (and removes them after): expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


class GuidedBackprop(GradientMethod):
    """Gradient with ReLU backward = ReLU(grad) where the forward input was > 0 (Springenberg et al. 2015)."""

    name = "guided_backprop"

    def _attribute(self, x, target):
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        with quiet_hooks():
            return CaptumGuidedBackprop(self.model).attribute(x, target=target)


class Deconvnet(GradientMethod):
    """Gradient with ReLU backward = ReLU(grad), ignoring the forward pass (Zeiler & Fergus 2014)."""

    name = "deconvnet"

    def _attribute(self, x, target):
        from captum.attr import Deconvolution

        with quiet_hooks():
            return Deconvolution(self.model).attribute(x, target=target)


register(MethodSpec("guided_backprop", GuidedBackprop))
register(MethodSpec("deconvnet", Deconvnet))
