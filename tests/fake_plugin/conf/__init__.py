"""Config groups of the fake plugin."""
