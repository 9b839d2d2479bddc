"""`ringside.aio.subscribe`: the subscriber for asyncio (grpc.aio), with the same values,
arguments and resume loop as `ringside.subscribe`.

    async with ringside.aio.subscribe("http://127.0.0.1:50051") as sub:
        async for item in sub:
            ...
"""

from __future__ import annotations

import asyncio
import collections
from typing import Optional, Sequence

import grpc
import grpc.aio

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
from ringside._subscribe import (
    DEFAULT_MAX_BATCH_BYTES,
    PERMANENT,
    auth_metadata,
    channel_options,
)
from ringside.v1 import ringside_pb2 as pb
from ringside.v1 import ringside_pb2_grpc as pb_grpc

__all__ = ["AsyncSubscription", "subscribe"]


class AsyncSubscription:
    """The asyncio twin of `ringside.Subscription`: `async for` over it; stop it with
    `await aclose()`, by leaving its `async with` block, or by cancelling the task."""

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
        self._pending: collections.deque[Item] = collections.deque()
        self._closed = False
        self._stop: Optional[asyncio.Event] = None
        self._channel: Optional[grpc.aio.Channel] = None
        self._channel_limit = 0
        self._call = None
        self._streams = 0
        self._retried_invalid = False
        self.reconnects = 0
        self.last_error: Optional[str] = None

    @property
    def resume_seq(self) -> Optional[int]:
        if self._pending:
            item = self._pending[0]
            if isinstance(item, Frame):
                return item.seq
            if isinstance(item, (Loss, Gap)):
                return item.first_seq
        return self._cursor.resume_seq

    @property
    def ring_id(self) -> Optional[int]:
        return self._cursor.ring_id

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> Item:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            await self._fill()
        return self._pending.popleft()

    async def _fill(self) -> None:
        call = self._call
        if call is None:
            call = await self._open()
            if call is None:
                return
        try:
            batch = await call.read()
        except grpc.aio.AioRpcError as err:
            await self._failed(err)
            return
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError for a call we cancelled ourselves (aclose() from
            # another task): that ends the iteration. A cancellation of this task goes on.
            if self._closed and not _task_cancelling():
                return
            await self._drop_call()
            raise
        if batch is grpc.aio.EOF:
            self.last_error = "the sidecar ended the stream"
            await self._drop_call()
            return
        items, restart = self._cursor.on_batch(batch)
        self._backoff.reset()
        self._retried_invalid = False
        self._pending.extend(items)
        if restart:
            await self._drop_call()

    async def _open(self):
        if self._stop is None:
            self._stop = asyncio.Event()
        if self._streams > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), self._backoff.next_delay())
            except asyncio.TimeoutError:
                pass
            if self._closed:
                return None
        try:
            channel = await self._channel_for(self._cursor.receive_limit())
            info = await pb_grpc.RingsideStub(channel).Info(
                pb.InfoRequest(), timeout=self._connect_timeout, metadata=self._metadata
            )
            self._pending.extend(self._cursor.on_info(info))
            channel = await self._channel_for(self._cursor.receive_limit())
            call = pb_grpc.RingsideStub(channel).Subscribe(
                self._cursor.request(), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            self._streams += 1
            await self._failed(err)
            return None
        except (ValueError, grpc.aio.UsageError):
            # A channel that aclose() closed meanwhile.
            if self._closed:
                return None
            raise
        if self._closed:
            call.cancel()
            return None
        self._call = call
        if self._streams > 0:
            self.reconnects += 1
        self._streams += 1
        return call

    async def _channel_for(self, limit: int) -> grpc.aio.Channel:
        if self._channel is not None and self._channel_limit >= limit:
            return self._channel
        if self._channel is not None:
            old, self._channel = self._channel, None
            await old.close()
        opts = channel_options(limit, self._extra)
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self._target, self._credentials, options=opts)
        else:
            channel = grpc.aio.insecure_channel(self._target, options=opts)
        self._channel, self._channel_limit = channel, limit
        return channel

    async def _failed(self, err: grpc.aio.AioRpcError) -> None:
        await self._drop_call()
        if self._closed:
            return
        code, details = err.code(), err.details() or str(err)
        self.last_error = f"{code.name}: {details}"
        if code in PERMANENT:
            if (
                code == grpc.StatusCode.INVALID_ARGUMENT
                and self._cursor.derived
                and not self._retried_invalid
            ):
                self._retried_invalid = True
                return
            await self.aclose()
            raise SubscribeError(code, details) from None

    async def _drop_call(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def aclose(self) -> None:
        """Stops the subscription: cancels the stream and closes the channel."""
        self._closed = True
        if self._stop is not None:
            self._stop.set()
        await self._drop_call()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        self._pending.clear()

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc) -> bool:
        await self.aclose()
        return False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<ringside.aio.AsyncSubscription {self._target} {state} ring_id={self.ring_id} "
            f"resume_seq={self.resume_seq} reconnects={self.reconnects}>"
        )


def _task_cancelling() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return bool(cancelling()) if cancelling is not None else False


def subscribe(endpoint: str, **kwargs) -> AsyncSubscription:
    """`ringside.subscribe` for asyncio: same arguments, same values; iterate with
    `async for`. See `ringside.subscribe` for the arguments."""
    return AsyncSubscription(endpoint, **kwargs)
