"""Hydra config groups of the text plugin: generator/, encoder/, decoder/, dataset/, pipeline/."""
