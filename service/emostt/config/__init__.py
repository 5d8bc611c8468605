"""Service settings: environment (``EMOSTT_*``) and CLI flags, one documented field each.

Every field is typed and bounded, so a nonsensical value stops the service at start-up with a
message naming the field instead of surfacing later as a crash or a silently odd behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from emostt.config.checks import TurnModelSetting, check_device, invalid, secret_token_table
from emostt.errors import validation_problems
from emostt.vocabulary import DEFAULT_MODEL, Backend, Hub, Precision
from emostt.vocabulary.session_config import SessionConfig

# Counts that are "automatic" when left unset; when given, they must be usable.
MAX_FRONTEND_PROCESSES = 64
PositiveCount = Annotated[int, Field(ge=1, le=1024)]
NonEmpty = Annotated[str, Field(min_length=1)]


class EngineSettings(BaseSettings):
    """How the model is loaded and run."""

    # extra="forbid" refuses a misspelt keyword; pydantic-settings reads only the EMOSTT_* variables
    # that name a field, so unrelated variables in the environment are still ignored.
    # hide_input_in_errors: validation errors must never echo a value (auth tokens are secrets).
    model_config = SettingsConfigDict(
        env_prefix="EMOSTT_", extra="forbid", hide_input_in_errors=True, allow_inf_nan=False
    )

    model: NonEmpty = Field(
        DEFAULT_MODEL,
        description="Hub id (ModelScope by default), local SenseVoice model dir, or a bundled model name.",
    )
    fallback_model: NonEmpty | None = Field(
        None,
        description="Loaded instead when `model` cannot be loaded (e.g. 'demo' offline). Off by default: "
        "production should fail loudly rather than serve another model.",
    )
    hub: Hub = Field("ms", description="Hub for model ids: 'ms' (ModelScope) or 'hf' (Hugging Face).")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (CUDA when available).")
    precision: Precision = Field(
        "auto",
        description="fp32, int8 (CPU dynamic quantization), fp16 or bf16 (CUDA); "
        "auto: int8 on CPU, fp16 on CUDA.",
    )
    threads: PositiveCount | None = Field(
        None,
        description="Torch intra-op threads per model worker (default: usable cores / model_workers); "
        "with ONNX Runtime on the CPU, the intra-op threads of the encoder's one session (default 1: "
        "each model worker runs its calls on its own thread; more make one pool the workers share).",
    )
    lone_call_threads: PositiveCount | None = Field(
        None,
        description="With ONNX Runtime on the CPU, the threads of a second encoder session that runs a "
        "batch alone when no other model worker is busy and nothing waits, so a lone utterance gets "
        "every core (default: the usable cores when `threads` is 1 or unset; 1 turns it off and saves one "
        "copy of the weights, ~250 MiB for the full model). docs/engine.md, 'CPU threads'.",
    )
    backend: Backend = Field(
        "auto",
        description="Encoder runtime: 'torch', 'onnx' (CPU only: the encoder exported once per model "
        "revision by funasr's exporter and run on ONNX Runtime, int8), or auto: the fast path per "
        "device — on CPU the ONNX Runtime int8 graph (served with torch until the one-time background "
        "export finishes), torch on CUDA.",
    )
    onnx_cache_dir: NonEmpty | None = Field(
        None, description="Where ONNX exports are cached (default ~/.cache/emostt/onnx)."
    )
    load_timeout_s: float = Field(
        900.0, gt=0, description="Give up loading (including download) after this long."
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device("device", value)


class Settings(EngineSettings):
    """Everything the server reads at start-up. Env: ``EMOSTT_<FIELD>`` (JSON for dicts and lists)."""

    host: NonEmpty = Field("0.0.0.0", description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    fallback_device: str | None = Field(
        None,
        description="A second copy of the model on this device (e.g. 'cpu'), served when the primary fails.",
    )
    warmup: bool = Field(True, description="Run one batch before reporting ready.")

    # Security and limits.
    auth_tokens: dict[SecretStr, str] = Field(
        default_factory=dict,
        description="token -> device_id it is bound to ('*' for any). Empty: the service runs open. "
        "Tokens are kept as secrets: never shown by repr, str or model_dump.",
    )
    allowed_origins: list[NonEmpty] = Field(
        default_factory=list,
        description="Browser Origin allowlist; empty allows any (and non-browser clients).",
    )
    max_connections: int = Field(
        256, ge=1, le=1_000_000, description="Open sessions beyond this are refused with close code 1013."
    )
    max_message_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Larger WebSocket messages are refused with 1009.",
    )
    max_session_s: float = Field(
        3600.0, gt=0, description="A session is closed (after its finals) after this long."
    )
    idle_timeout_s: float = Field(
        60.0, gt=0, description="A session that sends nothing for this long is closed."
    )
    max_realtime_factor: float = Field(
        2.0,
        ge=1.0,
        description="Audio may arrive at most this many times faster than real time (after the burst).",
    )
    burst_audio_s: float = Field(
        5.0, ge=0, description="Audio seconds a client may send ahead of real time at once."
    )
    receive_queue_size: int = Field(
        128, ge=1, le=100_000, description="Messages buffered per session before it is closed as too fast."
    )
    ws_ping_interval_s: float = Field(
        20.0, gt=0, description="Interval of the server's WebSocket protocol pings."
    )
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="A client that does not answer a protocol ping within this long is dropped."
    )
    send_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="An event that cannot be sent within this long means the client stopped reading: "
        "the session is closed and counted.",
    )

    # Capacity and readiness.
    target_utilization: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Fraction of the measured model capacity that admitted sessions may use; "
        "sessions beyond it are refused with 1013.",
    )
    session_demand_prior: float = Field(
        1.0,
        gt=0,
        le=4,
        description="Final audio seconds per second one session is assumed to need until it is measured.",
    )
    readiness_reports_full: bool = Field(
        True,
        description="/readyz answers 503 ('full') while new sessions would be refused for capacity, so a "
        "load balancer sends new sessions to other replicas; open sessions are not affected.",
    )

    # Batching and resilience.
    frontend_processes: int | Literal["auto"] = Field(
        "auto",
        description="Processes serving the connections (WebSocket, REST, VAD) and feeding one model "
        "process that batches across all of them; auto: 1 on CPU, one per two spare cores (up to 8) "
        "on CUDA. docs/engine.md, 'Front-end processes'.",
    )
    model_workers: PositiveCount | None = Field(
        None,
        description="Model threads, each running its own batches; default: one per usable core on CPU "
        "(one torch thread each), one on CUDA.",
    )
    partial_workers: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        None,
        description="Model threads that run partials only, at a lower OS priority; default: 1 on CPU, "
        "0 on CUDA (partials then run between finals).",
    )
    speculative_finals: bool = Field(
        True,
        description="Decode each final during the endpointing silence (discarded if speech resumes).",
    )
    max_batch_size: PositiveCount | None = Field(None, description="Utterances per engine batch; default 16.")
    max_padded_seconds: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="Batch size x longest utterance cap, in audio seconds; default 160, or 8 with the onnx "
        "backend on CPU, where batching short utterances saves compute and long ones gain nothing "
        "(docs/engine.md, 'CPU threads').",
    )
    max_waiting: int = Field(
        512, ge=1, description="Utterances waiting for the model before new ones are refused."
    )
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="While busy, wait this long for more utterances to batch."
    )
    partial_deadline_s: float = Field(
        1.0, gt=0, description="Partials waiting longer are dropped (a fresher one follows)."
    )
    overload_wait_s: float = Field(
        0.3,
        gt=0,
        description="Smoothed final queue wait above which partials slow down and new sessions get 1013.",
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed engine call before falling back / failing."
    )
    retry_backoff_s: float = Field(0.05, ge=0, le=60, description="First retry delay; doubles each retry.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failed batches that open the circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        30.0, gt=0, description="How long the breaker routes to the fallback before retrying."
    )

    # The OpenAI-compatible file endpoint (POST /v1/audio/transcriptions, docs/openai.md).
    max_file_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1024,
        le=4 * 1024**3,
        description="Largest uploaded audio file; larger uploads are refused with 413 while they are read.",
    )
    max_file_s: float = Field(
        3600.0,
        gt=0,
        le=86_400,
        description="Longest audio file, in seconds of audio; longer files are refused with 400.",
    )
    max_file_memory_mb: int = Field(
        1024, ge=1, le=1024**2, description="Decoded audio (230 MB/h) of all files in flight; more gets 503."
    )
    max_file_requests: int = Field(
        4,
        ge=1,
        le=1024,
        description="File transcriptions running at once; more are refused with 429 (Retry-After).",
    )
    max_file_uploads: int = Field(
        64, ge=1, le=100_000, description="File request bodies read at once; more get 429 (Retry-After)."
    )
    file_upload_timeout_s: float = Field(
        300.0, gt=0, le=86_400, description="A body not fully read after this long gets 408 upload_timeout."
    )
    file_upload_min_bytes_per_s: int = Field(
        16 * 1024, ge=0, le=1024**3, description="Slower bodies get 408 upload_too_slow; 0: no rate check."
    )
    file_upload_rate_window_s: float = Field(
        10.0, gt=0, le=3600, description="The upload rate is measured per window, after a first one of grace."
    )
    file_segment_window: int = Field(
        4,
        ge=1,
        le=64,
        description="Segments of one file in the batcher at once: enough to keep a worker busy (and fill "
        "a GPU batch), few enough that files never crowd the live sessions' waiting list.",
    )

    turn_model: TurnModelSetting = Field(
        "auto",
        description="End-of-turn model, Smart Turn v3.2 (docs/engine.md, 'Turn model'): auto (pipecat-ai's "
        "file when installed, else off; never downloaded), off, or the path of its .onnx file.",
    )
    session_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for every session's config (same shape as the config message); "
        "checked at start-up.",
    )
    drain_timeout_s: float = Field(
        20.0, gt=0, description="On shutdown, time given to open sessions to get their finals."
    )
    log_json: bool = Field(True, description="Structured JSON logs on stderr.")
    web_ui: bool = Field(
        True,
        description="Serve the browser page at / (live transcript with emotion from the microphone, "
        "docs/web.md); off: / is a 404.",
    )
    results_redis_url: SecretStr | None = Field(
        None,
        description="Also append every final and emotion_changed event to the Redis Stream "
        "<results_stream_prefix><device_id> (redis://, rediss:// or unix:// URL; may hold a "
        "password, so it is never logged). Off when unset.",
    )
    results_stream_prefix: NonEmpty = Field("emostt:results:", description="Redis Stream key prefix.")
    results_stream_maxlen: int = Field(
        10_000, ge=1, le=10_000_000, description="Each stream is trimmed to about this many events."
    )
    results_buffer_size: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Events held in memory while Redis is slow or down; beyond it the oldest "
        "are dropped (and counted).",
    )

    # Phone media streams (docs/phone.md).
    twilio_auth_token: SecretStr | None = Field(
        None,
        min_length=1,
        description="Twilio account Auth Token: /twilio/media then takes only connections whose "
        "X-Twilio-Signature it verifies (others get HTTP 403, counted as bad_signature), and the "
        "auth_tokens rules do not apply to it. Unset: the auth_tokens rules apply (token parameter).",
    )
    twilio_public_url: NonEmpty | None = Field(
        None,
        description="The wss:// base URL Twilio connects to (what it signs), e.g. wss://stt.example.com; "
        "unset: rebuilt from the Host header, wss when X-Forwarded-Proto says https.",
    )

    @field_validator("twilio_public_url")
    @classmethod
    def _check_twilio_public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("wss://", "ws://")):
            raise ValueError("must be a wss:// URL (scheme and host, and any path prefix a proxy strips)")
        return value

    @field_validator("results_redis_url")
    @classmethod
    def _check_results_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = value.get_secret_value().partition("://")[0]
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("file_segment_window")
    @classmethod
    def _check_file_window(cls, value: int, info: ValidationInfo) -> int:
        # File segments share the batcher's waiting list with live sessions, and admission refuses
        # sessions once it is 80 % full: files alone must never get near that. (Fields validate in
        # order: max_waiting and max_file_requests are already checked, or missing if invalid.)
        requests, waiting = info.data.get("max_file_requests"), info.data.get("max_waiting")
        if requests is not None and waiting is not None and requests * value > waiting // 2:
            raise invalid(
                "invalid_file_window",
                f"max_file_requests x file_segment_window ({requests * value}) must be at most half "
                f"of max_waiting ({waiting})",
            )
        return value

    @field_validator("frontend_processes", mode="before")
    @classmethod
    def _check_frontend_processes(cls, value: object) -> int | Literal["auto"]:
        if value == "auto":
            return "auto"
        try:
            count = int(str(value))
        except ValueError:
            count = 0
        if not 1 <= count <= MAX_FRONTEND_PROCESSES:
            problem = f"must be 'auto' or a count from 1 to {MAX_FRONTEND_PROCESSES}, got {value!r}"
            raise invalid("invalid_count", problem)
        return count

    @field_validator("fallback_device")
    @classmethod
    def _check_fallback_device(cls, value: str | None) -> str | None:
        return None if value is None else check_device("fallback_device", value)

    @field_validator("session_defaults")
    @classmethod
    def _check_session_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Checked as the config every session starts from, so a typo fails the start-up rather than
        # every session. The dict itself is kept: each connection merges its own sample_rate in.
        try:
            SessionConfig.model_validate(value)
        except ValidationError as exc:
            problems = validation_problems(exc, "session_defaults", prefixed=True)
            raise invalid("invalid_session_defaults", problems) from None
        return value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _check_auth_tokens(cls, value: object) -> object:
        return secret_token_table(value) if isinstance(value, Mapping) else value
