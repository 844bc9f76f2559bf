"""Hydra config groups of the Hugging Face plugin."""
