"""Wiring: the one place that turns ``Settings`` into a running server.

- ``app``: ``create_app(settings)``, the lifespan that owns the batcher, VAD and results sink.
- ``engines``: the engines' options (primary and fallback from one function), loading, the
  batcher and its warm-up.
- ``planning``: how many model workers, threads and front-end processes (no torch import).
- ``frontends``: the model process supervising several front-end processes.
- ``run``: what ``emostt serve`` runs.

Every layer below gets a small frozen config of its own built here, never ``Settings`` whole
where a config object exists (``BatcherConfig``, ``RetryConfig``, ``PublisherConfig``,
``EngineOptions``). docs/architecture.md.
"""
