"""The plugin as genloom sees it: a light hook module that registers buildable components."""

import importlib.metadata
import subprocess
import sys

import torch
from genloom.plugins import PluginSet
from PIL import Image


def test_the_hook_module_imports_neither_torch_nor_pillow() -> None:
    code = (
        "import sys, genloom_image.plugin; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'PIL' not in sys.modules, 'Pillow imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_distribution_declares_the_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="genloom")
    assert any(ep.name == "image" and ep.value == "genloom_image.plugin" for ep in entry_points)


def test_registers_every_component_and_its_config(image_plugin: PluginSet) -> None:
    info = next(p for p in image_plugin.plugins if p.name == "image")
    assert info.status == "ok", info.error
    assert info.components == {  # caption_words is genloom-blocks'
        "encoder": ["pixels", "vae_latents"],
        "decoder": ["png", "vae_latents"],
        "generator": ["vae", "image_fsq"],
        "dataset": ["shapes", "glyphs", "image_folder"],
    }
    assert all(entry.summary for entry in image_plugin.registry)
    assert "genloom_image.conf" in image_plugin.config_modules
    assert info.config_groups == {
        "dataset": ["glyphs", "glyphs_debug", "image_folder", "shapes", "shapes_debug"],
        "decoder": ["png"],
        "encoder": ["pixels", "pixels_debug"],
        "generator": ["image_fsq", "image_fsq_debug", "vae", "vae_debug"],
        "pipeline": [
            "glyphs", "glyphs_tokens", "glyphs_tokens_debug", "glyphs_vq", "glyphs_vq_debug", "image_debug",
            "image_folder", "image_folder_debug", "shapes", "shapes_debug", "shapes_minilm",
            "shapes_minilm_debug", "shapes_tokens", "shapes_tokens_debug", "shapes_tokens_minilm",
            "shapes_tokens_minilm_debug", "shapes_vq", "shapes_vq_debug",
        ],
        "trainer": ["image_tokens", "image_vq"],
    }


def test_components_build_through_the_registry(image_plugin: PluginSet) -> None:
    registry = image_plugin.registry
    arch = {"resolution": 8, "channels": 3, "widths": [4], "latent_channels": 2}
    encoder = registry.build("encoder", "pixels", {"resolution": 8})
    decoder = registry.build("decoder", "png")
    generator = registry.build("generator", "vae", arch)
    latents = registry.build("encoder", "vae_latents", arch)
    pictures = registry.build("decoder", "vae_latents", arch)
    captions = registry.build("encoder", "caption_words")
    dataset = registry.build("dataset", "shapes", {"resolution": 8, "size": 4, "condition": "caption"})

    example = dataset.split("train", encoder, captions)[0]
    assert example["image"].shape == (3, 8, 8) and example["condition"].shape == (8,)
    assert generator.loss({"image": example["image"][None]})["loss"].isfinite()
    assert isinstance(generator, torch.nn.Module)
    image = decoder.decode(example["image"])
    assert isinstance(image, Image.Image) and image.size == (8, 8)
    assert latents.encode(image).shape == (2, 4, 4)
    assert pictures.decode(latents.encode(image)).size == (8, 8)
