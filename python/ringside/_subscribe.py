"""`ringside.subscribe`: a blocking subscriber over grpcio that does the resume loop itself."""

from __future__ import annotations

import collections
import threading
from typing import Iterator, Optional, Sequence

import grpc

from ringside._resume import (
    Backoff,
    Cursor,
    Frame,
    Gap,
    Item,
    Loss,
    Start,
    SubscribeError,
    parse_endpoint,
)
from ringside.v1 import ringside_pb2 as pb
from ringside.v1 import ringside_pb2_grpc as pb_grpc

# Status codes retrying cannot fix: the request or the credentials are wrong.
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
    }
)

DEFAULT_MAX_BATCH_BYTES = 256 * 1024


def channel_options(receive_limit: int, extra: Sequence[tuple]) -> list[tuple]:
    """gRPC channel options: the receive bound, keepalive (so a dead peer is noticed
    within about 30 s even without traffic), then the caller's."""
    return [
        ("grpc.max_receive_message_length", receive_limit),
        ("grpc.max_send_message_length", 64 * 1024),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # A separate channel per subscription: no sharing of a subchannel with others.
        ("grpc.use_local_subchannel_pool", 1),
        *extra,
    ]


def auth_metadata(token: Optional[str]) -> tuple:
    if token is None:
        return ()
    if not isinstance(token, str) or not token or "\n" in token:
        raise ValueError("token must be a non-empty string without newlines")
    return (("authorization", f"Bearer {token}"),)


class Subscription:
    """An iterator over a sidecar's frames (`Frame`), losses (`Loss`) and, on request,
    gaps (`Gap`) and ring replacements (`RingReplaced`), that reconnects by itself.

    Created by `ringside.subscribe`. Stop it with `close()`, by leaving its `with` block,
    or by dropping it; `close()` may be called from another thread and wakes a blocked
    iteration, which then ends.

    `resume_seq` and `ring_id` say where it stands: store them to resume in a later
    process with `subscribe(..., start=resume_seq, ring_id=ring_id)`.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        start: Start = "earliest",
        topics: Sequence[str] = (),
        prefixes: Sequence[str] = (),
        token: Optional[str] = None,
        ring_id: Optional[int] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_batch_frames: int = 0,
        report_gaps: bool = False,
        connect_timeout: float = 5.0,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
        extra_channel_options: Sequence[tuple] = (),
    ):
        self._target, tls = parse_endpoint(endpoint)
        if tls and credentials is None:
            credentials = grpc.ssl_channel_credentials()
        self._credentials = credentials
        self._metadata = auth_metadata(token)
        self._cursor = Cursor(
            start,
            ring_id=ring_id,
            topics=topics,
            prefixes=prefixes,
            max_batch_bytes=max_batch_bytes,
            max_batch_frames=max_batch_frames,
            report_gaps=report_gaps,
        )
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive seconds, not {connect_timeout!r}")
        self._connect_timeout = connect_timeout
        self._backoff = Backoff(initial_backoff, max_backoff)
        self._extra = tuple(extra_channel_options)
        # Values of the batch being handed out: at most one batch, bounded by the receive
        # limit in bytes.
        self._pending: collections.deque[Item] = collections.deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._channel: Optional[grpc.Channel] = None
        self._channel_limit = 0
        self._call = None
        self._retried_invalid = False
        self.reconnects = 0
        """Streams (re)opened after the first."""
        self.last_error: Optional[str] = None
        """The last reason the stream ended or could not be opened."""
        self._streams = 0

    # -- public state ----------------------------------------------------------------------

    @property
    def resume_seq(self) -> Optional[int]:
        """The sequence to resume from after the values yielded so far (None before the
        start is known)."""
        return self._cursor.resume_seq if not self._pending else self._pending_resume()

    @property
    def ring_id(self) -> Optional[int]:
        return self._cursor.ring_id

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _pending_resume(self) -> Optional[int]:
        # Mid-batch: the first value not yet handed out marks the resume point.
        item = self._pending[0]
        if isinstance(item, Frame):
            return item.seq
        if isinstance(item, (Loss, Gap)):
            return item.first_seq
        return self._cursor.resume_seq

    # -- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        while not self._pending:
            if self._stop.is_set():
                raise StopIteration
            self._fill()
        return self._pending.popleft()

    def _fill(self) -> None:
        """Reads the next batch into `_pending`, (re)connecting as needed."""
        call = self._call
        if call is None:
            call = self._open()
            if call is None:
                return
        try:
            batch = next(call)
        except StopIteration:
            self._ended("the sidecar ended the stream")
            return
        except grpc.RpcError as err:
            self._failed(err)
            return
        items, restart = self._cursor.on_batch(batch)
        self._backoff.reset()
        self._retried_invalid = False
        self._pending.extend(items)
        if restart:
            self._drop_call()

    def _open(self):
        """Info, then Subscribe; returns the call, or None after a failure (backoff done)."""
        if self._streams > 0:
            self._wait(self._backoff.next_delay())
            if self._stop.is_set():
                return None
        try:
            channel = self._channel_for(self._cursor.receive_limit())
            if channel is None:
                return None
            info = pb_grpc.RingsideStub(channel).Info(
                pb.InfoRequest(), timeout=self._connect_timeout, metadata=self._metadata
            )
            self._pending.extend(self._cursor.on_info(info))
            # The ring's max frame is known now: the receive limit may have to grow.
            channel = self._channel_for(self._cursor.receive_limit())
            if channel is None:
                return None
            call = pb_grpc.RingsideStub(channel).Subscribe(
                self._cursor.request(), metadata=self._metadata
            )
        except grpc.RpcError as err:
            self._streams += 1
            self._failed(err)
            return None
        except ValueError:
            # grpcio refuses calls on a channel that close() closed meanwhile.
            if self._stop.is_set():
                return None
            raise
        with self._lock:
            if self._stop.is_set():
                call.cancel()
                return None
            self._call = call
        if self._streams > 0:
            self.reconnects += 1
        self._streams += 1
        return call

    def _channel_for(self, limit: int) -> Optional[grpc.Channel]:
        """A channel whose receive limit is at least `limit` (None once closed)."""
        with self._lock:
            if self._channel is not None and self._channel_limit >= limit:
                return self._channel
            old, self._channel = self._channel, None
        if old is not None:
            old.close()
        opts = channel_options(limit, self._extra)
        if self._credentials is not None:
            channel = grpc.secure_channel(self._target, self._credentials, options=opts)
        else:
            channel = grpc.insecure_channel(self._target, options=opts)
        with self._lock:
            if self._stop.is_set():
                channel.close()
                return None
            self._channel, self._channel_limit = channel, limit
        return channel

    def _failed(self, err: grpc.RpcError) -> None:
        self._drop_call()
        if self._stop.is_set():
            return
        code = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else None) or str(err)
        self.last_error = f"{getattr(code, 'name', code)}: {details}"
        if code in PERMANENT:
            if (
                code == grpc.StatusCode.INVALID_ARGUMENT
                and self._cursor.derived
                and not self._retried_invalid
            ):
                # A sequence we derived was refused: the ring may have been replaced
                # between our Info and Subscribe. Look again once before giving up.
                self._retried_invalid = True
                return
            self.close()
            raise SubscribeError(code, details) from None

    def _ended(self, reason: str) -> None:
        self.last_error = reason
        self._drop_call()

    def _drop_call(self) -> None:
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- stopping --------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the subscription: cancels the stream and closes the channel. Safe to call
        more than once and from another thread (a blocked iteration then ends)."""
        self._stop.set()
        with self._lock:
            call, self._call = self._call, None
            channel, self._channel = self._channel, None
        if call is not None:
            call.cancel()
        if channel is not None:
            channel.close()
        self._pending.clear()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: grpc may be half torn down
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<ringside.Subscription {self._target} {state} ring_id={self.ring_id} "
            f"resume_seq={self.resume_seq} reconnects={self.reconnects}>"
        )


def subscribe(endpoint: str, **kwargs) -> Subscription:
    """Subscribes to a ringside sidecar; returns an iterator of `Frame` and `Loss` values
    (and `Gap` with `report_gaps=True`, and `RingReplaced`) that reconnects and resumes by
    itself, with exponential backoff, until closed.

    ```python
    with ringside.subscribe("http://127.0.0.1:50051", topics=["metrics"]) as sub:
        for item in sub:
            if isinstance(item, ringside.Frame):
                handle(item.topic, item.payload)
            elif isinstance(item, ringside.Loss):
                log.warning("lost %d frames (%s)", item.frames, item.reason.name)
    ```

    Arguments (all keyword but `endpoint`):

    - `endpoint`: `http://host:port`, `https://host:port` (TLS with the system roots, or
      `credentials=`) or `host:port`.
    - `start`: `"earliest"` (default: the oldest frame the ring still holds), `"latest"`
      (frames written from now on), a sequence number (`int`, e.g. a stored `resume_seq`),
      or `ringside.Timestamp(ns)`.
    - `ring_id`: with an `int` start, the ring that sequence belongs to; when the sidecar
      serves another ring, a `RingReplaced` is yielded first and the new ring is read from
      its start.
    - `topics`, `prefixes`: deliver only these topics / topics with these prefixes (OR).
    - `token`: bearer token for a sidecar started with `--auth-token-file`.
    - `max_batch_bytes` (default 256 KiB): the most bytes one message may carry. With the
      sidecar's maximum frame it bounds the memory a subscription holds (grpcio's receive
      limit is set from it).
    - `max_batch_frames`: at most this many frames per message (0: bytes only).
    - `report_gaps`: also yield a `Gap` for sequences neither delivered nor lost
      (discarded reservations, frames excluded by the filter).
    - `connect_timeout`, `initial_backoff`, `max_backoff`: seconds.
    - `extra_channel_options`: more grpcio channel options.

    Raises `SubscribeError` (from the iteration) when the sidecar refuses for good:
    bad filters, missing or wrong token. Anything else (sidecar down, restarting, too many
    subscribers) is retried.
    """
    return Subscription(endpoint, **kwargs)
