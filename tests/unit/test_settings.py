"""Settings refuse nonsense at construction, name the field, and never show a token."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from emostt.config import EngineSettings, Settings

SECRET = "s3cr3t-tökén-value"

INVALID: list[tuple[str, dict[str, Any], str]] = [
    # (field named in the error, keyword arguments, a fragment of the message)
    ("max_batch_size", {"max_batch_size": 0}, "greater than or equal to 1"),
    ("model_workers", {"model_workers": 0}, "greater than or equal to 1"),
    ("threads", {"threads": 0}, "greater than or equal to 1"),
    ("partial_workers", {"partial_workers": -1}, "greater than or equal to 0"),
    ("idle_timeout_s", {"idle_timeout_s": -1.0}, "greater than 0"),
    ("max_session_s", {"max_session_s": -5}, "greater than 0"),
    ("drain_timeout_s", {"drain_timeout_s": 0}, "greater than 0"),
    ("load_timeout_s", {"load_timeout_s": 0}, "greater than 0"),
    ("idle_timeout_s", {"idle_timeout_s": float("inf")}, "finite"),
    ("port", {"port": 70000}, "less than or equal to 65535"),
    ("port", {"port": 0}, "greater than or equal to 1"),
    ("hub", {"hub": "xx"}, "'ms' or 'hf'"),
    ("precision", {"precision": "int4"}, "'bf16'"),
    ("backend", {"backend": "tensorrt"}, "'onnx'"),
    ("device", {"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ("device", {"device": "cuda:x"}, "device must be"),
    ("device", {"device": "cpu\n"}, "device must be"),
    ("fallback_device", {"fallback_device": "tpu"}, "fallback_device must be"),
    ("receive_queue_size", {"receive_queue_size": 0}, "greater than or equal to 1"),
    ("receive_queue_size", {"receive_queue_size": 100_001}, "less than or equal to 100000"),
    ("max_connections", {"max_connections": 0}, "greater than or equal to 1"),
    ("max_message_bytes", {"max_message_bytes": 100}, "greater than or equal to 1024"),
    ("max_realtime_factor", {"max_realtime_factor": 0.5}, "greater than or equal to 1"),
    ("burst_audio_s", {"burst_audio_s": -1}, "greater than or equal to 0"),
    ("max_waiting", {"max_waiting": 0}, "greater than or equal to 1"),
    ("batch_wait_ms", {"batch_wait_ms": 5000}, "less than or equal to 1000"),
    ("batch_wait_ms", {"batch_wait_ms": -1}, "greater than or equal to 0"),
    ("max_padded_seconds", {"max_padded_seconds": 0}, "greater than 0"),
    ("partial_deadline_s", {"partial_deadline_s": 0}, "greater than 0"),
    ("overload_wait_s", {"overload_wait_s": 0}, "greater than 0"),
    ("max_retries", {"max_retries": -1}, "greater than or equal to 0"),
    ("retry_backoff_s", {"retry_backoff_s": -0.1}, "greater than or equal to 0"),
    ("breaker_failures", {"breaker_failures": 0}, "greater than or equal to 1"),
    ("breaker_cooldown_s", {"breaker_cooldown_s": 0}, "greater than 0"),
    ("ws_ping_interval_s", {"ws_ping_interval_s": 0}, "greater than 0"),
    ("ws_ping_timeout_s", {"ws_ping_timeout_s": -1}, "greater than 0"),
    ("send_timeout_s", {"send_timeout_s": 0}, "greater than 0"),
    ("send_timeout_s", {"send_timeout_s": 301}, "less than or equal to 300"),
    ("target_utilization", {"target_utilization": 1.5}, "less than or equal to 1"),
    ("target_utilization", {"target_utilization": 0}, "greater than 0"),
    ("session_demand_prior", {"session_demand_prior": 5}, "less than or equal to 4"),
    ("host", {"host": ""}, "at least 1 character"),
    ("model", {"model": ""}, "at least 1 character"),
    ("allowed_origins", {"allowed_origins": ["https://ok.example", ""]}, "at least 1 character"),
    (
        "session_defaults",
        {"session_defaults": {"vad": {"silnce_duration_ms": 400}}},
        "session_defaults.vad.silnce_duration_ms: Extra inputs are not permitted",
    ),
    (
        "session_defaults",
        {"session_defaults": {"partial_interval_ms": 5}},
        "session_defaults.partial_interval_ms: Input should be greater than or equal to 100",
    ),
    (
        "session_defaults",
        {"session_defaults": {"interim_result": False}},
        "session_defaults.interim_result: Extra inputs are not permitted",
    ),
    ("session_defaults", {"session_defaults": {"language": "xx"}}, "session_defaults: language must be"),
    ("session_defaults", {"session_defaults": {"sample_rate": 12345}}, "sample_rate must be one of"),
    ("auth_tokens", {"auth_tokens": {SECRET: "bad id!"}}, "token #1 is bound to an invalid device id"),
    ("auth_tokens", {"auth_tokens": {"ok": "*", SECRET: "robot/1"}}, "token #2 is bound to an invalid"),
    ("auth_tokens", {"auth_tokens": {"": "*"}}, "auth_tokens: token #1 is empty"),
    ("auth_tokens", {"auth_tokens": {"   ": "*"}}, "auth_tokens: token #1 is empty"),
    ("auth_tokens", {"auth_tokens": {"x" * 4097: "*"}}, "longer than 4096 characters"),
    ("auth_tokens", {"auth_tokens": {f" {SECRET}": "*"}}, "leading or trailing whitespace"),
    ("auth_tokens", {"auth_tokens": {SECRET: 7}}, "must be strings"),
    ("auth_tokens", {"auth_tokens": [SECRET]}, "valid dictionary"),
    ("fallback_model", {"fallback_model": ""}, "at least 1 character"),
]


@pytest.mark.parametrize(
    ("field", "kwargs", "fragment"), INVALID, ids=[f"{f}-{i}" for i, (f, *_) in enumerate(INVALID)]
)
def test_invalid_setting_is_refused_naming_the_field(
    field: str, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**kwargs)
    errors = caught.value.errors()
    assert [e["loc"][0] for e in errors] == [field]
    assert fragment in errors[0]["msg"]
    assert field in str(caught.value)
    assert SECRET not in str(caught.value), "an error never echoes a token"


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("EMOSTT_MAX_BATCH_SIZE", "0", "max_batch_size"),
        ("EMOSTT_PORT", "70000", "port"),
        ("EMOSTT_DEVICE", "gpu", "device"),
        ("EMOSTT_BACKEND", "tensorrt", "backend"),
        ("EMOSTT_TARGET_UTILIZATION", "1.5", "target_utilization"),
        ("EMOSTT_SESSION_DEFAULTS", '{"vad": {"silnce_duration_ms": 1}}', "session_defaults"),
        ("EMOSTT_AUTH_TOKENS", json.dumps({SECRET: "bad id!"}), "auth_tokens"),
    ],
)
def test_invalid_environment_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [e["loc"][0] for e in caught.value.errors()] == [field]
    assert SECRET not in str(caught.value)


def test_session_defaults_typo_names_the_nested_field_exactly() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(session_defaults={"vad": {"silnce_duration_ms": 1}})
    assert caught.value.errors()[0]["msg"] == (
        "session_defaults.vad.silnce_duration_ms: Extra inputs are not permitted"
    )


def test_misspelt_keyword_is_refused_but_unknown_environment_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(max_batch_sise=4)  # type: ignore[call-arg]
    assert caught.value.errors()[0]["loc"] == ("max_batch_sise",)
    monkeypatch.setenv("EMOSTT_MAX_BATCH_SISE", "4")
    assert Settings().max_batch_size is None


def test_defaults_construct_with_the_documented_values() -> None:
    settings = Settings()
    assert settings.backend == "auto"
    assert (settings.device, settings.precision, settings.hub) == ("auto", "auto", "ms")
    assert settings.auth_tokens == {}
    assert not settings.auth_tokens
    assert (settings.ws_ping_interval_s, settings.ws_ping_timeout_s, settings.send_timeout_s) == (
        20.0,
        20.0,
        10.0,
    )
    assert (settings.target_utilization, settings.session_demand_prior) == (0.7, 1.0)
    assert settings.readiness_reports_full is True
    assert EngineSettings().backend == "auto"


def test_valid_values_are_accepted_as_given() -> None:
    defaults = {"partial_interval_ms": 300, "sample_rate": 8000, "vad": {"silence_duration_ms": 400}}
    settings = Settings(
        device="cuda:1",
        fallback_device="cpu",
        precision="bf16",
        backend="onnx",
        threads=2,
        model_workers=3,
        partial_workers=0,
        max_batch_size=1,
        port=65535,
        batch_wait_ms=0,
        burst_audio_s=0,
        retry_backoff_s=0,
        max_retries=0,
        target_utilization=1.0,
        session_defaults=defaults,
        auth_tokens={"tok": "*", "other": "robot-1"},
    )
    assert settings.device == "cuda:1" and settings.max_batch_size == 1 and settings.partial_workers == 0
    assert settings.session_defaults == defaults, "kept as given: each connection merges its sample_rate in"
    assert {key.get_secret_value(): device for key, device in settings.auth_tokens.items()} == {
        "tok": "*",
        "other": "robot-1",
    }


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTT_AUTH_TOKENS", json.dumps({SECRET: "*"}))
    monkeypatch.setenv("EMOSTT_SESSION_DEFAULTS", '{"vad": {"silence_duration_ms": 300}}')
    monkeypatch.setenv("EMOSTT_SEND_TIMEOUT_S", "2.5")
    monkeypatch.setenv("EMOSTT_READINESS_REPORTS_FULL", "false")
    settings = Settings()
    assert [key.get_secret_value() for key in settings.auth_tokens] == [SECRET]
    assert settings.session_defaults == {"vad": {"silence_duration_ms": 300}}
    assert settings.send_timeout_s == 2.5 and settings.readiness_reports_full is False


def test_tokens_never_show_in_repr_str_or_dumps() -> None:
    settings = Settings(auth_tokens={SECRET: "*", "second-secret": "robot-1"})
    dumped = settings.model_dump()
    for text in (
        repr(settings),
        str(settings),
        str(dumped),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
    ):
        assert SECRET not in text and "second-secret" not in text
    assert all(isinstance(key, SecretStr) for key in dumped["auth_tokens"])
    assert sorted(dumped["auth_tokens"].values()) == ["*", "robot-1"]


def test_settings_round_trip_through_their_own_dump() -> None:
    """A copy built from model_dump() keeps the tokens (they stay wrapped, not masked)."""
    settings = Settings(auth_tokens={SECRET: "robot-1"})
    copy = Settings(**settings.model_dump())
    assert {key.get_secret_value(): device for key, device in copy.auth_tokens.items()} == {SECRET: "robot-1"}
