"""genloom-audio: the audio modality of genloom.

A log-mel front end (:mod:`genloom_audio.mel`), a Griffin-Lim decoder that writes WAV
files and spectrogram pictures (:mod:`genloom_audio.griffin_lim`), a convolutional VAE
over mel spectrograms with pitch, timbre or caption conditioning (:mod:`genloom_audio.vae`,
built on the layers of genloom-blocks, whose ``caption_words`` encodes the captions), a
pitch estimator (:mod:`genloom_audio.pitch`), and audio data: notes and chords synthesised on the fly
(:mod:`genloom_audio.synth`) or any folder of WAV/FLAC/OGG files
(:mod:`genloom_audio.folder`). genloom finds all of it through the entry point named in
``pyproject.toml``, which points at :mod:`genloom_audio.plugin`. Nothing is imported here,
so listing plugins stays fast.
"""
