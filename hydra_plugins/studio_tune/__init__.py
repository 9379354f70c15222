"""The studio's Hydra plugins (Hydra only instantiates plugins under the `hydra_plugins` namespace package)."""
