"""Service settings: environment (``EMOSTT_*``) and CLI flags, one documented field each."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emostt.inference.model_source import DEFAULT_MODEL


class EngineSettings(BaseSettings):
    """How the model is loaded and run."""

    model_config = SettingsConfigDict(env_prefix="EMOSTT_", extra="ignore")

    model: str = Field(
        DEFAULT_MODEL,
        description="Hub id (ModelScope by default), local SenseVoice model dir, or a bundled model name.",
    )
    fallback_model: str | None = Field(
        None,
        description="Loaded instead when `model` cannot be loaded (e.g. 'demo' offline). Off by default: "
        "production should fail loudly rather than serve another model.",
    )
    hub: str = Field("ms", description="Hub for model ids: 'ms' (ModelScope) or 'hf' (Hugging Face).")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (CUDA when available).")
    precision: str = Field(
        "auto",
        description="fp32, int8 (CPU dynamic quantization), fp16 or bf16 (CUDA); "
        "auto: int8 on CPU, fp16 on CUDA.",
    )
    threads: int | None = Field(
        None,
        description="Torch intra-op threads per model worker; default: usable cores / model_workers.",
    )
    backend: str = Field(
        "torch",
        description="Encoder runtime: 'torch', or 'onnx' (CPU only: the encoder exported once per model "
        "revision by funasr's exporter and run on ONNX Runtime, int8).",
    )
    onnx_cache_dir: str | None = Field(
        None, description="Where ONNX exports are cached (default ~/.cache/emostt/onnx)."
    )
    load_timeout_s: float = Field(900.0, description="Give up loading (including download) after this long.")


class Settings(EngineSettings):
    """Everything the server reads at start-up. Env: ``EMOSTT_<FIELD>`` (JSON for dicts and lists)."""

    host: str = Field("0.0.0.0", description="Interface to bind.")
    port: int = Field(8000, description="TCP port.")
    fallback_device: str | None = Field(
        None,
        description="A second copy of the model on this device (e.g. 'cpu'), served when the primary fails.",
    )
    warmup: bool = Field(True, description="Run one batch before reporting ready.")

    # Security and limits.
    auth_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="token -> device_id it is bound to ('*' for any). Empty: the service runs open.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser Origin allowlist; empty allows any (and non-browser clients).",
    )
    max_connections: int = Field(
        256, description="Open sessions beyond this are refused with close code 1013."
    )
    max_message_bytes: int = Field(256 * 1024, description="Larger WebSocket messages are refused with 1009.")
    max_session_s: float = Field(
        3600.0, description="A session is closed (after its finals) after this long."
    )
    idle_timeout_s: float = Field(60.0, description="A session that sends nothing for this long is closed.")
    max_realtime_factor: float = Field(
        2.0, description="Audio may arrive at most this many times faster than real time (after the burst)."
    )
    burst_audio_s: float = Field(
        5.0, description="Audio seconds a client may send ahead of real time at once."
    )
    receive_queue_size: int = Field(
        128, description="Messages buffered per session before it is closed as too fast."
    )

    # Batching and resilience.
    model_workers: int | None = Field(
        None,
        description="Model threads, each running its own batches; default: one per usable core on CPU "
        "(one torch thread each), one on CUDA.",
    )
    partial_workers: int | None = Field(
        None,
        description="Model threads that run partials only, at a lower OS priority; default: 1 on CPU, "
        "0 on CUDA (partials then run between finals).",
    )
    speculative_finals: bool = Field(
        True,
        description="Decode each final during the endpointing silence (discarded if speech resumes).",
    )
    max_batch_size: int | None = Field(
        None,
        description="Utterances per engine batch; default 16, or 1 with the onnx backend on CPU, where "
        "larger batches were measured to add latency without adding throughput (docs/BENCHMARKS.md).",
    )
    max_padded_seconds: float = Field(
        160.0, description="Batch size x longest utterance cap, in audio seconds."
    )
    max_waiting: int = Field(512, description="Utterances waiting for the model before new ones are refused.")
    batch_wait_ms: float = Field(5.0, description="While busy, wait this long for more utterances to batch.")
    partial_deadline_s: float = Field(
        1.0, description="Partials waiting longer are dropped (a fresher one follows)."
    )
    overload_wait_s: float = Field(
        0.3, description="Smoothed final queue wait above which partials slow down and new sessions get 1013."
    )
    max_retries: int = Field(2, description="Retries of a failed engine call before falling back / failing.")
    retry_backoff_s: float = Field(0.05, description="First retry delay; doubles each retry.")
    breaker_failures: int = Field(3, description="Consecutive failed batches that open the circuit breaker.")
    breaker_cooldown_s: float = Field(
        30.0, description="How long the breaker routes to the fallback before retrying."
    )

    session_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for every session's config (same shape as the config message).",
    )
    drain_timeout_s: float = Field(
        20.0, description="On shutdown, time given to open sessions to get their finals."
    )
    log_json: bool = Field(True, description="Structured JSON logs on stderr.")
