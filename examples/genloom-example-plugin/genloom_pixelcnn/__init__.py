"""A gated PixelCNN over bitmap digits: a worked example of a third-party genloom plugin."""
