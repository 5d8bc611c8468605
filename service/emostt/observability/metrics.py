"""Prometheus metrics, defined once at import. Never label by device or session id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)

VAD_SECONDS = Histogram(
    "emostt_vad_seconds",
    "From a received audio chunk to its speech probabilities (batched across sessions).",
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "emostt_queue_wait_seconds",
    "Time an utterance waits in the batcher before its batch starts.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
BATCH_INFERENCE_SECONDS = Histogram(
    "emostt_batch_inference_seconds",
    "Engine time per batch, by kind (final or partial batch).",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
ENDPOINT_TO_FINAL_SECONDS = Histogram(
    "emostt_endpoint_to_final_seconds",
    "From the end of an utterance (endpoint or finalize) to its final event being sent.",
    buckets=LATENCY_BUCKETS,
)
PARTIAL_LATENCY_SECONDS = Histogram(
    "emostt_partial_latency_seconds",
    "From a partial being requested to its event being sent.",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("emostt_batch_size", "Utterances per engine batch.", buckets=BATCH_BUCKETS)

UTTERANCES = Counter("emostt_utterances_total", "Utterances ended, by outcome.", ["outcome"])
PARTIALS = Counter("emostt_partials_total", "Partial results, by outcome.", ["outcome"])
SPECULATIVE_FINALS = Counter(
    "emostt_speculative_finals_total",
    "Finals decoded during the endpointing silence: used, or discarded because speech resumed.",
    ["outcome"],
)
ERRORS = Counter("emostt_errors_total", "Error events sent to clients, by code.", ["code"])
RETRIES = Counter("emostt_retries_total", "Engine calls retried, by reason.", ["reason"])
FALLBACKS = Counter("emostt_fallbacks_total", "Batches served by the fallback engine.")
GATED = Counter("emostt_gated_total", "Finals marked gated, by reason.", ["reason"])
REJECTED_CONNECTIONS = Counter(
    "emostt_rejected_connections_total",
    "WebSocket connections refused or closed by policy, by reason.",
    ["reason"],
)
ACTIVE_SESSIONS = Gauge("emostt_active_sessions", "Open streaming sessions.")
QUEUE_DEPTH = Gauge("emostt_batcher_queue_depth", "Utterances waiting in the batcher.")
CIRCUIT_OPEN = Gauge("emostt_circuit_open", "1 while the primary engine's circuit breaker is open.")
CAPACITY_SESSIONS = Gauge(
    "emostt_capacity_sessions",
    "Sessions this server can serve at its target utilization, estimated from the measured model "
    "time per audio second and per-session demand (NaN until the first final batch is measured).",
)
SESSION_DEMAND = Gauge(
    "emostt_session_demand_ratio",
    "Final audio seconds submitted per session-second (measured, smoothed; the prior until measured).",
)
MODEL_COST = Gauge(
    "emostt_model_seconds_per_audio_second",
    "Model time per second of final audio on this machine (measured, smoothed).",
)
THREAD_CRASHES = Counter(
    "emostt_thread_crashes_total", "Background threads that crashed and were restarted, by kind.", ["thread"]
)
SESSIONS_CLOSED = Counter(
    "emostt_sessions_closed_total", "Sessions ended, by reason (closed, idle_timeout, ...).", ["reason"]
)
