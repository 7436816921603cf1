"""Policies and operator policies in the state machine (RabbitMQ docs: Policies): which one
applies, how it combines with a queue's arguments, and that a change applies at once."""

from __future__ import annotations

import pytest

from warrenmq.replication import commands as c
from warrenmq.replication import policies
from warrenmq.replication.policy_changes import POLICIES_MAX
from warrenmq.replication.replies import GetEmpty, GetOk, Ok, Refused

from .harness import VHOST, Harness, declare_exchange_command
from .test_queue_rules import QUORUM, REF, get, publish, ready, reject


def set_policy(
    harness: Harness,
    name: str,
    definition: dict,
    pattern: str = "^q",
    apply_to: str = "all",
    priority: int = 0,
    operator: bool = False,
) -> object:
    return harness.apply(
        c.SetPolicy(
            vhost=VHOST,
            name=name,
            pattern=pattern,
            apply_to=apply_to,
            priority=priority,
            definition=definition,
            operator=operator,
        )
    ).reply


def filled(harness: Harness, queue: str, count: int, **arguments: object) -> None:
    harness.declare_queue(REF, queue, arguments=arguments)
    for number in range(count):
        publish(harness, queue, b"%d" % number)


def test_a_policy_trims_an_existing_queue_at_once_and_its_removal_frees_it() -> None:
    harness = Harness()
    filled(harness, "q", 3)
    assert set_policy(harness, "p", {"max-length": 1}) == Ok()
    assert ready(harness, "q") == 1  # drop-head: the oldest two went
    harness.apply(c.ClearPolicy(vhost=VHOST, name="p", operator=False))
    for number in range(3):
        publish(harness, "q", b"more%d" % number)
    assert ready(harness, "q") == 4


@pytest.mark.parametrize(
    ("argument", "policy", "operator", "kept"),
    [
        (None, 2, None, 2),  # the policy alone
        (3, 2, None, 2),  # limits: the smaller of argument and policy (rabbit_queue_type_util)
        (1, 2, None, 1),
        (5, None, 1, 1),  # an operator policy caps the argument
        (None, 4, 2, 2),  # and the policy
    ],
)
def test_max_length_is_the_smallest_of_argument_policy_and_operator_policy(
    argument: int | None, policy: int | None, operator: int | None, kept: int
) -> None:
    harness = Harness()
    if policy is not None:
        set_policy(harness, "p", {"max-length": policy})
    if operator is not None:
        set_policy(harness, "op", {"max-length": operator}, operator=True)
    filled(harness, "q", 6, **({"x-max-length": argument} if argument is not None else {}))
    assert ready(harness, "q") == kept


def test_the_queue_argument_wins_for_dead_lettering() -> None:
    harness = Harness()
    for queue in ("by-argument", "by-policy"):
        harness.declare_queue(REF, queue)
    set_policy(harness, "p", {"dead-letter-exchange": "", "dead-letter-routing-key": "by-policy"})
    harness.declare_queue(
        REF,
        "q",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "by-argument"},
    )
    publish(harness, "q", b"m")
    reply = get(harness, "q", no_ack=False)
    assert isinstance(reply, GetOk)
    reject(harness, reply.delivery_tag, requeue=False)
    assert ready(harness, "by-argument") == 1 and ready(harness, "by-policy") == 0


def test_of_the_matching_policies_only_the_highest_priority_applies() -> None:
    harness = Harness()
    set_policy(harness, "low", {"max-length": 3, "message-ttl": 0}, priority=1)
    set_policy(harness, "high", {"max-length": 1}, priority=5)
    filled(harness, "q", 4)
    assert ready(harness, "q") == 1  # max-length 1, and no TTL from the lower one
    queue = harness.broker.query_queue(VHOST, "q")
    assert queue is not None and (queue.policy, queue.policy_definition) == (
        "high",
        {"max-length": 1},
    )


def test_apply_to_picks_the_kind_and_queue_type() -> None:
    harness = Harness()
    set_policy(harness, "x", {"alternate-exchange": "ae"}, apply_to="exchanges")
    set_policy(harness, "qq", {"delivery-limit": 2}, apply_to="quorum_queues", priority=1)
    harness.declare_queue(REF, "q-classic")
    harness.declare_queue(REF, "q-quorum", arguments=QUORUM)
    views = {name: harness.broker.query_queue(VHOST, name) for name in ("q-classic", "q-quorum")}
    assert {name: view.policy for name, view in views.items() if view} == {
        "q-classic": None,
        "q-quorum": "qq",
    }


def test_an_exchange_policy_gives_an_alternate_exchange_its_argument_overrides() -> None:
    harness = Harness()
    for name in ("ae", "own"):
        harness.apply(declare_exchange_command(REF, name, "fanout"))
        harness.declare_queue(REF, f"q-{name}")
        harness.apply(
            c.BindQueue(
                channel=REF,
                vhost=VHOST,
                queue=f"q-{name}",
                exchange=name,
                routing_key="",
                arguments={},
            )
        )
    set_policy(harness, "x", {"alternate-exchange": "ae"}, pattern="^x", apply_to="exchanges")
    for name, arguments in (("x1", {}), ("x2", {"alternate-exchange": "own"})):
        harness.apply(declare_exchange_command(REF, name, "direct", arguments=arguments))
        harness.publish(REF, "unbound", b"m", exchange=name)
    assert (ready(harness, "q-ae"), ready(harness, "q-own")) == (1, 1)


@pytest.mark.parametrize(
    ("definition", "operator", "reason"),
    [
        ({"max-length": "ten"}, False, "'ten' is not a valid maximum length"),
        ({"expires": 0}, False, "0 is not a valid queue expiry"),
        ({"overflow": "drop-tail"}, False, "'drop-tail' is not a valid overflow value"),
        ({"no-such-key": 1}, False, "Unrecognised terms ['no-such-key'] in policy"),
        (
            {"dead-letter-exchange": "dlx"},
            True,
            "Unrecognised terms ['dead-letter-exchange'] in policy",
        ),
        ({}, False, "no policy definition given"),
    ],
)
def test_bad_definitions_are_refused_with_rabbitmqs_reasons(
    definition: dict, operator: bool, reason: str
) -> None:
    assert policies.check_definition(definition, operator) == reason
    harness = Harness()
    refused = set_policy(harness, "p", definition, operator=operator)
    assert isinstance(refused, Refused) and refused.reply_text == reason
    assert harness.broker.query_policies(operator) == []


@pytest.mark.parametrize("pattern", ["(a+)+", "(a|aa)*", "([a-z]*)*b", "(x+x+)+y", "(.*a){20}"])
def test_patterns_that_can_take_exponential_time_are_refused(pattern: str) -> None:
    assert "repeats a repeated group" in (policies.check_pattern(pattern) or "")


@pytest.mark.parametrize("pattern", ["^q", "^amq\\.", ".*", "^(orders|billing)\\.", "^a.b$", ""])
def test_ordinary_patterns_are_taken(pattern: str) -> None:
    assert policies.check_pattern(pattern) is None


def test_a_ttl_of_zero_by_policy_drops_what_no_consumer_takes() -> None:
    harness = Harness()
    set_policy(harness, "p", {"message-ttl": 0})
    filled(harness, "q", 1)
    assert get(harness, "q") == GetEmpty()


@pytest.mark.parametrize(
    ("pattern", "definition", "apply_to", "priority", "reason"),
    [
        ("x" * 256, {"max-length": 1}, "all", 0, "pattern is longer than 255 bytes"),
        (7, {"max-length": 1}, "all", 0, "pattern must be a string"),
        ("^q", [["max-length", 1]], "all", 0, "definition must be a table"),
        ("^q", {"max-length": {"nested": [1]}}, "all", 0, "{'nested': [1]} is not a valid"),
        ("^q", {"max-length": 1}, None, 0, "'None' is not a valid apply-to value"),
        ("^q", {"max-length": 1}, "all", True, "priority must be an integer"),
        ("^q", {"max-length": 1}, "all", "high", "priority must be an integer"),
    ],
)
def test_worst_values_of_a_policy_are_refused(
    pattern: object, definition: object, apply_to: object, priority: object, reason: str
) -> None:
    found = policies.check_policy(pattern, definition, apply_to, priority, operator=False)
    assert found is not None and found.startswith(reason)


def test_a_vhost_holds_a_bounded_number_of_policies() -> None:
    harness = Harness()
    for number in range(POLICIES_MAX):
        assert set_policy(harness, f"p{number}", {"max-length": 5}, pattern="^never") == Ok()
    refused = set_policy(harness, "one-more", {"max-length": 5})
    assert isinstance(refused, Refused) and "1000 policies" in refused.reply_text
    assert set_policy(harness, "p0", {"max-length": 6}) == Ok()  # replacing one is fine
    assert set_policy(harness, "op", {"max-length": 5}, operator=True) == Ok()  # a table apart
