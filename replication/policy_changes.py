"""SetPolicy and ClearPolicy: a vhost's policies change, and with them, at once, what applies
to each of its queues and exchanges (replication/policies.py has the rules)."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication import exchanges, policies, queues
from warrenmq.replication.replies import Ok, Reply
from warrenmq.replication.state import Policy, Vhost
from warrenmq.replication.step import ReplyCode, Step, refusal

__all__ = ["POLICIES_MAX", "apply_clear_policy", "apply_set_policy"]

POLICIES_MAX = 1_000  # policies (and, apart, operator policies) per vhost


def apply_set_policy(step: Step, command: c.SetPolicy) -> Reply:
    vhost = step.vhost(command.vhost)
    # the proposer checked it; a log written otherwise must still not stop the machine
    reason = policies.check_policy(
        command.pattern, command.definition, command.apply_to, command.priority, command.operator
    )
    if reason is not None:
        raise refusal(ReplyCode.PRECONDITION_FAILED, reason)
    table = vhost.operator_policies if command.operator else vhost.policies
    if command.name not in table and len(table) >= POLICIES_MAX:
        # every queue declared is matched against each: a limit, where RabbitMQ has none
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f"vhost '{command.vhost}' has {POLICIES_MAX} policies of this kind, the most it holds",
        )
    table[command.name] = Policy(
        command.name, command.pattern, command.apply_to, command.priority, command.definition
    )
    _refresh(step, vhost)
    return Ok()


def apply_clear_policy(step: Step, command: c.ClearPolicy) -> Reply:
    vhost = step.vhost(command.vhost)
    table = vhost.operator_policies if command.operator else vhost.policies
    if table.pop(command.name, None) is not None:
        _refresh(step, vhost)
    return Ok()


def _refresh(step: Step, vhost: Vhost) -> None:
    for queue in list(vhost.queues.values()):
        queues.apply_policies(step, vhost, queue)
    for exchange in vhost.exchanges.values():
        exchanges.apply_policy(vhost, exchange)
