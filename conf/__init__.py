"""genloom's own Hydra configs: the primary configs of each command and the core's groups."""
