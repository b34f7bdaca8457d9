"""The service's method handlers: every request parsed leniently, every handler guarded.

A request that is not a valid message is refused as INVALID_ARGUMENT naming the message (gRPC's own
parse failure would be INTERNAL "Exception deserializing request!"). A handler refuses a request
by raising :class:`Refused` (a status and one line for the client); any other exception is a fault
of the server's: the client gets INTERNAL with a fixed line, the server's log gets the exception,
and the exception's text never reaches a client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from fedsilo.transport.grpc import fedsilo_pb2 as pb

SERVICE = "fedsilo.v1.Orchestrator"
INTERNAL = "the server could not handle this request (its log says why); try again, or report it"
Log = Callable[[str], None]


class Refused(Exception):  # noqa: N818 - a refusal, not an error of the server's
    """A request the server refuses: the status and the one line the client gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Malformed:
    """What a request that does not parse becomes (the handler refuses it before looking at it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def refused(self) -> Refused:
        return Refused(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {self.name} message")


def _parser(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception:  # DecodeError, or RecursionError for messages nested without end
            return Malformed(cls.__name__)

    return parse


def _checked(request: Any) -> Any:
    if isinstance(request, Malformed):
        raise request.refused()
    return request


def _parts(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _checked(request)


def _fail(context: grpc.ServicerContext, exc: Exception, rpc: str, log: Log) -> None:
    """End the call for ``exc``: a refusal as its status, anything else as INTERNAL (and logged)."""
    if isinstance(exc, grpc.RpcError):  # the call was cancelled under the handler: nothing to tell
        raise exc
    if isinstance(exc, Refused):
        context.abort(exc.code, exc.message)
    log(f"internal error in {rpc} (from {context.peer()}): {type(exc).__name__}: {' '.join(str(exc).split())}")
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL)


def _unary(fn: Callable[..., Any], rpc: str, log: Log, stream_in: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(_parts(request) if stream_in else _checked(request), context)
        except Exception as exc:
            _fail(context, exc, rpc, log)

    return handle


def _streaming(fn: Callable[..., Iterator[Any]], rpc: str, log: Log) -> Callable[..., Iterator[Any]]:
    @functools.wraps(fn)
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(_checked(request), context)
        except Exception as exc:
            _fail(context, exc, rpc, log)

    return handle


def add_to_server(servicer: Any, server: grpc.Server, log: Log) -> None:
    """Serve ``servicer``'s RPCs on ``server``, parsed and guarded as above."""
    out = {"response_serializer": lambda message: message.SerializeToString()}
    handlers = {
        "Session": grpc.unary_stream_rpc_method_handler(
            _streaming(servicer.Session, "Session", log), request_deserializer=_parser(pb.Hello), **out
        ),
        "Download": grpc.unary_stream_rpc_method_handler(
            _streaming(servicer.Download, "Download", log), request_deserializer=_parser(pb.DownloadRequest), **out
        ),
        "Upload": grpc.stream_unary_rpc_method_handler(
            _unary(servicer.Upload, "Upload", log, True), request_deserializer=_parser(pb.UploadPart), **out
        ),
        "UploadStatus": grpc.unary_unary_rpc_method_handler(
            _unary(servicer.UploadStatus, "UploadStatus", log, False),
            request_deserializer=_parser(pb.AssignmentRef),
            **out,
        ),
        "Submit": grpc.unary_unary_rpc_method_handler(
            _unary(servicer.Submit, "Submit", log, False), request_deserializer=_parser(pb.Result), **out
        ),
        "Probe": grpc.unary_unary_rpc_method_handler(
            _unary(servicer.Probe, "Probe", log, False), request_deserializer=_parser(pb.ProbeRequest), **out
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
