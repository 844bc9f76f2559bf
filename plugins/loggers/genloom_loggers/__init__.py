"""genloom-loggers: experiment tracking for ``genloom train``, built on genloom's training events.

``logger=tensorboard``, ``logger=mlflow`` or ``logger=[tensorboard,mlflow]`` turns them on
(docs/tracking.md). Off, the plugin's hooks return at once and neither TensorBoard nor
MLflow is imported.

* :mod:`genloom_loggers.plugin`: the hooks (light: ``genloom plugins`` imports it);
* :mod:`genloom_loggers.session`: one run's loggers, each failing alone;
* :mod:`genloom_loggers.tensorboard_logger` and :mod:`genloom_loggers.mlflow_logger`: the two loggers.
"""
