"""Image generators (DCGAN, VAE) whose latent space constrains feature visualization: X = G(z)."""

from generators.registry import GENERATORS, build_generator, trained_generator

__all__ = ["GENERATORS", "build_generator", "trained_generator"]
