"""AMQP 1.0's words for the broker's answers: error conditions for reply codes, and the
dead-lettering annotations a 1.0 consumer sees (rabbitmq.com/docs/dlx, x-opt-deaths)."""

from __future__ import annotations

from proton import symbol, timestamp

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.rewriting import first_and_last_deaths
from warrenmq.replication.replies import Annotations, Death

__all__ = ["condition_of", "death_annotations"]

_CONDITIONS = {
    ReplyCode.NOT_FOUND: "amqp:not-found",
    ReplyCode.ACCESS_REFUSED: "amqp:unauthorized-access",
    ReplyCode.RESOURCE_LOCKED: "amqp:resource-locked",
    ReplyCode.PRECONDITION_FAILED: "amqp:precondition-failed",
    ReplyCode.NOT_IMPLEMENTED: "amqp:not-implemented",
    ReplyCode.RESOURCE_ERROR: "amqp:resource-limit-exceeded",
    ReplyCode.FRAME_ERROR: "amqp:decode-error",
    ReplyCode.NOT_ALLOWED: "amqp:not-allowed",
}


def condition_of(code: ReplyCode) -> str:
    return _CONDITIONS.get(code, "amqp:internal-error")


def death_annotations(annotations: Annotations) -> dict[str, object]:
    """x-opt-deaths (most recent first) and the x-first/last-death-* annotations."""
    found: dict[str, object] = {}
    if annotations.deaths:
        found["x-opt-deaths"] = [_death(death) for death in annotations.deaths]
    found.update(first_and_last_deaths(annotations))
    return found


def _death(death: Death) -> dict[object, object]:
    entry: dict[object, object] = {
        symbol("queue"): death.queue,
        symbol("reason"): symbol(death.reason),
        symbol("count"): death.count,
        symbol("first-time"): timestamp(death.time_ms),
        symbol("last-time"): timestamp(death.time_ms),
        symbol("exchange"): death.exchange,
        symbol("routing-keys"): list(death.routing_keys),
    }
    if death.original_expiration is not None:
        entry[symbol("ttl")] = int(death.original_expiration)
    return entry
