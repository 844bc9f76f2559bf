"""genloom-hf: Hugging Face models in genloom, from local directories only."""
