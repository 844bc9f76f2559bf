"""genloom: train and sample generative models of text, images and audio on one runtime.

The core defines the component interfaces (:mod:`genloom.interfaces`), the registry
(:mod:`genloom.registry`), the plugin hooks (:mod:`genloom.hookspecs`) and one runtime
(:mod:`genloom.trainer`, :mod:`genloom.sampler`). Every modality is a plugin. Importing
this package does not import torch.
"""

from genloom.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
