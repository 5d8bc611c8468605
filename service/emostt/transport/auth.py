"""Handshake checks: device id, origin, token. Pure functions over what the handshake carries."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from emostt.vocabulary import DEVICE_ID, DEVICE_ID_RULE

SUBPROTOCOL = "emostt.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."


@dataclass(frozen=True)
class Rejection:
    reason: str  # metric label and error code
    message: str


def offered_subprotocols(header: str | None) -> list[str]:
    return [p.strip() for p in (header or "").split(",") if p.strip()]


def presented_token(
    authorization: str | None, subprotocols: Sequence[str], query_token: str | None
) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    for proto in subprotocols:
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    return query_token


def check_handshake(
    device_id: str,
    origin: str | None,
    token: str | None,
    tokens: Mapping[SecretStr, str] | Mapping[str, str],
    allowed_origins: Sequence[str],
) -> Rejection | None:
    """None when the handshake may proceed; otherwise why not. Never raises, whatever ``token`` holds."""
    if not DEVICE_ID.fullmatch(device_id):
        return Rejection("invalid_device_id", f"device_id must be {DEVICE_ID_RULE}")
    if allowed_origins and origin is not None and origin not in allowed_origins:
        return Rejection("origin_not_allowed", "this Origin is not allowed")
    if not tokens:
        return None
    if token is None:
        return Rejection(
            "unauthorized",
            "a token is required (Authorization: Bearer, bearer.<token> subprotocol or ?token=)",
        )
    bound = bound_device(token, tokens)
    if bound is None:
        return Rejection("unauthorized", "invalid token")
    if bound not in ("*", device_id):
        return Rejection("unauthorized", "this token is not valid for this device_id")
    return None


def bound_device(token: str, tokens: Mapping[SecretStr, str] | Mapping[str, str]) -> str | None:
    """The device id ``token`` is bound to, or None when it is not a known token.

    Constant time in the tokens' contents: every known token is compared, with no early exit,
    over fixed-length digests (so neither a token's length nor its first differing byte shows).
    """
    presented = _digest(token)
    bound = None
    for known, device in tokens.items():
        secret = known.get_secret_value() if isinstance(known, SecretStr) else known
        if hmac.compare_digest(_digest(secret), presented):
            bound = device
    return bound


def _digest(token: str) -> bytes:
    # Any str can be encoded this way, lone surrogates included (they can arrive percent-encoded
    # in ?token=), so a presented token of any content is compared rather than crashing.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
