"""The plugin as genloom sees it: a light hook module, components and configs by name."""

import subprocess
import sys

from genloom.plugins import PluginSet


def test_the_hook_module_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, genloom_pixelcnn.plugin; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'numpy' not in sys.modules, 'numpy imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_registers_every_component_and_its_config(pixelcnn_plugin: PluginSet) -> None:
    (info,) = pixelcnn_plugin.plugins
    assert info.status == "ok", info.error
    assert info.components == {
        "generator": ["pixelcnn"],
        "dataset": ["bitmap_digits"],
        "encoder": ["levels"],
        "decoder": ["grey_png"],
    }
    assert info.config_groups == {
        "dataset": ["bitmap_digits", "bitmap_digits_debug"],
        "decoder": ["grey_png"],
        "encoder": ["levels"],
        "generator": ["pixelcnn", "pixelcnn_debug"],
        "pipeline": ["pixelcnn_debug", "pixelcnn_digits"],
    }


def test_the_registry_builds_each_component_from_flat_options(pixelcnn_plugin: PluginSet) -> None:
    registry = pixelcnn_plugin.registry
    generator = registry.build("generator", "pixelcnn", {"resolution": 8, "channels": 4, "layers": 1})
    assert generator.sample_spec.describe() == "(1, 8, 8) float32"
    assert registry.build("dataset", "bitmap_digits", {"size": 20}).units_per_example == 256
    assert registry.build("encoder", "levels", {"levels": 2}).levels == 2
    assert registry.build("decoder", "grey_png").media_type == "image"
