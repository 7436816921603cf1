"""The log encoding round-trips every command exactly and refuses what it does not know."""

from __future__ import annotations

import dataclasses
import struct
import typing

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from warrenmq.replication import commands as c

channel_refs = st.builds(
    c.ChannelRef,
    st.text(max_size=8),
    st.integers(0, 2**40),
    st.integers(0, 2**31),
    st.integers(0, 2**16),
)
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=8), plain_values, max_size=4)


def strategy_for(hint: object) -> st.SearchStrategy[typing.Any]:
    if hint is c.ChannelRef:
        return channel_refs
    if hint is bytes:
        return st.binary(max_size=64)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(0, 2**53)
    if hint is str:
        return st.text(max_size=12)
    if typing.get_args(hint) == (int, ...):  # delivery tags: up to 2**64 - 1
        return st.lists(st.integers(0, 2**64 - 1), max_size=4).map(tuple)
    if typing.get_origin(hint) is tuple:
        return st.tuples(st.text(max_size=5)) | st.just(())
    return st.none() | arguments  # Arguments or Arguments | None


def command_strategy(command_type: type) -> st.SearchStrategy[typing.Any]:
    hints = typing.get_type_hints(command_type)
    return st.builds(
        command_type,
        **{
            field.name: strategy_for(hints[field.name])
            for field in dataclasses.fields(command_type)
        },
    )


any_command = st.one_of(
    *(command_strategy(command_type) for command_type in typing.get_args(c.Command))
)


@given(st.lists(any_command, max_size=6))
def test_entries_round_trip(commands: list) -> None:
    assert c.decode_entry(c.encode_entry(commands)) == commands


def test_an_unknown_version_is_refused() -> None:
    data = bytearray(c.encode_entry([c.AddVhost(vhost="/")]))
    data[0] = 99
    with pytest.raises(ValueError, match="version 99"):
        c.decode_entry(bytes(data))


def test_command_tags_are_stable() -> None:
    """Tags are positions in the Command union: appending is fine, reordering breaks old logs."""
    names = [command_type.__name__ for command_type in typing.get_args(c.Command)]
    assert names[:4] == ["NodeUp", "AddVhost", "AddUser", "DeclareExchange"]
    assert names.index("Publish") == 12 and names.index("SessionClosed") == 21


def test_an_entry_written_before_a_field_was_added_decodes_with_its_default() -> None:
    publish = c.Publish(
        channel=c.ChannelRef("n1", 1, 1, 1),
        vhost="/",
        exchange="",
        routing_key="q",
        headers=None,
        properties=b"",
        body=b"m",
        now_ms=5,
        expiration="100",
        replies_to_channel=True,
        priority=7,
    )
    data = c.encode_entry([publish])
    header = 5 + 5  # version and count, then tag and json length
    (length,) = struct.unpack_from(">I", data, 6)
    fields = orjson.loads(data[header : header + length])
    older = orjson.dumps(fields[:5])  # as written before now_ms and what follows existed
    old_entry = data[:6] + struct.pack(">I", len(older)) + older + data[header + length :]
    (decoded,) = c.decode_entry(old_entry)
    assert decoded == dataclasses.replace(
        publish, now_ms=0, expiration=None, replies_to_channel=False, priority=0
    )
    too_new = orjson.dumps([*fields, "a field this version does not know"])
    with pytest.raises(ValueError, match="fields"):
        c.decode_entry(
            data[:6] + struct.pack(">I", len(too_new)) + too_new + data[header + length :]
        )


def test_a_version_1_publish_decodes_without_its_seq_and_mandatory() -> None:
    """Version 1 wrote Publish with `seq` after the channel and `mandatory` after the routing
    key; nothing read them. A log written then still replays (bytes laid out by hand)."""
    fields = [["n1", 1, 2, 3], 41, "/", "amq.direct", "rk", True, {"h": 1}, 5, "100", False, 7]
    metadata = orjson.dumps(fields)
    raw = b"".join(struct.pack(">I", len(part)) + part for part in (b"\x00\x00", b"body"))
    tag = typing.get_args(c.Command).index(c.Publish)
    entry = struct.pack(">BI", 1, 1) + struct.pack(">BI", tag, len(metadata)) + metadata + raw
    assert c.decode_entry(entry) == [
        c.Publish(
            channel=c.ChannelRef("n1", 1, 2, 3),
            vhost="/",
            exchange="amq.direct",
            routing_key="rk",
            headers={"h": 1},
            properties=b"\x00\x00",
            body=b"body",
            now_ms=5,
            expiration="100",
            replies_to_channel=False,
            priority=7,
        )
    ]
    assert c.encode_entry(c.decode_entry(entry))[0] == c.ENCODING_VERSION == 2
    with pytest.raises(ValueError, match="version 3"):
        c.decode_entry(struct.pack(">BI", 3, 0))


def test_a_settle_written_before_more_existed_decodes_with_no_more_tags() -> None:
    settle = c.Settle(channel=c.ChannelRef("n1", 1, 1, 1), delivery_tag=7, multiple=True)
    data = c.encode_entry([settle])
    header = 5 + 5  # version and count, then tag and json length
    fields = orjson.loads(data[header:])
    assert fields == [["n1", 1, 1, 1], 7, True, []]
    older = orjson.dumps(fields[:3])  # channel, delivery_tag, multiple
    assert c.decode_entry(data[:6] + struct.pack(">I", len(older)) + older) == [settle]
