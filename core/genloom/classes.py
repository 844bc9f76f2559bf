"""The check, before training starts, that a class-conditioned generator fits its dataset.

A generator steered by class indices embeds ``0 .. n - 1``; a dataset with more classes
would either train its extra classes as something else or fail with an index error
halfway through training, depending on the model. When the dataset says which classes
its condition indexes (:class:`~genloom.interfaces.ConditionClasses`) and the generator
says how many it takes (:class:`~genloom.interfaces.ClassConditioned`), ``genloom train``
compares them here, before any example is encoded.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from genloom.interfaces import ClassConditioned, ConditionClasses

log = logging.getLogger(__name__)

CLASS_COUNT_KEY = "num_classes"  # the generator option named in messages, when it has one
SHOWN_CLASSES = 8


def check_condition_classes(dataset: object, generator: object, config: DictConfig) -> None:
    """Raise a ``ValueError`` (what, where, what to set) if the dataset has more classes
    than the generator takes; warn if it has fewer. Nothing to compare: nothing to do."""
    if not isinstance(dataset, ConditionClasses) or not isinstance(generator, ClassConditioned):
        return
    classes, takes = dataset.condition_classes, generator.num_condition_classes
    if classes is None or takes is None or len(classes) == takes:
        return
    node = config.get("dataset") or {}
    source = f"dataset.path {str(node['path'])!r}" if "path" in node else f"dataset={node.get('name')}"
    has_key = CLASS_COUNT_KEY in (config.get("generator") or {})
    key = f"generator.{CLASS_COUNT_KEY}"
    setting = f" ({key}={takes})" if has_key else ""
    fix = f"set {key}={len(classes)}" if has_key else f"configure the generator for {len(classes)} classes"
    shown = ", ".join(f"{name} {n}" for name, n in list(classes.items())[:SHOWN_CLASSES])
    if len(classes) > SHOWN_CLASSES:
        shown += f", and {len(classes) - SHOWN_CLASSES} more"
    if len(classes) > takes:
        raise ValueError(
            f"{source} has {len(classes)} classes ({shown}) but the generator takes {takes}{setting}: {fix}"
        )
    log.warning(
        "%s has %d classes (%s) but the generator takes %d%s: labels %d..%d are never trained; %s",
        source, len(classes), shown, takes, setting, len(classes), takes - 1, fix,
    )
