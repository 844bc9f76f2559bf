"""Hydra config groups of the audio plugin: generator/, encoder/, decoder/, dataset/,
trainer/, pipeline/ (condition_encoder/caption_words is genloom-blocks')."""
