"""Protocol constants of AMQP 0-9-1 as RabbitMQ uses them: reply codes, limits, defaults."""

from __future__ import annotations

import enum

__all__ = [
    "CLASS_BASIC",
    "FRAME_END",
    "PROTOCOL_HEADER",
    "PROTOCOL_HEADER_0_9",
    "ReplyCode",
    "reply_text",
]

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"  # AMQP 0-9-1 §4.2.2
# AMQP 0-9's header, which RabbitMQ 4.x answers as 0-9-1 (its reader's version_negotiation)
PROTOCOL_HEADER_0_9 = b"AMQP\x01\x01\x00\x09"
FRAME_END = 0xCE
FRAME_HEADER_BYTES = 7  # type, channel, size
FRAME_OVERHEAD_BYTES = 8  # header plus frame-end octet
FRAME_MIN_SIZE_BYTES = 4096  # AMQP 0-9-1 §4.2.3: the frame size every peer must accept
CLASS_BASIC = 60


class ReplyCode(enum.IntEnum):
    """AMQP 0-9-1 §1.2 reply codes. 3xx/4xx close a channel, 5xx the connection."""

    REPLY_SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541

    @property
    def is_connection_error(self) -> bool:
        return self == ReplyCode.CONNECTION_FORCED or self == ReplyCode.INVALID_PATH or self >= 500


REPLY_TEXT_BYTES_MAX = 255  # reply-text is a short string (AMQP 0-9-1 §4.2.5.3)


def reply_text(code: ReplyCode, text: str) -> str:
    """RabbitMQ's form: the code's name, a dash, the explanation (or the name alone); cut to
    a short string's 255 bytes with '...' at the end, as RabbitMQ cuts it."""
    whole = f"{code.name} - {text}" if text else code.name
    encoded = whole.encode()
    if len(encoded) <= REPLY_TEXT_BYTES_MAX:
        return whole
    kept = encoded[: REPLY_TEXT_BYTES_MAX - 3].decode(errors="ignore")
    return kept + "..."
