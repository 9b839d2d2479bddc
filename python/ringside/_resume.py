"""What a subscription yields, and the resume bookkeeping shared by the blocking
(`ringside.subscribe`) and asyncio (`ringside.aio.subscribe`) subscribers.

Nothing here does I/O: `Cursor` turns `Info` answers and `Batch` messages into the values
a subscriber yields and into the next `SubscribeRequest`, so both drivers resume the same
way.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

from ringside._native import RingsideError
from ringside.v1 import ringside_pb2 as pb

__all__ = [
    "Frame",
    "Loss",
    "LossReason",
    "Gap",
    "RingReplaced",
    "Timestamp",
    "Item",
    "Start",
    "SubscribeError",
]


@dataclass(frozen=True, slots=True)
class Frame:
    """One telemetry frame, exactly as a producer wrote it."""

    seq: int
    """Ring sequence number."""
    timestamp_ns: int
    """The producer's timestamp, nanoseconds since the Unix epoch."""
    topic: str
    producer_id: int
    """Id the sidecar gave the producer process (its pid)."""
    payload: bytes
    ring_id: int
    """The ring `seq` belongs to: persist `(ring_id, seq + 1)` to resume later."""


class LossReason(enum.Enum):
    """Why frames were lost (proto `LossReason`)."""

    UNSPECIFIED = 0
    LAPPED = 1
    """The subscriber fell more than a ring behind; the frames were overwritten."""
    ABANDONED = 2
    """A producer claimed the frame and died (or stalled) before committing it."""
    CORRUPT = 3
    """The frame failed validation."""


@dataclass(frozen=True, slots=True)
class Loss:
    """`frames` consecutive sequence numbers from `first_seq` that will never arrive."""

    reason: LossReason
    first_seq: int
    frames: int
    ring_id: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers the sidecar passed over without a frame or a loss: frames their
    producer discarded (an exception in `reserve`) or frames the topic filter excluded.
    Yielded only with `report_gaps=True`: with it, every sequence number of the ring is
    accounted for exactly once, as a `Frame`, a `Loss` or a `Gap`."""

    first_seq: int
    frames: int
    ring_id: int


@dataclass(frozen=True, slots=True)
class RingReplaced:
    """The sidecar serves a different ring than before (it restarted and no producer
    handed the old ring back, so sequence numbers restart). What the old ring held after
    the last value you received is gone; the subscription continues from the first frame
    of the new ring."""

    old_ring_id: int
    new_ring_id: int


@dataclass(frozen=True, slots=True)
class Timestamp:
    """`start=Timestamp(ns)`: begin with the first frame stamped at or after `ns`."""

    ns: int


Item = Union[Frame, Loss, Gap, RingReplaced]
Start = Union[str, int, Timestamp]


class SubscribeError(RingsideError):
    """The sidecar refused the subscription for a reason retrying cannot fix (bad filters,
    missing or wrong token, ...). `code` is the `grpc.StatusCode`, `details` its text."""

    def __init__(self, code, details: str):
        super().__init__(f"{details} ({code.name if hasattr(code, 'name') else code})")
        self.code = code
        self.details = details


def _check_u64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{name} {value} is out of range: it must be from 0 to 2**64-1")
    return value


def parse_start(start: Start) -> Start:
    """Validates `start`: "earliest", "latest", a sequence number (int) or a Timestamp."""
    if isinstance(start, str):
        if start not in ("earliest", "latest"):
            raise ValueError(
                f"start={start!r} is not understood: use 'earliest', 'latest', a sequence "
                "number (int) or ringside.Timestamp(ns)"
            )
        return start
    if isinstance(start, Timestamp):
        _check_u64("Timestamp.ns", start.ns)
        return start
    if isinstance(start, int) and not isinstance(start, bool):
        return _check_u64("start sequence", start)
    raise TypeError(
        f"start must be 'earliest', 'latest', an int sequence or ringside.Timestamp, "
        f"not {type(start).__name__}"
    )


def _names(kind: str, values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{kind} must be a list of strings, not one string (write [{values!r}])")
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{kind} must hold strings, not {type(v).__name__}")
    return out


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling from
    `initial` up to `maximum`; `reset()` after progress."""

    def __init__(self, initial: float, maximum: float):
        if not 0 < initial <= maximum:
            raise ValueError(
                f"backoff must satisfy 0 < initial_backoff ({initial}) <= max_backoff ({maximum})"
            )
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        d = self._next
        self._next = min(self._next * 2, self.maximum)
        return d / 2 + random.random() * d / 2


# Bytes a batch holds besides one frame's topic and payload (batch header, one loss,
# frame fields, trailer), rounded up; the sidecar's bound is smaller
# (sidecar/src/batch.rs, min_batch_bytes).
BATCH_OVERHEAD = 1024
MAX_TOPIC_LEN = 255


def receive_limit(max_batch_bytes: int, max_payload: Optional[int]) -> int:
    """The largest message the sidecar can send for this subscription: the batch bound it
    was asked for, or one maximum-size frame when that is larger (the sidecar clamps the
    bound up to one frame)."""
    one_frame = (max_payload or 0) + MAX_TOPIC_LEN + BATCH_OVERHEAD
    return max(max_batch_bytes, one_frame)


class Cursor:
    """Where the subscription stands, and what it yields for each message.

    The resume rule (proto/ringside/v1/ringside.proto): after processing a batch, resume
    from its `resume_seq`. Before the first batch, "earliest" and "latest" are resolved to
    sequence numbers with an `Info` call, so even a reconnect before any batch is exact.
    """

    def __init__(
        self,
        start: Start,
        *,
        ring_id: Optional[int],
        topics: Sequence[str],
        prefixes: Sequence[str],
        max_batch_bytes: int,
        max_batch_frames: int,
        report_gaps: bool,
    ):
        self.start = parse_start(start)
        self.ring_id = None if ring_id is None else _check_u64("ring_id", ring_id)
        if self.ring_id is not None and isinstance(self.start, str):
            raise ValueError("ring_id= goes with a sequence start (an int): it pins which ring it counts in")
        self.topics = _names("topics", topics)
        self.prefixes = _names("prefixes", prefixes)
        if not isinstance(max_batch_bytes, int) or not 0 < max_batch_bytes < 1 << 32:
            raise ValueError(
                f"max_batch_bytes={max_batch_bytes!r} must be from 1 to 2**32-1 (it bounds the "
                "memory one message takes)"
            )
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_frames = _check_u64("max_batch_frames", max_batch_frames)
        if self.max_batch_frames >= 1 << 32:
            raise ValueError("max_batch_frames must be below 2**32")
        self.report_gaps = report_gaps
        # The next sequence to ask for; None while the start is a timestamp not yet reached.
        self.resume_seq: Optional[int] = self.start if isinstance(self.start, int) else None
        # The next sequence we expect to account for (for gaps); None until known.
        self._expected: Optional[int] = self.resume_seq
        # A sequence start resolved by us (from Info): a refusal of it may be a race with a
        # ring replacement rather than the caller's mistake.
        self.derived = False
        self.max_payload: Optional[int] = None

    # -- before each Subscribe call ------------------------------------------------------

    def on_info(self, info) -> list[Item]:
        """Takes the sidecar's `InfoResponse` before subscribing; returns what to yield
        (a `RingReplaced` when the ring changed)."""
        self.max_payload = info.max_payload_bytes
        out: list[Item] = []
        if self.ring_id is not None and info.ring_id != self.ring_id:
            out.append(self._replace(info.ring_id))
        elif self.resume_seq is None and self.start in ("earliest", "latest"):
            self.ring_id = info.ring_id
            if self.start == "latest":
                self.resume_seq = info.next_seq
            else:
                self.resume_seq = info.oldest_seq if info.HasField("oldest_seq") else info.next_seq
            self._expected = self.resume_seq
            self.derived = True
        return out

    def _replace(self, new_ring_id: int) -> RingReplaced:
        item = RingReplaced(old_ring_id=self.ring_id or 0, new_ring_id=new_ring_id)
        self.ring_id = new_ring_id
        # From the first frame of the new ring; what is no longer retained is reported as
        # lapped by the sidecar.
        self.resume_seq = 0
        self._expected = 0
        self.derived = True
        return item

    def request(self):
        """The `SubscribeRequest` for the next connection."""
        req = pb.SubscribeRequest(
            topics=self.topics,
            topic_prefixes=self.prefixes,
            max_batch_bytes=self.max_batch_bytes,
            max_batch_frames=self.max_batch_frames,
        )
        if self.resume_seq is not None:
            req.sequence = self.resume_seq
        elif isinstance(self.start, Timestamp):
            req.timestamp_ns = self.start.ns
        elif self.start == "latest":
            req.latest = True
        else:
            req.earliest = True
        return req

    def receive_limit(self) -> int:
        return receive_limit(self.max_batch_bytes, self.max_payload)

    # -- each Batch ----------------------------------------------------------------------

    def on_batch(self, batch) -> tuple[list[Item], bool]:
        """Returns the values to yield for `batch`, and whether the stream must be
        restarted (the first batch came from a replaced ring)."""
        if self.ring_id is None:
            self.ring_id = batch.ring_id
        elif batch.ring_id != self.ring_id:
            # The ring changed between Info and Subscribe: what this stream would deliver
            # is counted in the wrong ring. Drop it and start over from the new ring.
            return [self._replace(batch.ring_id)], True
        ring_id = self.ring_id
        out: list[Item] = []
        for loss in batch.losses:
            self._gap_to(loss.first_seq, out)
            out.append(
                Loss(
                    reason=_reason(loss.reason),
                    first_seq=loss.first_seq,
                    frames=loss.frames,
                    ring_id=ring_id,
                )
            )
            self._advance(loss.first_seq + loss.frames)
        for f in batch.frames:
            self._gap_to(f.seq, out)
            out.append(
                Frame(
                    seq=f.seq,
                    timestamp_ns=f.timestamp_ns,
                    topic=f.topic,
                    producer_id=f.producer_id,
                    payload=f.payload,
                    ring_id=ring_id,
                )
            )
            self._advance(f.seq + 1)
        self._gap_to(batch.resume_seq, out)
        self.resume_seq = batch.resume_seq
        self._advance(batch.resume_seq)
        return out, False

    def _gap_to(self, seq: int, out: list[Item]) -> None:
        if self._expected is not None and seq > self._expected:
            if self.report_gaps:
                out.append(Gap(first_seq=self._expected, frames=seq - self._expected, ring_id=self.ring_id or 0))
            self._expected = seq

    def _advance(self, seq: int) -> None:
        if self._expected is None or seq > self._expected:
            self._expected = seq


def _reason(value: int) -> LossReason:
    try:
        return LossReason(value)
    except ValueError:
        return LossReason.UNSPECIFIED


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """`http://host:port`, `https://host:port` or `host:port` -> (target, tls)."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError(f"endpoint {endpoint!r} must be a string like http://127.0.0.1:50051")
    if endpoint.startswith("https://"):
        return endpoint[len("https://"):].rstrip("/"), True
    if endpoint.startswith("http://"):
        return endpoint[len("http://"):].rstrip("/"), False
    if "://" in endpoint:
        raise ValueError(f"endpoint {endpoint!r}: only http:// and https:// are supported")
    return endpoint, False
