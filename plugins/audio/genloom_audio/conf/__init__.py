"""Hydra config groups of the audio plugin: generator/, encoder/, condition_encoder/, decoder/,
dataset/, trainer/, pipeline/."""
