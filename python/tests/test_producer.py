"""The producer against a real sidecar: round trips, errors, zero-copy reservations."""

from __future__ import annotations

import array
import ctypes
import gc
import os
import random
import socket
import struct

import pytest

import ringside
from conftest import MAX_FRAME, collect

SIZES = [0, 1, 7, 8, 9, 63, 64, 255, 256, 1000, 1024, 4095, 4096, 65535, MAX_FRAME]


def test_round_trip_byte_for_byte_from_empty_to_max(sidecar, producer):
    rng = random.Random(12)
    sent = []
    for i, size in enumerate(SIZES):
        payload = rng.randbytes(size)
        topic = f"rt/{i}"
        assert producer.send(topic, payload) is True
        sent.append((topic, payload))
    assert producer.max_payload == MAX_FRAME
    frames = collect(sidecar.endpoint, len(sent))
    assert [(f.topic, f.payload) for f in frames] == sent
    assert [f.seq for f in frames] == list(range(len(sent)))
    assert all(f.producer_id == os.getpid() for f in frames)
    stats = producer.stats()
    assert stats.sent == len(SIZES)
    assert stats.sent_bytes == sum(SIZES)


def test_send_takes_any_buffer_without_conversion(sidecar, producer):
    ints = array.array("I", range(100))
    big = bytearray(b"abcdefgh" * 100)
    resizable = bytearray(b"bytearray")
    cases = [
        b"bytes",
        resizable,
        memoryview(b"0123456789")[2:7],
        ints,
        memoryview(big)[8:24],
        memoryview(ints).cast("B")[4:12],
    ]
    for c in cases:
        assert producer.send("buf", c)
    frames = collect(sidecar.endpoint, len(cases))
    assert [f.payload for f in frames] == [bytes(c) for c in cases]
    # A bytearray cannot be resized while an export of it is held: send holds none after
    # it returns.
    resizable.extend(b"more")


def test_send_rejects_what_has_no_contiguous_bytes(producer):
    with pytest.raises(TypeError):
        producer.send("t", "a str is not bytes")
    with pytest.raises(BufferError):
        producer.send("t", memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError):
        producer.send(b"topic must be str", b"x")


def test_send_at_keeps_the_timestamp(sidecar, producer):
    assert producer.send_at("ts", b"a", 123)
    assert producer.send_at("ts", b"b", timestamp_ns=2**64 - 1)
    frames = collect(sidecar.endpoint, 2)
    assert [f.timestamp_ns for f in frames] == [123, 2**64 - 1]
    with pytest.raises(OverflowError):
        producer.send_at("ts", b"c", -1)


def test_bad_topic_and_size_raise_value_error_with_the_rust_text(producer):
    with pytest.raises(ValueError, match=r"^topic of 0 bytes is invalid: a topic must be 1 to 255 bytes of UTF-8$"):
        producer.send("", b"x")
    with pytest.raises(ValueError, match="topic of 256 bytes is invalid"):
        producer.send("t" * 256, b"x")
    with pytest.raises(ValueError, match="topic of 256 bytes"):
        producer.reserve("é" * 128, 1)
    with pytest.raises(
        ValueError,
        match=rf"^payload of {MAX_FRAME + 1} bytes exceeds the ring's max payload of {MAX_FRAME} bytes; "
        r"nothing was published \(split the payload or raise --max-payload on the sidecar\)$",
    ):
        producer.send("t", bytes(MAX_FRAME + 1))
    with pytest.raises(ValueError, match="exceeds the ring's max payload"):
        producer.reserve("t", MAX_FRAME + 1)
    assert producer.send("t" * 255, b"ok")
    s = producer.stats()
    assert (s.dropped_invalid_topic, s.dropped_too_large, s.sent) == (3, 2, 1)
    assert s.as_dict()["dropped_too_large"] == 2


def ring_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ringside's ring memfd."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "memfd:ringside-ring" in line:
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def test_reserve_hands_out_the_ring_itself(sidecar, producer):
    with producer.reserve("zc", 64) as buf:
        assert isinstance(buf, memoryview)
        assert (len(buf), buf.readonly, buf.format, buf.contiguous) == (64, False, "B", True)
        # The view's memory is inside the shared ring mapping: zero copy.
        anchor = ctypes.c_char.from_buffer(buf)
        address = ctypes.addressof(anchor)
        del anchor  # an export held past the block would make the commit fail
        assert any(lo <= address and address + 64 <= hi for lo, hi in ring_mappings()), (
            hex(address),
            ring_mappings(),
        )
        struct.pack_into("<QQ", buf, 0, 0xDEADBEEF, 42)
        buf[16:] = bytes(range(48))
    expected = struct.pack("<QQ", 0xDEADBEEF, 42) + bytes(range(48))
    [frame] = collect(sidecar.endpoint, 1)
    assert (frame.topic, frame.payload) == ("zc", expected)
    assert producer.stats().sent == 1


def test_reserve_of_every_size_round_trips(sidecar, producer):
    rng = random.Random(7)
    sent = []
    for size in SIZES:
        payload = rng.randbytes(size)
        r = producer.reserve("rsv", size, timestamp_ns=size + 1)
        with r as buf:
            buf[:] = payload
        assert r.published is True and r.in_ring
        sent.append(payload)
    frames = collect(sidecar.endpoint, len(sent))
    assert [f.payload for f in frames] == sent
    assert [f.timestamp_ns for f in frames] == [s + 1 for s in SIZES]


def test_exception_in_reserve_publishes_a_discard(sidecar, producer):
    assert producer.send("d", b"before")
    r = producer.reserve("d", 8)
    with pytest.raises(KeyError):
        with r as buf:
            buf[:] = b"halfway!"
            raise KeyError("the caller failed")
    assert r.published is False
    assert producer.send("d", b"after")
    s = producer.stats()
    assert (s.sent, s.discarded) == (2, 1)
    # The subscriber sees the two frames, and the discarded one as a gap at seq 1.
    items = collect(sidecar.endpoint, 3, report_gaps=True)
    assert [type(i).__name__ for i in items] == ["Frame", "Gap", "Frame"]
    assert [items[0].payload, items[2].payload] == [b"before", b"after"]
    assert (items[1].first_seq, items[1].frames) == (1, 1)
    # Without report_gaps the discard is simply not delivered.
    frames = collect(sidecar.endpoint, 2)
    assert [f.payload for f in frames] == [b"before", b"after"]


def test_the_memoryview_is_dead_after_the_block(producer):
    r = producer.reserve("x", 4)
    with r as buf:
        buf[:] = b"abcd"
    with pytest.raises(ValueError, match="released memoryview"):
        buf[0] = 1
    with pytest.raises(ValueError, match="released memoryview"):
        bytes(buf)
    with pytest.raises(BufferError, match="the reservation is finished"):
        memoryview(r)
    with pytest.raises(BufferError):
        with r:
            pass


@pytest.mark.parametrize("leak", ["slice", "nested memoryview", "ctypes"])
def test_a_view_alive_at_exit_fails_the_commit_and_discards(sidecar, producer, leak):
    kept = None
    with pytest.raises(BufferError, match="still alive"):
        with producer.reserve("leak", 16) as buf:
            buf[:] = b"0123456789abcdef"
            if leak == "slice":
                kept = buf[4:8]
            elif leak == "nested memoryview":
                kept = memoryview(buf)
            else:
                kept = (ctypes.c_char * 16).from_buffer(buf)
    s = producer.stats()
    assert (s.sent, s.discarded) == (0, 1)
    del kept
    gc.collect()
    assert producer.send("leak", b"next")
    items = collect(sidecar.endpoint, 2, report_gaps=True)
    assert [type(i).__name__ for i in items] == ["Gap", "Frame"]
    assert items[1].payload == b"next"


def test_commit_and_discard_without_with(sidecar, producer):
    r = producer.reserve("m", 3)
    memoryview(r)[:] = b"abc"  # temporary view: released right away
    r.commit()
    assert r.published is True
    r.commit()  # finished: nothing happens
    r2 = producer.reserve("m", 3)
    r2.discard()
    assert r2.published is False
    r3 = producer.reserve("m", 3)
    del r3  # garbage-collected while open: discarded, never left claimed
    s = producer.stats()
    assert (s.sent, s.discarded) == (1, 2)
    [frame] = collect(sidecar.endpoint, 1)
    assert frame.payload == b"abc"


def test_reservation_outlives_a_closed_producer(sidecar, producer):
    r = producer.reserve("late", 5)
    with r as buf:
        producer.close()
        buf[:] = b"still"
    assert r.published is True
    [frame] = collect(sidecar.endpoint, 1)
    assert frame.payload == b"still"


def test_closed_producer_raises(producer):
    producer.close()
    assert producer.closed
    with pytest.raises(ValueError, match="closed"):
        producer.send("t", b"x")
    with pytest.raises(ValueError, match="closed"):
        producer.stats()
    producer.close()  # twice is fine


def test_context_manager_closes(sidecar):
    with ringside.Producer(sidecar.socket) as p:
        assert p.wait_connected(10)
        assert p.send("cm", b"x")
    assert p.closed


def test_default_socket_comes_from_the_environment(sidecar, monkeypatch):
    monkeypatch.setenv("RINGSIDE_SOCKET", sidecar.socket)
    assert str(ringside.default_socket_path()) == sidecar.socket
    with ringside.Producer() as p:
        assert str(p.socket) == sidecar.socket
        assert p.wait_connected(10)
    monkeypatch.delenv("RINGSIDE_SOCKET")
    assert str(ringside.default_socket_path()) == ringside.DEFAULT_SOCKET_PATH == "/tmp/ringside.sock"


def test_refusal_is_a_refused_error(sidecar_factory):
    # Only a uid this process does not have may produce.
    s = sidecar_factory("--allow-uid", str(os.getuid() + 4242)).start()
    with pytest.raises(ringside.RefusedError, match="the sidecar refused this producer \\(uid not allowed\\)") as e:
        ringside.Producer(s.socket)
    assert e.value.reason == "uid not allowed"
    assert f"uid {os.getuid()}" in e.value.detail
    assert isinstance(e.value, ringside.ConnectError)
    assert isinstance(e.value, ringside.RingsideError)


def test_too_many_producers_is_a_refused_error(sidecar_factory):
    s = sidecar_factory("--max-producers", "1").start()
    first = ringside.Producer(s.socket)
    assert first.wait_connected(10)
    with pytest.raises(ringside.RefusedError) as e:
        ringside.Producer(s.socket)
    assert e.value.reason == "too many producers"
    first.close()


def test_a_socket_that_can_never_work_is_a_connect_error(tmp_path):
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "stream.sock")
    stream.bind(path)
    stream.listen()
    try:
        with pytest.raises(
            ringside.ConnectError, match=r"stream.sock is not a ringside socket \(expected SOCK_SEQPACKET\)"
        ):
            ringside.Producer(path)
    finally:
        stream.close()
    with pytest.raises(ringside.ConnectError, match="File name too long"):
        ringside.Producer("/tmp/" + "x" * 200)


def test_no_sidecar_never_blocks_and_counts(tmp_path):
    p = ringside.Producer(str(tmp_path / "nobody.sock"))
    assert not p.ring_mapped and p.max_payload is None
    assert p.send("t", b"x") is False
    r = p.reserve("t", 32)
    with r as buf:
        assert len(buf) == 32
        buf[:4] = b"lost"
    assert (r.published, r.in_ring) == (False, False)
    with pytest.raises(ValueError, match="largest payload any ring allows"):
        p.reserve("t", 64 * 1024 * 1024 + 1)
    # The oversized reservation was refused for want of a ring first (Rust counts it so).
    assert p.stats().dropped_not_connected == 3
    p.close()


def test_threads_sending_large_frames_while_another_closes(sidecar, producer):
    """Sends of 16 KiB and more release the GIL: close() from another thread must neither
    deadlock with them nor pull the ring from under a copy."""
    import threading

    assert ringside._native.DETACH_AT == 16 * 1024
    payload = bytes(range(256)) * 128  # 32 KiB: copied with the GIL released
    outcomes: list = []

    def run():
        sent = 0
        try:
            while True:
                producer.send("big", payload)
                sent += 1
        except ValueError as e:
            outcomes.append((sent, str(e)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    import time

    time.sleep(0.3)
    producer.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == 3 and all("closed" in text for _, text in outcomes)
    total = sum(sent for sent, _ in outcomes)
    assert total > 0
    # The threads lapped the 4 MiB ring many times: the oldest retained frames may be
    # reported lapped first. A thread preempted mid-copy for longer than a lap (about a
    # millisecond here) writes into newer frames: those are reported corrupt, never
    # delivered (docs/ring-format.md §6, "the slow writer"). Every frame delivered is whole.
    items = collect(sidecar.endpoint, 5)
    frames = [i for i in items if isinstance(i, ringside.Frame)]
    allowed = (ringside.LossReason.LAPPED, ringside.LossReason.CORRUPT)
    assert all(isinstance(i, ringside.Loss) and i.reason in allowed for i in items if i not in frames), items
    assert frames and all(f.payload == payload for f in frames)
