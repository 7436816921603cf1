"""Where Warren answers differently from the recorded RabbitMQ, on purpose, and why.

The recording is RabbitMQ 3.10.8 (the one Debian packages); our users run 4.x. Where 4.x does
otherwise than 3.10, Warren follows 4.x, and the reason names the source or document that says
so. The rest are Warren's own differences, each also in README.md's list. What Warren answers
instead is in expected/warren.txt, line for line.
"""

from __future__ import annotations

X_LAST_DEATH = (
    "RabbitMQ 4.x adds x-last-death-reason, -queue and -exchange beside x-first-death-* "
    "(docs: Dead Letter Exchanges, 'Dead-Lettered Messages'; rabbit_dead_letter.erl)"
)
FIRST_DELIVERY_COUNT = (
    "RabbitMQ 4.x sets no x-delivery-count on a quorum queue's first delivery, only on "
    "redeliveries (docs: Quorum Queues, 'Poison Message Handling'; 4.0 release notes)"
)
EQUIVALENCE_TEXT = (
    "RabbitMQ 4.x words every inequivalent arg as \"received the value 'X' of type 'T' but "
    "current is the value 'Y' of type 'T'\" (rabbit_misc:equivalence_fail/val); Warren names "
    "an integer's type 'long' whatever width the client encoded it in"
)
TYPE_NAMES = (
    "Warren does not keep the wire type of a table value: it names integers 'long' and floats "
    "'double' in error texts, where RabbitMQ names the type the client sent (byte, float, ...)"
)
TUNE_CLOSE = (
    "RabbitMQ 4.x's reader answers a not-allowed tune with connection.close 530 "
    "(rabbit_reader:handle_exception, the 'tuning' clause); 3.10 closed the socket"
)
OLD_HEADER = (
    "RabbitMQ 4.x speaks 0-9-1 to the 0-9-1 and 0-9 headers only and refuses the others with "
    "its own header (rabbit_reader:version_negotiation); 3.10 still spoke 0-8"
)

DIFFERENCES: dict[str, str] = {
    **dict.fromkeys(
        (
            "dead_letter_rejected_classic",
            "dead_letter_rejected_quorum",
            "dead_letter_expired",
            "dead_letter_expired_per_message",
            "dead_letter_maxlen",
            "dead_letter_keeps_routing_key",
            "dead_letter_twice",
            "policy_dead_letter_exchange",
        ),
        X_LAST_DEATH,
    ),
    **dict.fromkeys(
        (
            "quorum_redelivery_counts",
            "quorum_delivery_limit_drops",
            "quorum_delivery_limit_dead_letters",
        ),
        FIRST_DELIVERY_COUNT,
    ),
    **dict.fromkeys(
        (
            "exchange_redeclare_other_alternate",
            "queue_redeclare_arguments",
            "queue_redeclare_arguments_added",
            "queue_redeclare_arguments_removed",
            "queue_redeclare_ttl_type",
            "queue_redeclare_dlx",
        ),
        EQUIVALENCE_TEXT,
    ),
    **dict.fromkeys(
        (
            "headers_25",
            "queue_argument_message_ttl_float",
            "queue_argument_overflow_int",
            "queue_argument_dlx_int",
        ),
        TYPE_NAMES,
    ),
    **dict.fromkeys(
        (
            "handshake_frame_max_too_small",
            "handshake_frame_max_too_large",
            "handshake_channel_max_too_large",
        ),
        TUNE_CLOSE,
    ),
    **dict.fromkeys(("handshake_header_0_8", "handshake_header_0_9_1_old"), OLD_HEADER),
    "headers_19": (
        "RabbitMQ 4.x compares header values with =:= (rabbit_exchange_type_headers:match), so "
        "1 does not match 1.0; 3.10 compared them as numbers"
    ),
    "queue_redeclare_queue_type": (
        "RabbitMQ 4.x stores a classic queue's x-queue-type (augment_declare_args), so the "
        "current value is 'classic', not none"
    ),
    "quorum_redeclare_as_classic": (
        "RabbitMQ 4.x gives a declare without x-queue-type the default type before comparing "
        "(rabbit_amqqueue:augment_declare_args), so it receives 'classic', not none"
    ),
    "queue_argument_queue_mode_unknown": (
        "RabbitMQ 4.x no longer checks x-queue-mode (classic queues v2 ignore it; no validator "
        "in rabbit_amqqueue:declare_args)"
    ),
    "queue_argument_consumer_timeout_string": (
        "RabbitMQ 4.x checks x-consumer-timeout as a non-negative integer "
        "(rabbit_amqqueue:declare_args); 3.10 did not"
    ),
    "quorum_argument_delivery_limit_string": (
        "Warren refuses a non-integer x-delivery-limit (406), where RabbitMQ takes it and the "
        "queue silently falls back to its default limit"
    ),
    "quorum_priority_high_first": (
        "RabbitMQ 4.x quorum queues have two priority levels, above 4 being high "
        "(docs: Quorum Queues, 'Priorities'); 3.10 had none"
    ),
    "quorum_reject_publish": (
        "Warren's quorum queue applies x-overflow reject-publish to the very publish that "
        "passes the limit; RabbitMQ's learns it is full asynchronously and may take a few more"
    ),
    "policy_apply_to_quorum_only": (
        "RabbitMQ 4.x takes apply-to 'quorum_queues' and 'classic_queues' (docs: Policies); "
        "3.10 refused them, so nothing applied"
    ),
}
