"""Hydra config groups of the image plugin: generator/, encoder/, condition_encoder/, decoder/,
dataset/, trainer/, pipeline/."""
