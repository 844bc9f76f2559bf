"""Hydra config groups of the image plugin: generator/, encoder/, decoder/, dataset/,
pipeline/ (condition_encoder/caption_words is genloom-blocks')."""
