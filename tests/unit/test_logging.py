from __future__ import annotations

import logging

import orjson

from emostt.observability.logging import JsonFormatter, RedactTokens, redact


def test_tokens_in_query_strings_are_redacted() -> None:
    assert redact('"WebSocket /ws/stt/robot-1?sample_rate=48000&token=s3cr3t" [accepted]') == (
        '"WebSocket /ws/stt/robot-1?sample_rate=48000&token=[REDACTED]" [accepted]'
    )
    # uvicorn's access log passes the path as an argument, not in the message.
    record = logging.makeLogRecord(
        {"msg": '%s - "WebSocket %s" [accepted]', "args": ("127.0.0.1:5000", "/ws/stt/a?token=abc")}
    )
    RedactTokens().filter(record)
    assert "abc" not in record.getMessage() and "[REDACTED]" in record.getMessage()


def test_json_lines_carry_the_extra_fields() -> None:
    record = logging.makeLogRecord({"msg": "session opened", "levelname": "INFO", "name": "emostt"})
    record.session_id = "abc123"
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "session opened" and line["session_id"] == "abc123"


def test_invalid_utf8_frames_are_logged_without_a_traceback() -> None:
    from emostt.observability.logging import ClientFrameErrors

    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Invalid UTF-8 sequence received from client.",
        None,
        exc_info,
    )
    assert ClientFrameErrors().filter(record)
    assert record.exc_info is None and record.levelname == "WARNING"
