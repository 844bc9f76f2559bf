"""Hydra config groups of the blocks plugin: condition_encoder/."""
