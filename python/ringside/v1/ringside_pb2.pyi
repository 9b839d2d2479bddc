from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LossReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_REASON_UNSPECIFIED: _ClassVar[LossReason]
    LOSS_REASON_LAPPED: _ClassVar[LossReason]
    LOSS_REASON_ABANDONED: _ClassVar[LossReason]
    LOSS_REASON_CORRUPT: _ClassVar[LossReason]
LOSS_REASON_UNSPECIFIED: LossReason
LOSS_REASON_LAPPED: LossReason
LOSS_REASON_ABANDONED: LossReason
LOSS_REASON_CORRUPT: LossReason

class SubscribeRequest(_message.Message):
    __slots__ = ("earliest", "latest", "sequence", "timestamp_ns", "topics", "topic_prefixes", "max_batch_frames", "max_batch_bytes")
    EARLIEST_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    earliest: bool
    latest: bool
    sequence: int
    timestamp_ns: int
    topics: _containers.RepeatedScalarFieldContainer[str]
    topic_prefixes: _containers.RepeatedScalarFieldContainer[str]
    max_batch_frames: int
    max_batch_bytes: int
    def __init__(self, earliest: _Optional[bool] = ..., latest: _Optional[bool] = ..., sequence: _Optional[int] = ..., timestamp_ns: _Optional[int] = ..., topics: _Optional[_Iterable[str]] = ..., topic_prefixes: _Optional[_Iterable[str]] = ..., max_batch_frames: _Optional[int] = ..., max_batch_bytes: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("ring_id", "frames", "losses", "resume_seq", "from_seq", "filtered", "discarded", "filler")
    RING_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    RESUME_SEQ_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    DISCARDED_FIELD_NUMBER: _ClassVar[int]
    FILLER_FIELD_NUMBER: _ClassVar[int]
    ring_id: int
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    losses: _containers.RepeatedCompositeFieldContainer[Loss]
    resume_seq: int
    from_seq: int
    filtered: int
    discarded: int
    filler: bytes
    def __init__(self, ring_id: _Optional[int] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., losses: _Optional[_Iterable[_Union[Loss, _Mapping]]] = ..., resume_seq: _Optional[int] = ..., from_seq: _Optional[int] = ..., filtered: _Optional[int] = ..., discarded: _Optional[int] = ..., filler: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("seq", "timestamp_ns", "topic", "producer_id", "payload")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    seq: int
    timestamp_ns: int
    topic: str
    producer_id: int
    payload: bytes
    def __init__(self, seq: _Optional[int] = ..., timestamp_ns: _Optional[int] = ..., topic: _Optional[str] = ..., producer_id: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class Loss(_message.Message):
    __slots__ = ("reason", "frames", "first_seq")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    reason: LossReason
    frames: int
    first_seq: int
    def __init__(self, reason: _Optional[_Union[LossReason, str]] = ..., frames: _Optional[int] = ..., first_seq: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("version", "ring_id", "ring_capacity_bytes", "max_payload_bytes", "ring_adopted", "oldest_seq", "oldest_timestamp_ns", "newest_seq", "next_seq", "write_position", "ingest_frames_per_sec", "ingest_bytes_per_sec", "retention_seconds", "producers_connected", "producers_admitted", "producers_refused", "subscribers_active", "subscribers_max", "subscribers_refused", "frames_out", "bytes_out", "lost_lapped", "lost_abandoned", "lost_corrupt", "memory_budget_bytes", "memory_limit_bytes", "uptime_seconds", "subscribers_reaped", "rss_anon_bytes", "subscribers", "retained_span_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RING_ID_FIELD_NUMBER: _ClassVar[int]
    RING_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    RING_ADOPTED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    OLDEST_TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    NEWEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    WRITE_POSITION_FIELD_NUMBER: _ClassVar[int]
    INGEST_FRAMES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    INGEST_BYTES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRODUCERS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    PRODUCERS_ADMITTED_FIELD_NUMBER: _ClassVar[int]
    PRODUCERS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_MAX_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    LOST_LAPPED_FIELD_NUMBER: _ClassVar[int]
    LOST_ABANDONED_FIELD_NUMBER: _ClassVar[int]
    LOST_CORRUPT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_REAPED_FIELD_NUMBER: _ClassVar[int]
    RSS_ANON_BYTES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    RETAINED_SPAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    ring_id: int
    ring_capacity_bytes: int
    max_payload_bytes: int
    ring_adopted: bool
    oldest_seq: int
    oldest_timestamp_ns: int
    newest_seq: int
    next_seq: int
    write_position: int
    ingest_frames_per_sec: float
    ingest_bytes_per_sec: float
    retention_seconds: float
    producers_connected: int
    producers_admitted: int
    producers_refused: int
    subscribers_active: int
    subscribers_max: int
    subscribers_refused: int
    frames_out: int
    bytes_out: int
    lost_lapped: int
    lost_abandoned: int
    lost_corrupt: int
    memory_budget_bytes: int
    memory_limit_bytes: int
    uptime_seconds: float
    subscribers_reaped: int
    rss_anon_bytes: int
    subscribers: _containers.RepeatedCompositeFieldContainer[SubscriberInfo]
    retained_span_seconds: float
    def __init__(self, version: _Optional[str] = ..., ring_id: _Optional[int] = ..., ring_capacity_bytes: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., ring_adopted: _Optional[bool] = ..., oldest_seq: _Optional[int] = ..., oldest_timestamp_ns: _Optional[int] = ..., newest_seq: _Optional[int] = ..., next_seq: _Optional[int] = ..., write_position: _Optional[int] = ..., ingest_frames_per_sec: _Optional[float] = ..., ingest_bytes_per_sec: _Optional[float] = ..., retention_seconds: _Optional[float] = ..., producers_connected: _Optional[int] = ..., producers_admitted: _Optional[int] = ..., producers_refused: _Optional[int] = ..., subscribers_active: _Optional[int] = ..., subscribers_max: _Optional[int] = ..., subscribers_refused: _Optional[int] = ..., frames_out: _Optional[int] = ..., bytes_out: _Optional[int] = ..., lost_lapped: _Optional[int] = ..., lost_abandoned: _Optional[int] = ..., lost_corrupt: _Optional[int] = ..., memory_budget_bytes: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., subscribers_reaped: _Optional[int] = ..., rss_anon_bytes: _Optional[int] = ..., subscribers: _Optional[_Iterable[_Union[SubscriberInfo, _Mapping]]] = ..., retained_span_seconds: _Optional[float] = ...) -> None: ...

class SubscriberInfo(_message.Message):
    __slots__ = ("slot", "lag_bytes", "frames_out")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LAG_BYTES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_OUT_FIELD_NUMBER: _ClassVar[int]
    slot: int
    lag_bytes: int
    frames_out: int
    def __init__(self, slot: _Optional[int] = ..., lag_bytes: _Optional[int] = ..., frames_out: _Optional[int] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopicInfo(_message.Message):
    __slots__ = ("name", "frames", "payload_bytes", "last_timestamp_ns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    name: str
    frames: int
    payload_bytes: int
    last_timestamp_ns: int
    def __init__(self, name: _Optional[str] = ..., frames: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., last_timestamp_ns: _Optional[int] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics", "truncated", "frames_seen", "frames_not_counted")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SEEN_FIELD_NUMBER: _ClassVar[int]
    FRAMES_NOT_COUNTED_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[TopicInfo]
    truncated: bool
    frames_seen: int
    frames_not_counted: int
    def __init__(self, topics: _Optional[_Iterable[_Union[TopicInfo, _Mapping]]] = ..., truncated: _Optional[bool] = ..., frames_seen: _Optional[int] = ..., frames_not_counted: _Optional[int] = ...) -> None: ...
