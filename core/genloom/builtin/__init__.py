"""genloom's built-in plugin: the components the core provides itself, for every modality.

It is found through the core distribution's own ``genloom`` entry point and loaded like any
third-party plugin (``genloom plugins`` lists it as ``genloom``; ``GENLOOM_DISABLE_PLUGINS=genloom``
leaves it out), so the registry has one way in. What it registers knows no modality:

* ``encoder=from_checkpoint`` / ``decoder=from_checkpoint``: a trained stage-1 autoencoder,
  frozen, as a two-stage pipeline's encoder and decoder (:mod:`genloom.frozen`);
* early stopping (``trainer.early_stopping.patience=N``), on the training events
  (:mod:`genloom.builtin.early_stopping`);
* an EMA of the weights (``trainer.ema.decay=0.999``), likewise (:mod:`genloom.builtin.ema`).

The EMA's module imports torch: this one stays light by importing it only when a run starts.
"""

from genloom import hookimpl
from genloom.builtin import early_stopping


@hookimpl
def genloom_register_components(register):
    register("encoder", "from_checkpoint", "genloom.frozen:encoder_from_checkpoint",
             summary="a Tokenizing stage-1 run, frozen: media -> codes")
    register("decoder", "from_checkpoint", "genloom.frozen:decoder_from_checkpoint",
             summary="a Tokenizing stage-1 run, frozen: codes -> media")


@hookimpl
def genloom_register_config(register):
    register("genloom.builtin.conf")


@hookimpl
def genloom_train_start(run):
    from genloom.builtin import ema

    ema.on_train_start(run)


@hookimpl
def genloom_optimizer_step(run):
    from genloom.builtin import ema

    ema.on_optimizer_step(run)


@hookimpl
def genloom_evaluated(run):
    early_stopping.on_evaluated(run)
