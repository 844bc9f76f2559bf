"""The genloom hooks of the image plugin: what it registers, by import path only.

``genloom plugins`` imports this module, so it must not import torch, Pillow or model
code; each component is imported the first time a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    register(
        "encoder",
        "pixels",
        "genloom_image.pixels:Pixels",
        summary="any PIL image -> (C, R, R) floats in [0, 1]: every mode, resized and center-cropped",
    )
    register(
        "encoder",
        "vae_latents",
        "genloom_image.vae:VAEEncoder",
        summary="the VAE's encoder half: an image -> its latent mean (weights: a VAE's encoder.*)",
    )
    register(
        "decoder",
        "png",
        "genloom_image.png:PngDecoder",
        summary="pixels -> PIL images; writes sample_NNN.png, a grid.png sheet, reconstructions.png",
    )
    register(
        "decoder",
        "vae_latents",
        "genloom_image.vae:VAEDecoder",
        summary="the VAE's decoder half: latents -> PNG images (weights: a VAE's decoder.*)",
    )
    register(
        "generator",
        "vae",
        "genloom_image.vae:VAE",
        summary="convolutional VAE, unconditioned or conditioned on a label or a caption",
    )
    register(
        "generator",
        "image_fsq",
        "genloom_image.fsq_autoencoder:FSQAutoencoder",
        summary="discrete autoencoder (FSQ codes on a grid): stage 1 of a two-stage pipeline; tokenizes",
    )
    register(
        "dataset",
        "shapes",
        "genloom_image.rendered:Shapes",
        summary="coloured shapes on plain or textured backgrounds, with captions (rendered, no download)",
    )
    register(
        "dataset",
        "glyphs",
        "genloom_image.rendered:Glyphs",
        summary="MNIST-like digits and letters drawn with Pillow's font (rendered, no download)",
    )
    register(
        "dataset",
        "image_folder",
        "genloom_image.folder:ImageFolder",
        summary="your images: a folder of PNG/JPEG/WebP/BMP/GIF/TIFF, optionally one subfolder per class",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_image.conf")
