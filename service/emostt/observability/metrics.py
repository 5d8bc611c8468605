"""Prometheus metrics, defined once at import. Never label by device or session id.

Every label takes its values from a fixed vocabulary (``LABEL_VALUES``), and every labelled
series is created at zero at import. Why: a counter that first appears already at 1 shows no
``increase()``, so the first crash or refusal would never alert; a rate panel of an unused
label would show "no data" rather than 0; and the vocabulary bounds the series a server can
export (tests compare the exposition against it).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from emostt.vocabulary import REFUSAL_CLOSE_CODES
from emostt.vocabulary.labels import (
    BATCH_KINDS,
    ERROR_CODES,
    GATE_REASONS,
    MOOD_LABELS,
    PHONE_CARRIERS,
    REJECTION_REASONS,
    SESSION_END_REASONS,
)

# The classic text format exports each counter's and histogram's creation time as a separate
# `*_created` gauge series: no panel or rule uses them, and they would double the series count.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# Speech end -> final includes the endpointing silence (500 ms by default, up to 10 s).
SPEECH_END_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 10.0, 20.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)

# "discarded": dropped unheard at the client's request (OpenAI Realtime's input_audio_buffer.clear).
UTTERANCE_OUTCOMES = ("final", "error", "client_gone", "dropped_gated", "discarded")
PARTIAL_OUTCOMES = ("sent", "stale", "shed", "failed")
SPECULATIVE_OUTCOMES = ("used", "discarded")
RETRY_REASONS = ("oom_split", "isolate", "error")
THREAD_KINDS = ("vad", "model_worker", "turn")
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
SPEECH_END_TO_FINAL_SECONDS = Histogram(
    "emostt_speech_end_to_final_seconds",
    "From the arrival of an utterance's last speech audio to its final event being sent: what the "
    "speaker waits, endpointing silence included (endpoint_to_final plus the silence the endpointer "
    "waited for).",
    buckets=SPEECH_END_BUCKETS,
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
DEGRADED_FINALS = Counter(
    "emostt_degraded_finals_total", "Finals sent with degraded=true: produced by the fallback engine."
)
GATED = Counter("emostt_gated_total", "Finals marked gated, by reason.", ["reason"])
REJECTED_CONNECTIONS = Counter(
    "emostt_rejected_connections_total",
    "WebSocket connections refused or closed by policy, by reason.",
    ["reason"],
)
REFUSED_CONNECTIONS = Counter(
    "emostt_refused_connections_total",
    "The connections of emostt_rejected_connections_total by the close code they got: 1008 policy "
    "(auth, origin, limits), 1009 message too big, 1012 restarting, 1013 overloaded or not ready.",
    ["code"],
)
# multiprocess_mode: how the processes' values combine when front-end processes serve the
# connections (observability/multiprocess.py); ignored in the one-process server. Gauges that
# only the model process sets are "livesum" (the front ends' copies stay 0).
ACTIVE_SESSIONS = Gauge("emostt_active_sessions", "Open streaming sessions.", multiprocess_mode="livesum")
QUEUE_DEPTH = Gauge(
    "emostt_batcher_queue_depth", "Utterances waiting in the batcher.", multiprocess_mode="livesum"
)
CIRCUIT_OPEN = Gauge(
    "emostt_circuit_open",
    "1 while the primary engine's circuit breaker is open.",
    multiprocess_mode="livesum",
)
READY = Gauge(
    "emostt_ready",
    "1 while /readyz answers 200 (set at every scrape by the same decision), else 0.",
    # The front end a scrape reaches sets it just before exporting: its value is the latest.
    multiprocess_mode="livemostrecent",
)
CAPACITY_SESSIONS = Gauge(
    "emostt_capacity_sessions",
    "Sessions this server can serve at its target utilization, estimated from the measured model "
    "time per audio second and per-session demand (NaN until the first final batch is measured).",
    multiprocess_mode="livesum",
)
SESSION_DEMAND = Gauge(
    "emostt_session_demand_ratio",
    "Final audio seconds submitted per session-second (measured, smoothed; the prior until measured).",
    multiprocess_mode="livesum",
)
MODEL_COST = Gauge(
    "emostt_model_seconds_per_audio_second",
    "Model time per second of final audio on this machine (measured, smoothed).",
    multiprocess_mode="livesum",
)
THREAD_CRASHES = Counter(
    "emostt_thread_crashes_total", "Background threads that crashed and were restarted, by kind.", ["thread"]
)
FRONTEND_RESTARTS = Counter(
    "emostt_frontend_restarts_total",
    "Front-end processes that exited unexpectedly and were restarted (frontend_processes > 1).",
)
SESSIONS_CLOSED = Counter(
    "emostt_sessions_closed_total", "Sessions ended, by reason (closed, idle_timeout, ...).", ["reason"]
)
PHONE_CALLS = Counter(
    "emostt_phone_calls_total",
    "Phone calls whose media stream started its sessions (one per transcribed track), by carrier; "
    "refused ones are in emostt_rejected_connections_total (bad_signature, unauthorized, ...).",
    ["carrier"],
)
EMOTION_CHANGES = Counter(
    "emostt_emotion_changes_total",
    "emotion_changed events sent (a session's smoothed mood changed label), by the new label.",
    ["to"],
)

# (metric, its label, the values that label may take): a value outside its set is a bug.
_VOCABULARY: tuple[tuple[Counter | Histogram, str, tuple[str, ...]], ...] = (
    (QUEUE_WAIT_SECONDS, "kind", BATCH_KINDS),
    (BATCH_INFERENCE_SECONDS, "kind", BATCH_KINDS),
    (UTTERANCES, "outcome", UTTERANCE_OUTCOMES),
    (PARTIALS, "outcome", PARTIAL_OUTCOMES),
    (SPECULATIVE_FINALS, "outcome", SPECULATIVE_OUTCOMES),
    (ERRORS, "code", tuple(sorted(ERROR_CODES))),
    (RETRIES, "reason", RETRY_REASONS),
    (GATED, "reason", GATE_REASONS),
    (REJECTED_CONNECTIONS, "reason", REJECTION_REASONS),
    (REFUSED_CONNECTIONS, "code", REFUSAL_CLOSE_CODES),
    (THREAD_CRASHES, "thread", THREAD_KINDS),
    (SESSIONS_CLOSED, "reason", SESSION_END_REASONS),
    (EMOTION_CHANGES, "to", MOOD_LABELS),
    (PHONE_CALLS, "carrier", PHONE_CARRIERS),
)


def _series_name(metric: Counter | Histogram) -> str:
    family = next(iter(metric.describe())).name  # a counter's family name drops "_total"
    return f"{family}_total" if isinstance(metric, Counter) else family


# Exported name (``_total`` included for counters) -> label -> allowed values.
LABEL_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    _series_name(metric): {label: values} for metric, label, values in _VOCABULARY
}
for _metric, _label, _values in _VOCABULARY:
    for _value in _values:
        _metric.labels(**{_label: _value})


def count_rejection(reason: str, close_code: int) -> None:
    """A connection refused or closed by policy: counted by reason and by close code together."""
    REJECTED_CONNECTIONS.labels(reason).inc()
    REFUSED_CONNECTIONS.labels(str(close_code)).inc()


# The OpenAI-compatible file endpoint (transport/openai_rest.py). Outcomes and formats are two
# counters: a request refused before its body is read (auth, limits, load) has no format yet.
FILE_OUTCOMES = (
    "ok",
    "invalid_request",
    "unauthorized",
    "too_large",
    "rate_limited",
    "overloaded",
    "not_ready",
    "failed",
    "client_gone",
    "upload_timeout",
)
FILE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "sse")
FILE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
FILE_REQUESTS = Counter(
    "emostt_file_requests_total",
    "File transcription requests (POST /v1/audio/transcriptions), by outcome.",
    ["outcome"],
)
FILE_RESPONSES = Counter(
    "emostt_file_responses_total",
    "File transcriptions served, by response format (sse: stream=true).",
    ["format"],
)
FILE_AUDIO_SECONDS = Counter(
    "emostt_file_audio_seconds_total", "Seconds of audio in the files transcribed (served requests)."
)
FILE_REQUEST_SECONDS = Histogram(
    "emostt_file_request_seconds",
    "From a file request's arrival to its last response byte being handed to the server (served requests).",
    buckets=FILE_BUCKETS,
)
# Request bodies (transport/openai_upload.py): read now, and refused by why (too_many_uploads: the
# max_file_uploads bound, before a byte is read; the rest while reading).
FILE_UPLOAD_REFUSALS = ("too_many_uploads", "too_large", "field_too_large", "too_slow", "timeout")
FILE_UPLOADS_ACTIVE = Gauge(
    "emostt_file_uploads_active", "File request bodies being read now.", multiprocess_mode="livesum"
)
FILE_UPLOADS_REFUSED = Counter(
    "emostt_file_uploads_refused_total", "File request bodies refused, by reason.", ["reason"]
)
for _metric, _label, _values in (
    (FILE_REQUESTS, "outcome", FILE_OUTCOMES),
    (FILE_RESPONSES, "format", FILE_FORMATS),
    (FILE_UPLOADS_REFUSED, "reason", FILE_UPLOAD_REFUSALS),
):
    LABEL_VALUES[_series_name(_metric)] = {_label: _values}
    for _value in _values:
        _metric.labels(**{_label: _value})

# Results appended to Redis Streams (results/redis_streams.py): each event ends published or
# dropped; every failed write of an event is also counted as retried.
RESULTS_OUTCOMES = ("published", "dropped", "retried")
RESULTS_PUBLISHED = Counter(
    "emostt_results_published_total",
    "Session events (final, emotion_changed) for Redis Streams, by outcome.",
    ["outcome"],
)
LABEL_VALUES[_series_name(RESULTS_PUBLISHED)] = {"outcome": RESULTS_OUTCOMES}
for _value in RESULTS_OUTCOMES:
    RESULTS_PUBLISHED.labels(_value)

# The end-of-turn model (streaming/turns.py): each request ends ok, failed (the model raised, or
# its thread is down), refused (the turn worker's queue was full) or withdrawn (its caller stopped
# waiting while it was queued).
TURN_OUTCOMES = ("ok", "failed", "refused", "withdrawn")
TURN_MODEL_SECONDS = Histogram(
    "emostt_turn_model_seconds",
    "From a turn-completion request to its probability (batched across sessions; features included).",
    buckets=LATENCY_BUCKETS,
)
TURN_BATCH_SIZE = Histogram(
    "emostt_turn_batch_size", "Turns per end-of-turn model call.", buckets=(1, 2, 3, 4, 6, 8, 12, 16)
)
TURN_CALLS = Counter("emostt_turn_calls_total", "End-of-turn model requests, by outcome.", ["outcome"])
LABEL_VALUES[_series_name(TURN_CALLS)] = {"outcome": TURN_OUTCOMES}
for _value in TURN_OUTCOMES:
    TURN_CALLS.labels(_value)

# Post-encoder decoding (inference/ctc_batch.py, for every engine): every utterance decoded (finals,
# partials, speculative finals, file segments), greedily or, with keyterms, by the biased beam search.
DECODE_MODES = ("greedy", "keyterms")
# From a fraction of a millisecond (greedy, a short utterance, a small vocabulary) to tens of
# milliseconds (a long utterance with keyterms at SenseVoiceSmall's 25k tokens on a busy core).
DECODE_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
DECODE_SECONDS = Histogram(
    "emostt_decode_seconds",
    "Post-encoder decoding per utterance, by mode (greedy; keyterms: the biased beam search): its "
    "share of the batch's softmax reductions plus its own decoding (for keyterms with the top-k of "
    "its text frames).",
    ["mode"],
    buckets=DECODE_BUCKETS,
)
KEYTERM_MATCHES = Counter(
    "emostt_keyterm_matches_total",
    "Keyterms found in decoded text: each distinct keyterm once per decoded utterance (partials and "
    "speculative finals decode again and count again).",
)
LABEL_VALUES[_series_name(DECODE_SECONDS)] = {"mode": DECODE_MODES}
for _value in DECODE_MODES:
    DECODE_SECONDS.labels(_value)
