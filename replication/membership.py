"""Who may act: node incarnations coming up and going down, and what goes with a channel, a
connection or a whole node incarnation when it ends."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication import consumers, queues, settle
from warrenmq.replication.replies import Ignored, Ok, Reply
from warrenmq.replication.state import BrokerState
from warrenmq.replication.step import Step


def is_live(state: BrokerState, node: str, incarnation: int) -> bool:
    """Whether `node`'s `incarnation` is the one the cluster knows, and not down."""
    return state.incarnations.get(node) == incarnation and node not in state.down_nodes


def apply_node_up(step: Step, command: c.NodeUp) -> Reply:
    state = step.state
    if command.incarnation < state.incarnations.get(command.node, 0):
        return Ignored()  # an older incarnation's late announcement
    state.incarnations[command.node] = command.incarnation
    state.down_nodes.discard(command.node)
    state.pids[command.node] = command.pid
    _release_node(step, command.node, keep_incarnation=command.incarnation)
    return Ok()


def apply_node_down(step: Step, command: c.NodeDown) -> Reply:
    if not is_live(step.state, command.node, command.incarnation):
        return Ignored()  # already down, or restarted since
    step.state.down_nodes.add(command.node)
    _release_node(step, command.node, keep_incarnation=None)
    return Ok()


def apply_close_channel(step: Step, command: c.CloseChannel) -> Reply:
    step.state.failed_channels.discard(command.channel)
    _release_channels(step, [command.channel])
    return Ok()


def apply_session_closed(step: Step, command: c.SessionClosed) -> Reply:
    state = step.state
    connection = (command.node, command.incarnation, command.connection)
    state.failed_connections.discard(connection)
    state.failed_channels = {
        ref for ref in state.failed_channels if ref.connection_ref != connection
    }
    _release_channels(step, [ref for ref in state.channels if ref.connection_ref == connection])
    for vhost in state.vhosts.values():
        for queue in [
            queue for queue in vhost.queues.values() if queue.exclusive_owner == connection
        ]:
            queues.remove_queue(step, vhost, queue)
    return Ok()


def _release_node(step: Step, node: str, keep_incarnation: int | None) -> None:
    """Release the channels, exclusive queues, failure marks and alarms of `node`'s
    incarnations.

    All of them, or all but `keep_incarnation`.
    """
    state = step.state

    def released(ref_node: str, incarnation: int) -> bool:
        return ref_node == node and incarnation != keep_incarnation

    _release_channels(step, [ref for ref in state.channels if released(ref.node, ref.incarnation)])
    for vhost in state.vhosts.values():
        for queue in list(vhost.queues.values()):
            owner = queue.exclusive_owner
            if owner is not None and released(owner[0], owner[1]):
                queues.remove_queue(step, vhost, queue)
    state.failed_channels = {
        ref for ref in state.failed_channels if not released(ref.node, ref.incarnation)
    }
    state.failed_connections = {
        ref for ref in state.failed_connections if not released(ref[0], ref[1])
    }
    # a node's alarms go with it; its next incarnation raises them again if they still hold
    state.alarms = {alarm for alarm in state.alarms if alarm[0] != node}


def _release_channels(step: Step, refs: list[c.ChannelRef]) -> None:
    """Cancel every consumer of these channels first, then return their unacked messages.

    In that order, a returned message can only go to a consumer that lives on: returning one
    channel's messages before the next dying channel's consumers are gone would hand them to
    a dead consumer and count a delivery that never happened.
    """
    channels = [
        channel for ref in refs if (channel := step.state.channels.pop(ref, None)) is not None
    ]
    for channel in channels:
        for consumer_tag in list(channel.consumers):
            consumers.remove_consumer(step, channel, consumer_tag)
    given_back = [each for channel in channels for each in settle.give_back_unacked(step, channel)]
    settle.redispatch(step, given_back)
