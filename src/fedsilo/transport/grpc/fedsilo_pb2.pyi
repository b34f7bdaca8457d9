from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("protocol", "task_sha256")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    TASK_SHA256_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    task_sha256: str
    def __init__(self, protocol: _Optional[int] = ..., task_sha256: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("welcome", "assignment", "ping", "done", "cancel")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignment: Assignment
    ping: Ping
    done: Done
    cancel: Cancel
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("experiment", "heartbeat_s", "server_time", "chunk_bytes")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    heartbeat_s: float
    server_time: float
    chunk_bytes: int
    def __init__(self, experiment: _Optional[str] = ..., heartbeat_s: _Optional[float] = ..., server_time: _Optional[float] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("assignment_id", "kind", "round", "config_json", "model_id", "model_bytes", "model_sha256", "max_upload_bytes", "step")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    kind: str
    round: int
    config_json: str
    model_id: str
    model_bytes: int
    model_sha256: str
    max_upload_bytes: int
    step: str
    def __init__(self, assignment_id: _Optional[str] = ..., kind: _Optional[str] = ..., round: _Optional[int] = ..., config_json: _Optional[str] = ..., model_id: _Optional[str] = ..., model_bytes: _Optional[int] = ..., model_sha256: _Optional[str] = ..., max_upload_bytes: _Optional[int] = ..., step: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("server_time",)
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    server_time: float
    def __init__(self, server_time: _Optional[float] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("reason", "error")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    reason: str
    error: bool
    def __init__(self, reason: _Optional[str] = ..., error: _Optional[bool] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("assignment_id", "reason")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    reason: str
    def __init__(self, assignment_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("model_id", "offset")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    offset: int
    def __init__(self, model_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("assignment_id", "total_bytes", "sha256", "offset")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    total_bytes: int
    sha256: str
    offset: int
    def __init__(self, assignment_id: _Optional[str] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class UploadPart(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadAck(_message.Message):
    __slots__ = ("received", "complete")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    received: int
    complete: bool
    def __init__(self, received: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class AssignmentRef(_message.Message):
    __slots__ = ("assignment_id",)
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    def __init__(self, assignment_id: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("assignment_id", "num_examples", "loss", "metrics_json", "failure")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    num_examples: int
    loss: float
    metrics_json: str
    failure: str
    def __init__(self, assignment_id: _Optional[str] = ..., num_examples: _Optional[int] = ..., loss: _Optional[float] = ..., metrics_json: _Optional[str] = ..., failure: _Optional[str] = ...) -> None: ...

class SubmitAck(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("experiment", "server_time", "peer", "protocol")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    server_time: float
    peer: str
    protocol: int
    def __init__(self, experiment: _Optional[str] = ..., server_time: _Optional[float] = ..., peer: _Optional[str] = ..., protocol: _Optional[int] = ...) -> None: ...
