"""The subscriber against a real sidecar: start positions, filters, errors, bounds, stop."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

import ringside
import ringside.aio
from conftest import MAX_FRAME, collect
from ringside._resume import receive_limit


def send_n(producer, n, topic="t", start=0):
    for i in range(start, start + n):
        assert producer.send(topic, b"%d" % i)


def test_start_positions(sidecar, producer):
    send_n(producer, 5)
    assert [f.seq for f in collect(sidecar.endpoint, 5)] == [0, 1, 2, 3, 4]
    assert [f.seq for f in collect(sidecar.endpoint, 2, start=3)] == [3, 4]
    tomorrow = time.time_ns() + 86_400 * 10**9
    assert producer.send_at("t", b"late", tomorrow)
    assert [f.payload for f in collect(sidecar.endpoint, 1, start=ringside.Timestamp(tomorrow))] == [b"late"]

    # "latest": only what is written after the subscription started.
    sub = ringside.subscribe(sidecar.endpoint, start="latest")
    got = []
    reader = threading.Thread(target=lambda: got.append(next(sub)), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while sub.resume_seq is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sub.resume_seq == 6  # resolved to a sequence, so a reconnect resumes exactly
    assert producer.send("t", b"new")
    reader.join(10)
    assert [(f.seq, f.payload) for f in got] == [(6, b"new")]
    sub.close()


def test_topic_and_prefix_filters(sidecar, producer):
    for topic in ["a", "ab", "b/1", "b/2", "c", "a"]:
        assert producer.send(topic, topic.encode())
    got = collect(sidecar.endpoint, 4, topics=["a"], prefixes=["b/"])
    assert [f.topic for f in got] == ["a", "b/1", "b/2", "a"]
    # With gaps on, what the filter skipped is accounted for too.
    got = collect(sidecar.endpoint, 3, topics=["c"], report_gaps=True)
    ring = got[1].ring_id
    assert got[0] == ringside.Gap(first_seq=0, frames=4, ring_id=ring)
    assert (got[1].seq, got[1].topic) == (4, "c")
    assert got[2] == ringside.Gap(first_seq=5, frames=1, ring_id=ring)


def test_permanent_refusals_raise_subscribe_error(sidecar):
    sub = ringside.subscribe(sidecar.endpoint, topics=["x" * 256])
    with pytest.raises(ringside.SubscribeError) as e:
        next(sub)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(e.value, ringside.RingsideError)
    assert sub.closed
    with pytest.raises(ValueError, match="start='newest' is not understood"):
        ringside.subscribe(sidecar.endpoint, start="newest")
    with pytest.raises(TypeError, match="not one string"):
        ringside.subscribe(sidecar.endpoint, topics="abc")


def test_bearer_token(sidecar_factory, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    s = sidecar_factory("--auth-token-file", str(token_file)).start()
    p = ringside.Producer(s.socket)
    assert p.wait_connected(10)
    assert p.send("t", b"authorized")
    with pytest.raises(ringside.SubscribeError) as e:
        next(ringside.subscribe(s.endpoint))
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ringside.SubscribeError):
        next(ringside.subscribe(s.endpoint, token="wrong"))
    assert [f.payload for f in collect(s.endpoint, 1, token="s3cret")] == [b"authorized"]
    p.close()


def test_the_receive_bound_follows_max_batch_bytes_and_the_max_frame(sidecar, producer):
    # The sidecar raises a too-small batch bound to one maximum-size frame; the receive
    # limit must follow it, or grpcio would refuse the message.
    assert receive_limit(1024, MAX_FRAME) >= MAX_FRAME + 255 + 360
    assert receive_limit(1 << 20, MAX_FRAME) == 1 << 20
    big = bytes(range(256)) * (MAX_FRAME // 256)
    assert producer.send("big", big)
    send_n(producer, 50)
    got = collect(sidecar.endpoint, 51, max_batch_bytes=1024)
    assert got[0].payload == big
    assert [f.payload for f in got[1:]] == [b"%d" % i for i in range(50)]


def test_batches_are_bounded_by_max_batch_bytes(sidecar, producer):
    """A message larger than the bound the subscriber asked for would be refused by its
    own receive limit: with 64 KiB asked, 400 KiB of small frames must arrive in several
    messages, which the subscriber accepts."""
    for i in range(400):
        assert producer.send("fill", bytes(1000))
    sub = ringside.subscribe(sidecar.endpoint, max_batch_bytes=64 * 1024)
    # The channel's receive limit is the bound (the ring's max frame is 64 KiB).
    got = [next(sub) for _ in range(400)]
    assert sub._channel_limit == receive_limit(64 * 1024, MAX_FRAME)
    assert len(got) == 400
    sub.close()


def test_close_from_another_thread_ends_a_blocked_iteration(sidecar, producer):
    sub = ringside.subscribe(sidecar.endpoint)
    ended = threading.Event()
    items = []

    def run():
        for item in sub:  # blocks: nothing is written
            items.append(item)
        ended.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.5)
    assert not ended.is_set()
    sub.close()
    assert ended.wait(5), "close() did not end the iteration"
    assert items == []


def test_subscriber_waits_for_a_sidecar_that_is_not_there_yet(sidecar_factory):
    s = sidecar_factory()
    sub = ringside.subscribe(s.endpoint, max_backoff=0.2)
    got = []
    t = threading.Thread(target=lambda: got.append(next(sub)), daemon=True)
    t.start()
    time.sleep(0.5)
    s.start()
    p = ringside.Producer(s.socket)
    assert p.wait_connected(10)
    assert p.send("t", b"first")
    t.join(15)
    assert [f.payload for f in got] == [b"first"]
    assert sub.last_error is not None and "UNAVAILABLE" in sub.last_error
    sub.close()
    p.close()


def test_breaking_out_of_the_loop_releases_the_stream(sidecar_factory):
    """The sidecar's subscriber slot is freed when the subscription is dropped: with
    --max-subscribers 1 a second subscription works after the first is abandoned."""
    s = sidecar_factory("--max-subscribers", "1").start()
    p = ringside.Producer(s.socket)
    assert p.wait_connected(10)
    send_n(p, 3)
    for _ in range(3):
        for item in ringside.subscribe(s.endpoint):
            assert item.seq == 0
            break
        # Dropped here (refcount): the call is cancelled at once.
    assert [f.seq for f in collect(s.endpoint, 3)] == [0, 1, 2]
    p.close()


def test_asyncio_subscriber(sidecar, producer):
    send_n(producer, 3)

    async def main():
        got = []
        async with ringside.aio.subscribe(sidecar.endpoint, report_gaps=True) as sub:
            async for item in sub:
                got.append(item)
                if len(got) == 3:
                    break
            assert sub.resume_seq == 3
        assert sub.closed
        # aclose() from another task ends a blocked `async for`.
        sub2 = ringside.aio.subscribe(sidecar.endpoint, start="latest")

        async def drain():
            return [item async for item in sub2]

        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0.3)
        await sub2.aclose()
        rest = await asyncio.wait_for(task, 5)
        return got, rest

    got, rest = asyncio.run(main())
    assert [f.payload for f in got] == [b"0", b"1", b"2"]
    assert rest == []


def test_asyncio_subscriber_resumes_across_a_restart(sidecar, producer):
    send_n(producer, 100)

    async def main():
        got = []
        async with ringside.aio.subscribe(sidecar.endpoint, max_backoff=0.2) as sub:
            async for item in sub:
                got.append(item)
                if len(got) == 50:
                    sidecar.kill()
                    send_n(producer, 100, start=100)  # into the ring while no sidecar runs
                    sidecar.start()
                if len(got) == 200:
                    break
            return got, sub.reconnects

    got, reconnects = asyncio.run(main())
    assert [f.payload for f in got] == [b"%d" % i for i in range(200)]
    assert [f.seq for f in got] == list(range(200))
    assert reconnects >= 1
