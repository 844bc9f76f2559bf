"""genloom-image: the image modality of genloom.

A pixel encoder and a PNG decoder (:mod:`genloom_image.pixels`, :mod:`genloom_image.png`),
a convolutional VAE with label or caption conditioning (:mod:`genloom_image.vae`, built on
the layers of genloom-blocks, whose ``caption_words`` encodes the captions), and image
data: shapes and glyphs rendered with Pillow (:mod:`genloom_image.rendered`) or any folder
of images (:mod:`genloom_image.folder`). genloom finds all of it through the entry point named in
``pyproject.toml``, which points at :mod:`genloom_image.plugin`. Nothing is imported here,
so listing plugins stays fast.
"""
