"""``genloom serve``: trained checkpoints behind an HTTP API, batched, for every pipeline.

The serving room uses :mod:`genloom.sampler` (loading, options, conditions) and the
components' interfaces, nothing lower. It knows media types from decoders, never
modalities: a model whose generator has batched step-wise decoding
(:class:`genloom.interfaces.BatchedDecoding`) and whose decoder streams is served with
continuous batching; any other with dynamic request batching. Its dependencies are the
core's ``serve`` extra (``pip install 'genloom[serve]'``).

* :mod:`genloom.serve.models`: a served model and what the server may ask of it;
* :mod:`genloom.serve.engine`: the engines, one worker thread per model;
* :mod:`genloom.serve.app`: the ASGI app (FastAPI) and its routes;
* :mod:`genloom.serve.metrics`: the Prometheus metrics;
* ``web/``: the page at ``/``.
"""
