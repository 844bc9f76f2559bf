"""Config groups of the PixelCNN example plugin (added to Hydra's search path by genloom)."""
