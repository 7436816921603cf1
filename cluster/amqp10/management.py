"""RabbitMQ 4.x's `/management` node: HTTP over AMQP 1.0 on a paired link
(rabbitmq.com/docs/amqp, "Management"; the routes of rabbit_amqp_management).

The client attaches a sender and a receiver, both to `/management`, with one link name and
the link property `paired: true`. A request's `to` is the path, `subject` the method,
`reply-to` is `$me`, and the body an amqp-value; the response's `subject` is the status code,
its `correlation-id` the request's message-id, and it carries `http:response = "1.1"`.
Declarations go through the log as the 0-9-1 methods do, so the same argument checks and
equivalence rules apply; reads are of this node's committed state.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import typing
import urllib.parse

import orjson
from proton import Delivery, Link, Message, symbol, uint, ulong

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.client import ChannelError, Conversation
from warrenmq.cluster.plain import plain_table
from warrenmq.replication import commands as broker
from warrenmq.replication.queries import BindingView, QueueView
from warrenmq.replication.replies import Ignored, MessageCount, QueueDeclared, Refused, Reply

if typing.TYPE_CHECKING:
    from warrenmq.cluster.amqp10.session import V1Session

__all__ = ["ManagementNode", "binding_arguments_hash"]

Json = typing.Any
Answer = typing.Callable[[int, Json], None]


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class ManagementNode:
    """The /management link pairs of one connection."""

    def __init__(self, session: V1Session) -> None:
        self.session = session
        self.links: set[Link] = set()
        self.responders: dict[str, Link] = {}  # by link name: our sender of each pair
        self.pending: dict[Link, collections.deque[bytes]] = {}  # responses beyond credit
        self.conversation: Conversation | None = None
        self._sent = 0  # delivery tags of responses

    def owns(self, link: Link) -> bool:
        return link in self.links

    def attach(self, link: Link) -> None:
        paired = (link.remote_properties or {}).get(symbol("paired"))
        if paired is not True:
            self.session.link_error(
                link,
                "amqp:invalid-field",
                "Link property 'paired' is not set to boolean value 'true'",
            )
            return
        self.links.add(link)
        link.properties = {symbol("paired"): True}
        link.snd_settle_mode = Link.SND_SETTLED
        link.rcv_settle_mode = Link.RCV_FIRST
        link.open()
        if link.is_receiver:
            link.flow(100)
        else:
            self.responders[link.name] = link
            self.pending[link] = collections.deque()
        if self.conversation is None:
            self.conversation = Conversation(self.session.next_ref(link=True))
            self.session.begin(self.conversation)

    def detach(self, link: Link) -> None:
        self.links.discard(link)
        self.pending.pop(link, None)
        if self.responders.get(link.name) is link:
            del self.responders[link.name]

    def flow(self, link: Link) -> None:
        pending = self.pending.get(link)
        while pending and link.credit > 0:
            self._send(link, pending.popleft())

    # --- requests ---------------------------------------------------------------------------

    def request(self, link: Link, delivery: Delivery, payload: bytes) -> None:
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < 50:
            link.flow(100 - link.credit)
        message = Message()
        try:
            message.decode(payload)
        except Exception:
            self.session.link_error(link, "amqp:decode-error", "the request does not decode")
            return
        responder = self.responders.get(link.name)
        request_id = message.id

        def answer(status: int, body: Json) -> None:
            response = Message(
                subject=str(status),
                correlation_id=request_id,
                properties={"http:response": "1.1"},
                body=body,
                inferred=False,
            )
            if responder is not None and responder in self.pending:
                encoded = bytes(response.encode())
                if responder.credit > 0 and not self.pending[responder]:
                    self._send(responder, encoded)
                else:
                    self.pending[responder].append(encoded)
                self.session.protocol.flush_soon()

        if message.reply_to != "$me":
            answer(400, "reply-to must be '$me'")
            return
        try:
            self._route(
                str(message.subject or ""), str(message.address or ""), message.body, answer
            )
        except HttpError as error:
            answer(error.status, error.text)
        except ChannelError as error:
            answer(403 if error.code == ReplyCode.ACCESS_REFUSED else 400, error.text)

    def _send(self, link: Link, encoded: bytes) -> None:
        delivery = link.delivery(str(self._sent))
        self._sent += 1
        link.send(encoded)
        link.advance()
        delivery.settle()

    def _route(self, method: str, target: str, body: Json, answer: Answer) -> None:
        path, _, query = target.partition("?")
        segments = path.split("/")[1:] if path.startswith("/") else []
        match method, segments:
            case "GET", ["queues", queue]:
                self._get_queue(_unquote(queue), answer)
            case "PUT", ["queues", queue]:
                self._declare_queue(_unquote(queue), _map(body), answer)
            case "DELETE", ["queues", queue]:
                self._delete_queue(_unquote(queue), answer)
            case "DELETE", ["queues", queue, "messages"]:
                self._purge_queue(_unquote(queue), answer)
            case "PUT", ["exchanges", exchange]:
                self._declare_exchange(_unquote(exchange), _map(body), answer)
            case "DELETE", ["exchanges", exchange]:
                self._delete_exchange(_unquote(exchange), answer)
            case "POST", ["bindings"]:
                self._bind(_map(body), answer)
            case "DELETE", ["bindings", segment]:
                self._unbind(segment, answer)
            case "GET", ["bindings"]:
                self._list_bindings(urllib.parse.parse_qs(query), answer)
            case _:
                raise HttpError(400, f"bad request: {method} {target}")

    # --- queues -----------------------------------------------------------------------------

    def _get_queue(self, queue: str, answer: Answer) -> None:
        session = self.session
        for action in ("read", "write", "configure"):  # any access will do (passive declare)
            try:
                session.permit(action, "queue", queue)
                break
            except ChannelError:
                if action == "configure":
                    raise
        view = session.node.broker.query_queue(session.vhost, queue)
        if view is None:
            raise HttpError(404, f"queue '{queue}' in vhost '{session.vhost}' not found")
        answer(200, self._queue_json(queue, view, view.ready + view.unacked, len(view.consumers)))

    def _declare_queue(self, queue: str, body: dict[str, Json], answer: Answer) -> None:
        session = self.session
        fields = _fields(
            body,
            {"durable": True, "exclusive": False, "auto_delete": False, "arguments": {}},
            "queue",
        )
        if not queue:
            raise HttpError(400, "declare queue with empty name not allowed")
        _prohibit_cr_lf(queue)
        if queue.startswith("amq."):
            raise HttpError(
                403,
                f"queue '{queue}' in vhost '{session.vhost}' starts with reserved prefix 'amq.'",
            )
        session.permit("configure", "queue", queue)
        arguments = fields["arguments"]
        existed = session.node.broker.query_queue(session.vhost, queue) is not None
        dead_letter_exchange = arguments.get("x-dead-letter-exchange")
        if isinstance(dead_letter_exchange, str) and not existed:
            session.permit("read", "queue", queue)
            session.permit("write", "exchange", dead_letter_exchange)
        command = broker.DeclareQueue(
            channel=self._ref(),
            vhost=session.vhost,
            queue=queue,
            server_named=False,
            passive=False,
            durable=bool(fields["durable"]),
            exclusive=bool(fields["exclusive"]),
            auto_delete=bool(fields["auto_delete"]),
            arguments=arguments,
        )

        def declared(result: Reply) -> None:
            assert isinstance(result, QueueDeclared)
            view = session.node.broker.query_queue(session.vhost, queue)  # as declared
            messages, consumers = result.message_count, result.consumer_count
            answer(200 if existed else 201, self._queue_json(queue, view, messages, consumers))

        self._propose(command, declared, answer)

    def _queue_json(
        self, queue: str, view: QueueView | None, messages: int, consumers: int
    ) -> Json:
        """RabbitMQ's queue map (`view` None: the queue went meanwhile, defaults shown)."""
        session = self.session
        status = session.node.cluster_status()
        members = [member["node_id"] for member in status["members"]]
        found: dict[str, Json] = {
            "message_count": ulong(messages),
            "consumer_count": uint(consumers),
            "name": queue,
            "vhost": session.vhost,
            "durable": view.durable if view else True,
            "auto_delete": view.auto_delete if view else False,
            "exclusive": view.exclusive if view else False,
            "type": view.type if view else "classic",
            "arguments": dict(view.arguments) if view else {},
            "replicas": members,
        }
        if status["leader"]:
            found["leader"] = status["leader"]
        return found

    def _delete_queue(self, queue: str, answer: Answer) -> None:
        _prohibit_cr_lf(queue)
        self.session.permit("configure", "queue", queue)
        command = broker.DeleteQueue(
            channel=self._ref(),
            vhost=self.session.vhost,
            queue=queue,
            if_unused=False,
            if_empty=False,
        )
        self._propose(command, _counted(answer), answer)

    def _purge_queue(self, queue: str, answer: Answer) -> None:
        self.session.permit("read", "queue", queue)
        command = broker.PurgeQueue(channel=self._ref(), vhost=self.session.vhost, queue=queue)
        self._propose(command, _counted(answer), answer)

    # --- exchanges --------------------------------------------------------------------------

    def _declare_exchange(self, exchange: str, body: dict[str, Json], answer: Answer) -> None:
        session = self.session
        fields = _fields(
            body,
            {
                "type": "direct",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            },
            "exchange",
        )
        _prohibit_default(exchange)
        session.permit("configure", "exchange", exchange)
        vhost = session.node.broker.query_vhost(session.vhost)
        if vhost is None or exchange not in vhost.exchanges:
            _prohibit_cr_lf(exchange)
            if exchange.startswith("amq."):
                raise HttpError(
                    403,
                    f"exchange '{exchange}' in vhost '{session.vhost}' starts with reserved "
                    "prefix 'amq.'",
                )
        command = broker.DeclareExchange(
            channel=self._ref(),
            vhost=session.vhost,
            exchange=exchange,
            type=str(fields["type"]),
            passive=False,
            durable=bool(fields["durable"]),
            auto_delete=bool(fields["auto_delete"]),
            internal=bool(fields["internal"]),
            arguments=fields["arguments"],
        )
        self._propose(command, lambda _: answer(204, None), answer)

    def _delete_exchange(self, exchange: str, answer: Answer) -> None:
        _prohibit_cr_lf(exchange)
        _prohibit_default(exchange)
        if exchange.startswith("amq."):
            raise HttpError(
                403,
                f"exchange '{exchange}' in vhost '{self.session.vhost}' starts with reserved "
                "prefix 'amq.'",
            )
        self.session.permit("configure", "exchange", exchange)
        command = broker.DeleteExchange(
            channel=self._ref(), vhost=self.session.vhost, exchange=exchange, if_unused=False
        )
        self._propose(command, lambda _: answer(204, None), answer, missing_ok=True)

    # --- bindings ---------------------------------------------------------------------------

    def _bind(self, body: dict[str, Json], answer: Answer) -> None:
        for name in body:
            if name not in (
                "source",
                "destination_queue",
                "destination_exchange",
                "binding_key",
                "arguments",
            ):
                raise HttpError(400, f"bad binding field {name!r}")
        if "destination_queue" in body:
            kind, destination = "queue", str(body["destination_queue"])
        elif "destination_exchange" in body:
            kind, destination = "exchange", str(body["destination_exchange"])
        else:
            raise HttpError(400, "binding has no destination_queue or destination_exchange")
        source = str(body.get("source", ""))
        key = str(body.get("binding_key", ""))
        arguments = plain_table(body.get("arguments") or {})
        command = self._binding_command(True, source, kind, destination, key, arguments)
        self._propose(command, lambda _: answer(204, None), answer)

    def _unbind(self, segment: str, answer: Answer) -> None:
        fields: dict[str, str] = {}
        for part in segment.split(";"):
            name, equals, value = part.partition("=")
            if not equals or name not in ("src", "dstq", "dste", "key", "args"):
                raise HttpError(400, f"bad binding path segment '{segment}'")
            fields[name] = value if name == "args" else _unquote(value)
        if "src" not in fields or ("dstq" in fields) == ("dste" in fields):
            raise HttpError(400, f"bad binding path segment '{segment}'")
        kind = "queue" if "dstq" in fields else "exchange"
        destination = fields.get("dstq", fields.get("dste", ""))
        key, wanted = fields.get("key", ""), fields.get("args", "")
        source = fields["src"]
        match = [
            binding
            for binding in self._bindings(source, kind, destination)
            if binding.routing_key == key and binding_arguments_hash(binding.arguments) == wanted
        ]
        self._binding_checks(source, kind, destination)
        if not match:
            answer(204, None)  # RabbitMQ answers 204 when nothing matched too
            return
        command = self._binding_command(
            False, source, kind, destination, key, dict(match[0].arguments)
        )
        self._propose(command, lambda _: answer(204, None), answer, missing_ok=True)

    def _list_bindings(self, query: dict[str, list[str]], answer: Answer) -> None:
        if "src" not in query or "key" not in query:
            raise HttpError(400, f"missing 'src' or 'key' in query: {query}")
        if "dste" in query:
            kind, destination = "exchange", query["dste"][0]
        elif "dstq" in query:
            kind, destination = "queue", query["dstq"][0]
        else:
            raise HttpError(400, f"missing 'dste' or 'dstq' in query: {query}")
        source, key = query["src"][0], query["key"][0]
        self._binding_checks(source, kind, destination)
        found = []
        for binding in self._bindings(source, kind, destination):
            if binding.routing_key != key:
                continue
            location = (
                f"/bindings/src={_quote(source)};dst{kind[0]}={_quote(destination)};"
                f"key={_quote(key)};args={binding_arguments_hash(binding.arguments)}"
            )
            found.append(
                {
                    "source": source,
                    f"destination_{kind}": destination,
                    "binding_key": key,
                    "arguments": dict(binding.arguments),
                    "location": location,
                }
            )
        answer(200, found)

    def _bindings(self, source: str, kind: str, destination: str) -> list[BindingView]:
        vhost = self.session.node.broker.query_vhost(self.session.vhost)
        exchange = vhost.exchanges.get(source) if vhost is not None else None
        if exchange is None:
            return []
        return [
            binding
            for binding in exchange.bindings
            if binding.destination_kind == kind and binding.destination == destination
        ]

    def _binding_checks(self, source: str, kind: str, destination: str) -> None:
        for name in (source, destination):
            _prohibit_cr_lf(name)
        if source == "" or (kind == "exchange" and destination == ""):
            raise HttpError(403, "operation not permitted on the default exchange")
        self.session.permit("write", kind, destination)
        self.session.permit("read", "exchange", source)

    def _binding_command(
        self,
        bind: bool,
        source: str,
        kind: str,
        destination: str,
        key: str,
        arguments: dict[str, Json],
    ) -> broker.Command:
        self._binding_checks(source, kind, destination)
        ref, vhost = self._ref(), self.session.vhost
        if kind == "queue":
            return (broker.BindQueue if bind else broker.UnbindQueue)(
                channel=ref,
                vhost=vhost,
                queue=destination,
                exchange=source,
                routing_key=key,
                arguments=arguments,
            )
        return (broker.BindExchange if bind else broker.UnbindExchange)(
            channel=ref,
            vhost=vhost,
            destination=destination,
            source=source,
            routing_key=key,
            arguments=arguments,
        )

    # --- through the log ----------------------------------------------------------------------

    def _ref(self) -> broker.ChannelRef:
        assert self.conversation is not None
        return self.conversation.ref

    def _propose(
        self,
        command: broker.Command,
        on_reply: typing.Callable[[Reply], None],
        answer: Answer,
        missing_ok: bool = False,
    ) -> None:
        """Through the log; a refusal becomes RabbitMQ's status for it, not a closed link."""
        session = self.session

        def reply(result: Reply) -> None:
            if isinstance(result, Ignored):
                return  # this node's incarnation is gone: its connections are closing
            if isinstance(result, Refused):
                code = ReplyCode(result.reply_code)
                if missing_ok and code == ReplyCode.NOT_FOUND:
                    answer(204, None)
                else:
                    answer(_STATUS.get(code, 400), result.reply_text)
            else:
                on_reply(result)
            session.protocol.flush_soon()

        session.node.log.propose(command, reply)


_STATUS = {
    ReplyCode.PRECONDITION_FAILED: 409,
    ReplyCode.ACCESS_REFUSED: 403,
    ReplyCode.NOT_FOUND: 404,
}


def _counted(answer: Answer) -> typing.Callable[[Reply], None]:
    def on_reply(result: Reply) -> None:
        assert isinstance(result, MessageCount)
        answer(200, {"message_count": ulong(result.message_count)})

    return on_reply


def binding_arguments_hash(arguments: typing.Mapping[str, Json]) -> str:
    """The `args` part of a binding's path: empty for no arguments (as RabbitMQ's), else a
    digest of them (RabbitMQ's own is Erlang's phash2; clients only echo it)."""
    if not arguments:
        return ""
    digest = hashlib.sha256(orjson.dumps(dict(arguments), option=orjson.OPT_SORT_KEYS)).digest()
    return base64.urlsafe_b64encode(digest[:4]).decode().rstrip("=")


def _map(body: Json) -> dict[str, Json]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise HttpError(400, f"the request body is not a map: {body!r}")
    return {str(key): value for key, value in body.items()}


def _fields(body: dict[str, Json], defaults: dict[str, Json], what: str) -> dict[str, Json]:
    found = dict(defaults)
    for name, value in body.items():
        if name not in defaults:
            raise HttpError(400, f"bad {what} property {name!r}")
        if isinstance(defaults[name], bool) and not isinstance(value, bool):
            raise HttpError(400, f"bad {what} property {name!r}")
        found[name] = plain_table(value) if name == "arguments" else value
    return found


def _prohibit_cr_lf(name: str) -> None:
    if "\n" in name or "\r" in name:
        raise HttpError(
            400, f"Bad name '{name}': line feed and carriage return characters not allowed"
        )


def _prohibit_default(exchange: str) -> None:
    if exchange == "":
        raise HttpError(403, "operation not permitted on the default exchange")


def _unquote(segment: str) -> str:
    return urllib.parse.unquote(segment)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")
