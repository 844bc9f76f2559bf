"""The genloom hooks of the audio plugin: what it registers, by import path only.

``genloom plugins`` imports this module, so it must not import torch, torchaudio,
soundfile or model code; each component is imported the first time a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register: Callable[..., None]) -> None:
    register(
        "encoder",
        "log_mel",
        "genloom_audio.mel:LogMel",
        summary="a mono waveform -> (1, n_mels, frames) log-mel spectrogram, -80..0 dB mapped to [0, 1]",
    )
    register(  # the old name: checkpoints saved before it moved to genloom-blocks name it
        "encoder",
        "audio_caption_words",
        "genloom_blocks.captions:CaptionWords",
        summary="the blocks plugin's caption_words under its old name, for checkpoints that name it",
    )
    register(
        "decoder",
        "griffin_lim",
        "genloom_audio.griffin_lim:GriffinLimDecoder",
        summary="log-mel -> waveform by Griffin-Lim; writes sample_NNN.wav, spectrograms.png, comparisons",
    )
    register(
        "generator",
        "mel_vae",
        "genloom_audio.vae:MelVAE",
        summary="convolutional VAE over mel spectrograms, optionally conditioned on a label or a caption",
    )
    register(
        "generator",
        "mel_fsq",
        "genloom_audio.mel_fsq:MelFSQ",
        summary="discrete autoencoder over mel frames (FSQ codes in time): stage 1 of a two-stage pipeline",
    )
    register(
        "dataset",
        "synth_notes",
        "genloom_audio.synth:SynthNotes",
        summary="notes and chords synthesised on the fly: sine, square, sawtooth, plucked, bell; captioned",
    )
    register(
        "dataset",
        "audio_folder",
        "genloom_audio.folder:AudioFolder",
        summary="your audio: a folder of WAV/FLAC/OGG, resampled, mono, cropped or padded; labels by folder",
    )


@hookimpl
def genloom_register_config(register: Callable[[str], None]) -> None:
    register("genloom_audio.conf")
