"""The checks behind the settings that a field's type and bounds cannot say: device names, the
auth token table, the turn model's file. Each refusal names its field and never echoes a value
that may be a secret. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, SecretStr
from pydantic_core import PydanticCustomError

from emostt.vocabulary import DEVICE_ID, DEVICE_ID_RULE
from emostt.vocabulary.turn_model import TURN_MODEL_CHOICES

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
MAX_TOKEN_CHARS = 4096


def invalid(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is exactly ``message`` (pydantic adds the field's location)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def check_device(field: str, value: str) -> str:
    """``value`` when it names a device the engine can pick; otherwise an error naming ``field``."""
    if not DEVICE_PATTERN.fullmatch(value):
        raise invalid("invalid_device", f"{field} must be {DEVICE_CHOICES}, got {value!r}")
    return value


def secret_token_table(table: Mapping[Any, Any]) -> dict[SecretStr, str]:
    """``token -> device_id`` with every token wrapped as a secret.

    Problems are reported by the token's position, never by its text (or by the device id, which
    may be a token when the pair was written the wrong way round).
    """
    checked: dict[SecretStr, str] = {}
    for position, (raw_token, device) in enumerate(table.items(), start=1):
        token = raw_token.get_secret_value() if isinstance(raw_token, SecretStr) else raw_token
        where = f"auth_tokens: token #{position}"
        if not isinstance(token, str) or not isinstance(device, str):
            raise invalid("invalid_auth_tokens", f"{where}: tokens and device ids must be strings")
        if not token.strip():
            raise invalid("invalid_auth_tokens", f"{where} is empty")
        if len(token) > MAX_TOKEN_CHARS:
            raise invalid("invalid_auth_tokens", f"{where} is longer than {MAX_TOKEN_CHARS} characters")
        if token != token.strip():
            # A bearer token is stripped when presented, so this one could never match.
            raise invalid("invalid_auth_tokens", f"{where} has leading or trailing whitespace")
        if device != "*" and not DEVICE_ID.fullmatch(device):
            raise invalid(
                "invalid_auth_tokens",
                f"{where} is bound to an invalid device id: it must be '*' or {DEVICE_ID_RULE}",
            )
        checked[SecretStr(token)] = device
    return checked


def check_turn_model(value: str) -> str:
    """``value`` when it is auto, off or an existing .onnx file; otherwise an error naming the
    setting, so a mistyped path stops the start-up instead of silently running without turns."""
    if value in ("auto", "off"):
        return value
    if not value.endswith(".onnx"):
        problem = f"turn_model must be {TURN_MODEL_CHOICES}, got {value!r}"
        raise invalid("invalid_turn_model", problem)
    if not Path(value).is_file():
        problem = f"turn_model: no such file {value!r}"
        raise invalid("invalid_turn_model", problem)
    return value


TurnModelSetting = Annotated[str, AfterValidator(check_turn_model)]
