"""Every scenario module; importing this package registers them all, in this order."""

from . import access, basic, dead_letter, exchanges, handshake, policies, queues, quorum

__all__ = [
    "access",
    "basic",
    "dead_letter",
    "exchanges",
    "handshake",
    "policies",
    "queues",
    "quorum",
]
