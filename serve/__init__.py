"""HTTP service and browser playground over trained ControlNet checkpoints (``python -m serve``)."""
