"""HTTP service and browser playground over trained ControlNet checkpoints (``python -m serve``).

Built on ``inference`` (checkpoint resolution, pipeline loading, denoising and decoding); the modules,
one job each:

* ``config``: the settings and limits one service starts with;
* ``schema``: the ``POST /generate`` request (JSON or multipart) and its validation;
* ``images``: decoding uploads within limits, Canny on the fly, PNGs with metadata chunks;
* ``registry``: the loaded checkpoints and a fresh per-call pipeline view (own scheduler) per batch;
* ``jobs``, ``jobqueue``: a request on its way, and the bounded queue with the micro-batcher;
* ``worker``: the one thread that owns the pipeline; ``generation``: one batch with its degradations;
* ``adaptive``: the per-step hook (cancellation, adaptive steps); ``faults``: failure injection;
* ``metrics``: Prometheus; ``service``: what both front ends share; ``app``: the FastAPI routes;
* ``playground``, ``history``: the Gradio UI at /ui and its autosave; ``testing``: a server in a thread.
"""

from common.quiet_warnings import silence_known_warnings

silence_known_warnings()
