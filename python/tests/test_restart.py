"""Producers and subscribers across a missing, killed (SIGKILL) and restarted sidecar."""

from __future__ import annotations

import struct
import threading
import time

import ringside
from conftest import collect


def index(frame: ringside.Frame) -> int:
    return struct.unpack("<Q", frame.payload)[0]


def test_no_sidecar_at_start_then_it_appears(sidecar_factory):
    s = sidecar_factory()  # not started yet
    p = ringside.Producer(s.socket)
    assert not p.ring_mapped
    early = [p.send("early", struct.pack("<Q", i)) for i in range(100)]
    assert early == [False] * 100
    assert p.stats().dropped_not_connected == 100

    s.start()
    assert p.wait_connected(10), p.last_error
    assert p.send("late", struct.pack("<Q", 0))
    late = [p.send("late", struct.pack("<Q", i)) for i in range(1, 100)]
    assert all(late)
    frames = collect(s.endpoint, 100)
    assert [index(f) for f in frames] == list(range(100))
    assert {f.topic for f in frames} == {"late"}
    stats = p.stats()
    assert (stats.sent, stats.dropped_not_connected) == (100, 100)
    p.close()


class Sender(threading.Thread):
    """Sends `count` frames with their index as payload, pausing briefly every `pace`
    frames so the run spans the sidecar restarts; every `discard_every`-th index also
    publishes a discarded reservation first (an exception in the block).

    At a quarter, half and three quarters it sets `marks[i]`; with `gated`, it then waits
    for `gates[i]` before going on."""

    def __init__(self, producer, count, pace=200, discard_every=0, gated=False):
        super().__init__(daemon=True)
        self.producer, self.count, self.pace, self.discard_every = producer, count, pace, discard_every
        self.results: list[bool] = []
        self.discards = 0
        self.marks = {count * k // 4: threading.Event() for k in (1, 2, 3)}
        self.gates = {i: threading.Event() for i in self.marks}
        if not gated:
            for gate in self.gates.values():
                gate.set()

    def run(self):
        for i in range(self.count):
            if self.discard_every and i % self.discard_every == self.discard_every - 1:
                try:
                    with self.producer.reserve("idx", 8) as buf:
                        buf[:] = struct.pack("<Q", 2**63 + i)
                        raise RuntimeError("abandon this one")
                except RuntimeError:
                    self.discards += 1
            self.results.append(self.producer.send("idx", struct.pack("<Q", i)))
            if i % self.pace == 0:
                time.sleep(0.001)
            if i in self.marks:
                self.marks[i].set()
                self.gates[i].wait(60)


def test_sidecar_killed_and_restarted_while_sending(sidecar, producer):
    ring_id = producer.ring_id
    sender = Sender(producer, 20_000)
    sender.start()
    assert sender.marks[20_000 // 4].wait(20)
    sidecar.kill()
    time.sleep(0.3)
    sidecar.start()
    sender.join(60)
    assert not sender.is_alive()
    # The ring stays mapped while the sidecar is away: every send landed.
    assert sender.results == [True] * 20_000
    assert producer.wait_connected(10), producer.last_error
    assert producer.stats().reconnects >= 1
    assert producer.ring_id == ring_id, "the restarted sidecar must adopt the producer's ring"
    frames = collect(sidecar.endpoint, 20_000, timeout=60)
    assert [index(f) for f in frames] == list(range(20_000))
    assert {f.ring_id for f in frames} == {ring_id}


def test_subscriber_resumes_across_restarts_with_exact_accounting(sidecar, producer):
    """Every sequence number of the ring is delivered, or reported lost, or reported as a
    gap (the discarded reservations), exactly once, across two SIGKILLs of the sidecar."""
    count, discard_every = 30_000, 97
    items: list = []
    sub = ringside.subscribe(sidecar.endpoint, report_gaps=True, max_batch_bytes=16 * 1024)
    done = threading.Event()
    total = {}

    accounted = [0]

    def consume():
        for item in sub:
            items.append(item)
            if isinstance(item, ringside.Frame):
                accounted[0] += 1
            elif isinstance(item, (ringside.Loss, ringside.Gap)):
                accounted[0] += item.frames
            if "sequences" in total and accounted[0] >= total["sequences"]:
                break
        done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    sender = Sender(producer, count, pace=100, discard_every=discard_every, gated=True)
    sender.start()
    for k, mark in enumerate(sorted(sender.marks)[:2], start=1):
        assert sender.marks[mark].wait(30)
        # The sender waits at its gate: let the subscriber take everything written so far
        # on this stream, so the kill interrupts a stream that delivered, and the resume
        # must continue exactly after it.
        written = len(sender.results) + sender.discards
        deadline = time.monotonic() + 30
        while accounted[0] < written and time.monotonic() < deadline:
            time.sleep(0.01)
        assert accounted[0] == written, (accounted[0], written, sub.last_error)
        sidecar.kill()
        # Frames written while no sidecar runs land in the ring all the same.
        sender.gates[mark].set()
        time.sleep(0.3)
        sidecar.start()
        # The subscriber resumes on the restarted sidecar before the next kill.
        deadline = time.monotonic() + 30
        while sub.reconnects < k and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sub.reconnects >= k, (sub, sub.last_error)
    sender.gates[sorted(sender.marks)[2]].set()
    sender.join(120)
    assert not sender.is_alive()
    assert sender.results == [True] * count
    total["sequences"] = count + sender.discards
    # The last frame is a send, so every discard is followed by a delivered frame.
    if not done.wait(90):
        sub.close()
        reader.join(10)
        raise AssertionError(f"subscriber stuck after {len(items)} values; last {items[-3:]}; {sub!r}, {sub.last_error}")
    sub.close()

    seen = [0] * total["sequences"]
    frames, gaps, losses = [], [], []
    for item in items:
        if isinstance(item, ringside.Frame):
            seen[item.seq] += 1
            frames.append(item)
        elif isinstance(item, (ringside.Loss, ringside.Gap)):
            for s in range(item.first_seq, item.first_seq + item.frames):
                seen[s] += 1
            (gaps if isinstance(item, ringside.Gap) else losses).append(item)
        else:
            raise AssertionError(f"unexpected {item!r} (the ring must be adopted, not replaced)")
    assert seen == [1] * total["sequences"], [i for i, n in enumerate(seen) if n != 1][:20]
    # Nothing lapped in a 4 MiB ring; only the discards are gaps.
    assert losses == []
    assert sum(g.frames for g in gaps) == sender.discards == producer.stats().discarded
    assert [index(f) for f in frames] == list(range(count))
    assert sub.reconnects >= 2
    assert sidecar.starts == 3


def test_a_replaced_ring_is_reported(sidecar):
    p = ringside.Producer(sidecar.socket)
    assert p.wait_connected(10)
    for i in range(3):
        assert p.send("old", struct.pack("<Q", i))
    sub = ringside.subscribe(sidecar.endpoint, max_backoff=0.2)
    got = [next(sub) for _ in range(3)]
    old_ring = got[0].ring_id
    # No producer alive to hand the ring back: the restarted sidecar makes a new one.
    p.close()
    sidecar.kill()
    sidecar.start()
    q = ringside.Producer(sidecar.socket)
    assert q.wait_connected(10)
    assert q.ring_id != old_ring
    for i in range(2):
        assert q.send("new", struct.pack("<Q", i))
    replaced = next(sub)
    assert replaced == ringside.RingReplaced(old_ring_id=old_ring, new_ring_id=q.ring_id)
    after = [next(sub) for _ in range(2)]
    assert [(f.seq, f.topic, index(f)) for f in after] == [(0, "new", 0), (1, "new", 1)]
    assert sub.ring_id == q.ring_id
    sub.close()
    q.close()
