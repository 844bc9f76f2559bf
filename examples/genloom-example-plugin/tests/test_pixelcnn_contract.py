"""genloom's contract kit, run on this plugin's components: one test per rule and preset."""

from genloom.testing import PluginContract


class TestExampleContract(PluginContract):
    plugin = "genloom_pixelcnn.plugin"
    pipelines = ["pixelcnn_debug"]
