"""Config groups of the fake chat plugin."""
