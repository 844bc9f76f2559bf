"""Building blocks that several genloom plugins share (see docs/architecture.md, "Shared blocks").

A modality plugin imports what it needs from here rather than keeping its own copy; the
blocks name no modality. Components that are whole on their own (a condition encoder any
pipeline may choose) are registered by :mod:`genloom_blocks.plugin`.
"""
