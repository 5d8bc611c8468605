"""Handshake checks: any presented token is answered (never a crash), in every transport."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pydantic import SecretStr

from emostt.config import Settings
from emostt.transport.auth import Rejection, bound_device, check_handshake, presented_token

PLAIN = {"secret-any": "*", "secret-robot": "robot-1", "tökén-ünicode": "*"}
# As the service holds them: the same table, validated into SecretStr keys.
FROM_SETTINGS = Settings(auth_tokens=PLAIN).auth_tokens

ODD_TOKENS = [
    "tökén",
    "令牌",
    "\udcff",  # a lone surrogate, as a percent-encoded ?token= can decode to
    "\ud800secret-any",
    "secret-any\x00",
    "\x00",
    "",
    " ",
    "x" * 100_000,
    "secret-an",
    "secret-anyy",
    "SECRET-ANY",
    "🔑" * 50,
]


def check(
    token: str | None, tokens: Mapping[SecretStr, str] | Mapping[str, str], device: str = "robot-1"
) -> Rejection | None:
    return check_handshake(device, None, token, tokens, [])


@pytest.mark.parametrize("tokens", [PLAIN, FROM_SETTINGS], ids=["plain", "settings"])
@pytest.mark.parametrize("token", ODD_TOKENS, ids=range(len(ODD_TOKENS)))
def test_any_unknown_token_is_unauthorized(token: str, tokens: Mapping[str, str]) -> None:
    assert check(token, tokens) == Rejection("unauthorized", "invalid token")


@pytest.mark.parametrize("tokens", [PLAIN, FROM_SETTINGS], ids=["plain", "settings"])
def test_known_tokens_and_their_bindings(tokens: Mapping[str, str]) -> None:
    assert check("secret-any", tokens, "robot-7") is None
    assert check("secret-robot", tokens, "robot-1") is None
    assert check("tökén-ünicode", tokens) is None, "a non-ASCII token that is configured matches"
    bound = check("secret-robot", tokens, "robot-2")
    assert bound is not None and bound.reason == "unauthorized" and "device_id" in bound.message
    missing = check(None, tokens)
    assert missing is not None and missing.reason == "unauthorized" and "required" in missing.message


def test_open_service_needs_no_token() -> None:
    assert check(None, {}) is None
    assert check("tökén", {}) is None
    assert check(None, Settings().auth_tokens) is None


def test_device_id_and_origin_are_checked_first() -> None:
    rejected = check_handshake("bad id!", None, "secret-any", PLAIN, [])
    assert rejected is not None and rejected.reason == "invalid_device_id"
    rejected = check_handshake("robot-1\n", None, "secret-any", PLAIN, [])
    assert rejected is not None and rejected.reason == "invalid_device_id"
    rejected = check_handshake(
        "robot-1", "https://evil.example", "secret-any", PLAIN, ["https://app.example"]
    )
    assert rejected is not None and rejected.reason == "origin_not_allowed"
    assert (
        check_handshake("robot-1", "https://app.example", "secret-any", PLAIN, ["https://app.example"])
        is None
    )


def test_bound_device_compares_every_token() -> None:
    """Plain and SecretStr tables answer alike; an unknown token (of any content) binds nothing."""
    assert bound_device("secret-robot", PLAIN) == "robot-1"
    assert bound_device("\udcff", PLAIN) is None
    assert bound_device("secret-robot", FROM_SETTINGS) == "robot-1"


@pytest.mark.parametrize("token", ["tökén", "令牌", "\udcff", "x" * 10_000, "secret-any"])
def test_each_transport_presents_the_token_and_it_is_checked(token: str) -> None:
    presentations = [
        presented_token(f"Bearer {token}", [], None),
        presented_token(f"bearer   {token}  ", [], None),
        presented_token(None, ["emostt.v1", f"bearer.{token}"], None),
        presented_token(None, [], token),
    ]
    assert presentations == [token] * 4
    expected = None if token == "secret-any" else Rejection("unauthorized", "invalid token")
    for presented in presentations:
        assert check(presented, FROM_SETTINGS) == expected


def test_authorization_header_wins_over_subprotocol_and_query() -> None:
    assert presented_token("Bearer a", ["bearer.b"], "c") == "a"
    assert presented_token("Basic xyz", ["emostt.v1", "bearer.b"], "c") == "b"
    assert presented_token(None, ["emostt.v1"], "c") == "c"
    assert presented_token(None, [], None) is None
