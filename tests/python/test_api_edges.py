"""The API at its edges (issue 11), driven by an independent client: Python grpcio with
stubs generated from the proto at test time. One test per defect; the same defects are
driven by tonic in tests/tests/sidecar_api.rs. Each failed against the sidecar before its
fix (point $RINGSIDE_BIN at an older build to see it; $RINGSIDE_LOAD_BIN at a current one
for the producer)."""

import http.client
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import REPO, batch_accounts, free_port, pb

SERVICE = "ringside.v1.Ringside"


def resume_in(message):
    m = re.search(r"resume with sequence (\d+)", message or "")
    return int(m.group(1)) if m else None


def test_slow_reader_is_never_reaped(sidecar_factory):
    """Defect 1: a grpcio client taking a batch every 50 ms is never reaped with
    --subscriber-stall-timeout 2s.

    The sidecar sees a client read only through the window its HTTP/2 stack grants as
    the application consumes. grpcio grants window once its application consumed half of
    its receive window: 32 KiB with BDP probing off (as here), but megabytes with its
    default BDP probing, so a grpcio reader far slower than ingest can show no progress
    for longer than a 2 s timeout (docs: sidecar/README.md, "Stalled subscribers")."""
    s = sidecar_factory("--ring-size", "4MiB", "--subscriber-stall-timeout", "2s")
    load = s.spawn_load("--rate", "500", "--size", "1024", "--duration", "14s")
    try:
        with s.channel(**{"grpc.http2.bdp_probe": 0}) as ch:
            stream = s.stub(ch).Subscribe(pb.SubscribeRequest(latest=True))
            started = time.monotonic()
            batches = 0
            while time.monotonic() - started < 12:
                try:
                    next(stream)
                except grpc.RpcError as e:
                    pytest.fail(
                        f"a reader taking a batch every 50 ms lost its stream after "
                        f"{time.monotonic() - started:.1f} s and {batches} batches: "
                        f"{e.code()} {e.details()}\n{s.stderr()}"
                    )
                batches += 1
                time.sleep(0.05)
            stream.cancel()
        assert s.info().subscribers_reaped == 0, s.stderr()
    finally:
        load.wait(timeout=60)


def test_stalled_reader_is_ended_with_its_resume_sequence(sidecar_factory):
    """Defect 1: a client that stops reading gets UNAVAILABLE naming the resume_seq of
    the last batch it was sent, once it reads again."""
    s = sidecar_factory("--ring-size", "4MiB", "--subscriber-stall-timeout", "3s")
    load = s.spawn_load("--rate", "2000", "--size", "200", "--duration", "20s")
    try:
        # No BDP probing: the window stays at its initial 64 KiB, so a pause fills it.
        with s.channel(**{"grpc.http2.bdp_probe": 0}) as ch:
            stream = s.stub(ch).Subscribe(pb.SubscribeRequest(latest=True))
            t = time.monotonic()
            while time.monotonic() - t < 1:
                next(stream)
            time.sleep(5)
            last = None
            with pytest.raises(grpc.RpcError) as ended:
                for b in stream:
                    last = b.resume_seq
            e = ended.value
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            assert "--subscriber-stall-timeout" in e.details(), e.details()
            assert resume_in(e.details()) == last, (e.details(), last)
        assert s.info().subscribers_reaped == 1
    finally:
        load.wait(timeout=60)


def test_health_tells_the_truth_until_exit(sidecar_factory):
    """Defect 2: after SIGTERM, Check answers NOT_SERVING for "" and the service until
    exit, both Watch streams see NOT_SERVING and end, and Watch streams do not hold the
    exit back."""
    s = sidecar_factory("--ring-size", "4MiB")
    load = s.spawn_load("--rate", "2000", "--size", "200", "--duration", "3s")
    stalled_ch = s.channel(**{"grpc.http2.bdp_probe": 0})
    stalled = s.stub(stalled_ch).Subscribe(pb.SubscribeRequest(earliest=True))
    next(stalled)  # started; never read again: shutdown waits for it (5 s)
    ch = s.channel()
    health = health_pb2_grpc.HealthStub(ch)
    watched = {}

    def watch(name):
        seen = []
        try:
            for r in health.Watch(health_pb2.HealthCheckRequest(service=name)):
                seen.append(r.status)
            watched[name] = (seen, None)
        except grpc.RpcError as e:
            watched[name] = (seen, e.code())

    threads = [threading.Thread(target=watch, args=(n,)) for n in ("", SERVICE)]
    for t in threads:
        t.start()
    time.sleep(1)
    s.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # kill() returns before the sidecar's runtime has handled the signal, so a Check sent
    # in that moment may still say SERVING. Once one says NOT_SERVING (within a second),
    # every later one, on either name and either channel, must.
    answered = 0
    flipped = False
    while time.monotonic() - signalled < 3:
        for name in ("", SERVICE):
            with s.channel() as fresh:
                for c in (fresh, ch):
                    try:
                        r = health_pb2_grpc.HealthStub(c).Check(
                            health_pb2.HealthCheckRequest(service=name), timeout=1
                        )
                    except grpc.RpcError as e:
                        pytest.fail(
                            f"Check({name!r}) {time.monotonic() - signalled:.1f} s after "
                            f"SIGTERM: {e.code()} {e.details()}"
                        )
                    if not flipped and r.status == health_pb2.HealthCheckResponse.SERVING:
                        waited = time.monotonic() - signalled
                        assert waited < 1, f"Check({name!r}) still SERVING {waited:.2f} s after SIGTERM"
                        continue
                    flipped = True
                    assert r.status == health_pb2.HealthCheckResponse.NOT_SERVING, name
                    answered += 1
        time.sleep(0.1)
    assert answered > 0
    for t in threads:
        t.join(timeout=20)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE):
        seen, end = watched[name]
        assert seen == [serving, not_serving], (name, seen)
        assert end == grpc.StatusCode.UNAVAILABLE, (name, end)
    assert s.wait(timeout=20) == 0
    stalled_ch.close()
    ch.close()
    load.wait(timeout=60)

    # Without a stalled subscriber, an open Watch stream does not delay the exit.
    s = sidecar_factory()
    ch = s.channel()
    w = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(w).status == serving
    t = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait(timeout=20) == 0
    took = time.monotonic() - t
    ch.close()
    log = s.stderr()
    assert "did not end" not in log and "stalled" not in log, log
    assert took < 4, f"an open Watch stream held the exit for {took:.1f} s:\n{log}"


def test_list_topics_counts_a_burst(sidecar_factory):
    """Defect 3: one 20,000-frame burst into a fresh 4 MiB ring is counted in full."""
    s = sidecar_factory("--ring-size", "4MiB")
    s.load("--rate", "0", "--count", "20000", "--topics", "4", "--size", "64")
    deadline = time.monotonic() + 10
    with s.channel() as ch:
        stub = s.stub(ch)
        while True:
            t = stub.ListTopics(pb.ListTopicsRequest(), timeout=5)
            counted = sum(x.frames for x in t.topics)
            assert counted + t.frames_not_counted == t.frames_seen, t
            if counted == 20000 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert [(x.name, x.frames) for x in t.topics] == [(f"load/{i}", 5000) for i in range(4)], t
    assert (t.frames_seen, t.frames_not_counted) == (20000, 0)


def drain_accounted(stream, total, timeout=5.0):
    """Reads batches until resume_seq reaches total; checks each batch's accounting and
    that consecutive ranges touch. Returns (frames, lost, filtered, discarded)."""
    frames = lost = filtered = discarded = 0
    nxt = None
    deadline = time.monotonic() + 60
    while nxt is None or nxt < total:
        assert time.monotonic() < deadline, f"stuck at {nxt} of {total}"
        b = next(stream)
        if nxt is not None:
            assert b.from_seq == nxt, (b.from_seq, nxt)
        assert batch_accounts(b), b
        nxt = b.resume_seq
        frames += len(b.frames)
        lost += sum(l.frames for l in b.losses)
        filtered += b.filtered
        discarded += b.discarded
    assert nxt == total
    return frames, lost, filtered, discarded


def test_discards_are_reported_in_band(sidecar_factory):
    """Defect 4: discarded reservations are counted in-band, so frames + losses +
    filtered + discarded cover every sequence number."""
    s = sidecar_factory()
    s.load("--rate", "0", "--count", "3000", "--discard-every", "3", "--topics", "2")
    total = s.info().next_seq
    assert total == 3000
    with s.channel() as ch:
        stub = s.stub(ch)
        for topics in ([], ["load/0"]):
            req = pb.SubscribeRequest(earliest=True, topics=topics, max_batch_frames=100)
            stream = stub.Subscribe(req, timeout=60)
            frames, lost, filtered, discarded = drain_accounted(stream, total)
            stream.cancel()
            assert (lost, discarded) == (0, 1000), topics
            assert frames + filtered == 2000, topics
            if not topics:
                assert filtered == 0


def test_filtered_streams_get_progress_batches(sidecar_factory):
    """Defect 5: a stream whose topics never appear gets progress batches (no frames,
    the current resume_seq) at most about once a second."""
    s = sidecar_factory("--ring-size", "512KiB", "--max-payload", "1KiB")
    with s.channel() as ch:
        stream = s.stub(ch).Subscribe(
            pb.SubscribeRequest(latest=True, topics=["nobody/writes/this"])
        )
        got = []

        def read():
            try:
                for b in stream:
                    got.append((time.monotonic(), b))
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        started = time.monotonic()
        s.load("--rate", "2000", "--size", "100", "--duration", "3s")
        written = s.info().next_seq
        deadline = time.monotonic() + 5
        while (not got or got[-1][1].resume_seq < written) and time.monotonic() < deadline:
            time.sleep(0.1)
        stream.cancel()
        reader.join(timeout=5)
    assert got, "no progress batch for a filtered stream"
    for _, b in got:
        assert not b.frames and not b.losses and b.filtered > 0, b
        assert batch_accounts(b), b
    assert got[-1][1].resume_seq == written
    span = got[-1][0] - started
    assert len(got) <= span + 2, f"{len(got)} progress batches in {span:.1f} s"


@pytest.mark.parametrize("field", ["latest", "earliest"])
def test_false_start_positions_are_refused(sidecar_factory, field):
    """Defect 6: `latest=False` (and `earliest=False`) is INVALID_ARGUMENT."""
    s = sidecar_factory()
    with s.channel() as ch:
        stream = s.stub(ch).Subscribe(pb.SubscribeRequest(**{field: False}), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert f"`{field}: false`" in e.value.details()


def test_max_batch_bytes_means_what_it_says(sidecar_factory):
    """Defect 7: max_batch_bytes = 66,000 gives batches of hundreds of small frames, each
    at most 66,000 bytes on the wire."""
    s = sidecar_factory("--ring-size", "8MiB")
    s.load("--rate", "0", "--count", "20000", "--size", "64")
    limit = 66000
    frames = batches = 0
    with s.channel() as ch:
        stream = s.stub(ch).Subscribe(
            pb.SubscribeRequest(earliest=True, max_batch_bytes=limit), timeout=60
        )
        while frames < 20000:
            b = next(stream)
            assert b.ByteSize() + 5 <= limit
            frames += len(b.frames)
            batches += 1
        stream.cancel()
    assert batches <= 20000 // 500 + 2, f"{batches} batches for 20,000 frames"


def test_documented_filter_maximum_fits_the_default_request_limit(sidecar_factory):
    """Defect 8: 64 names and 64 prefixes with 8192 bytes of text (the documented
    maximum) are accepted at the default --max-request; 60 names of 255 bytes are refused
    as past the filter maximum."""
    s = sidecar_factory()
    with s.channel() as ch:
        stub = s.stub(ch)
        req = pb.SubscribeRequest(
            timestamp_ns=2**64 - 1,
            topics=[f"{i:0>64}" for i in range(64)],
            topic_prefixes=[f"{i:x>64}" for i in range(64)],
            max_batch_bytes=2**32 - 1,
            max_batch_frames=2**32 - 1,
        )
        stream = stub.Subscribe(req, timeout=1)
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value.details()
        stream = stub.Subscribe(
            pb.SubscribeRequest(latest=True, topics=[f"{i:0>255}" for i in range(60)]),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "8192" in e.value.details()


def test_info_rates_reach_zero_when_ingest_stops(sidecar_factory):
    """Defect 9: rates reach exactly 0 within seconds of the last write; retention is 0
    then, and retained_span_seconds says what the ring holds."""
    s = sidecar_factory("--ring-size", "4MiB")
    s.load("--rate", "2000", "--size", "100", "--duration", "2s")
    assert s.info().ingest_frames_per_sec > 0
    deadline = time.monotonic() + 15
    while True:
        i = s.info()
        if i.ingest_frames_per_sec == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (i.ingest_frames_per_sec, i.ingest_bytes_per_sec, i.retention_seconds) == (0, 0, 0), i
    assert 1 <= i.retained_span_seconds < 10, i


def _http(port, method, path, headers, body=b""):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    c.close()
    return r


def test_grpc_web_cors(sidecar_factory):
    """Defect 10: --cors-allow-origin answers browser preflights with the headers
    grpc-web clients need and exposes grpc-status/grpc-message; nothing for other
    origins, nor without the flag."""
    origin = "https://console.example"
    s = sidecar_factory("--cors-allow-origin", origin, "--cors-allow-origin", "http://x.example:1")
    pre = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization",
    }
    r = _http(s.port, "OPTIONS", "/ringside.v1.Ringside/Subscribe", pre)
    assert r.status == 200
    assert r.getheader("access-control-allow-origin") == origin
    allowed = r.getheader("access-control-allow-headers", "").lower()
    for h in ("x-grpc-web", "grpc-timeout", "authorization", "content-type"):
        assert h in allowed, allowed
    r = _http(
        s.port,
        "POST",
        "/ringside.v1.Ringside/Info",
        {"Origin": origin, "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"},
        b"\0\0\0\0\0",
    )
    assert r.status == 200
    assert r.getheader("access-control-allow-origin") == origin
    exposed = r.getheader("access-control-expose-headers", "").lower()
    assert "grpc-status" in exposed and "grpc-message" in exposed, exposed
    r = _http(s.port, "OPTIONS", "/ringside.v1.Ringside/Subscribe", {**pre, "Origin": "https://evil.example"})
    assert r.getheader("access-control-allow-origin") is None
    plain = sidecar_factory()
    r = _http(plain.port, "OPTIONS", "/ringside.v1.Ringside/Subscribe", pre)
    assert r.getheader("access-control-allow-origin") is None


def test_metrics_series_are_registered_at_start(sidecar_factory):
    """Defect 11: every series is scraped from the start (0 before any event)."""
    port = free_port()
    sidecar_factory("--metrics-listen", f"127.0.0.1:{port}")
    deadline = time.monotonic() + 10
    while True:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for reason in ("lapped", "abandoned", "corrupt"):
        assert f'ringside_frames_lost_total{{reason="{reason}"}} 0' in body, body
    for name in (
        "ringside_subscribers_refused_total",
        "ringside_subscribers_reaped_total",
        "ringside_subscriber_connections_closed_total",
        "ringside_connections_refused_total",
        "ringside_connections_handshake_timeout_total",
        "ringside_frames_out_total",
    ):
        assert re.search(rf"^{name} 0$", body, re.M), (name, body)


def test_reflection_errors_stay_in_stream(sidecar_factory, tmp_path):
    """Defect 12: an unknown symbol gets an in-stream error response and the stream goes
    on; reflection needs the bearer token when one is set, health does not."""
    token = tmp_path / "token"
    token.write_text("tok\n")
    s = sidecar_factory("--auth-token-file", str(token))
    reqs = [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
        reflection_pb2.ServerReflectionRequest(list_services=""),
    ]
    with s.channel() as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ServerReflectionInfo(iter(reqs), timeout=5))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            stub.ServerReflectionInfo(
                iter(reqs), timeout=5, metadata=[("authorization", "Bearer tok")]
            )
        )
        assert len(answers) == 2, answers
        assert answers[0].WhichOneof("message_response") == "error_response"
        assert answers[0].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        names = [x.name for x in answers[1].list_services_response.service]
        assert SERVICE in names and "grpc.health.v1.Health" in names, names
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_unary_calls_are_not_starved_by_subscribe_streams(sidecar_factory):
    """Defect 13: with 16 Subscribe streams on one channel, Info still answers on it, and
    a 17th Subscribe is refused at once with RESOURCE_EXHAUSTED."""
    s = sidecar_factory()
    with s.channel() as ch:
        stub = s.stub(ch)
        streams = []
        for _ in range(16):
            st = stub.Subscribe(pb.SubscribeRequest(latest=True))
            streams.append(st)
        deadline = time.monotonic() + 10
        while s.info().subscribers_active < 16:
            assert time.monotonic() < deadline, "16 streams did not start"
            time.sleep(0.05)
        info = stub.Info(pb.InfoRequest(), timeout=3)
        assert info.subscribers_active == 16
        extra = stub.Subscribe(pb.SubscribeRequest(latest=True), timeout=3)
        with pytest.raises(grpc.RpcError) as e:
            next(extra)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
        assert "--max-streams-per-connection" in e.value.details()
        for st in streams:
            st.cancel()


def test_messages_say_it_once_and_right(sidecar_factory, tmp_path):
    """Defect 14: the "sequence in the future" hint appears once; --help names the
    smallest ring the default flags allow, and the refusal names the flag value."""
    s = sidecar_factory()
    with s.channel() as ch:
        stream = s.stub(ch).Subscribe(pb.SubscribeRequest(sequence=10**6), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().count("resume from") == 1, e.value.details()
    from conftest import RINGSIDE

    help_text = subprocess.run([str(RINGSIDE), "serve", "--help"], capture_output=True, text=True).stdout
    assert "512KiB" in help_text
    out = subprocess.run(
        [str(RINGSIDE), "serve", "--ring-size", "256KiB", "--socket", str(tmp_path / "s"), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "--ring-size 512KiB" in out.stderr, out.stderr


def test_resume_seq_never_goes_backwards_after_a_sequence_rewind(sidecar_factory):
    """Chaos: after the claim word's sequence is forged backwards (position kept),
    resume_seq never goes backwards and never names a delivered frame."""
    hostile = Path(
        os.environ.get("RING_HOSTILE_BIN", REPO / "target" / "debug" / "ring_hostile")
    )
    if not hostile.exists():
        pytest.skip(f"{hostile} missing (cargo build -p ringside-tests --bins)")
    s = sidecar_factory()
    s.load("--rate", "0", "--count", "98", "--topics", "1")
    out = subprocess.run(
        [str(hostile), "forge", "--kind", "seq-backwards", "--socket", str(s.socket)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "FORGED kind=seq-backwards" in out.stdout, out.stdout + out.stderr
    s.load("--rate", "0", "--count", "100", "--topics", "1")
    last_resume, last_frame, frames, lost = 0, None, 0, 0
    with s.channel() as ch:
        stream = s.stub(ch).Subscribe(pb.SubscribeRequest(earliest=True, max_batch_frames=4))
        while frames < 148:
            b = next(stream)
            assert b.resume_seq >= last_resume, (last_resume, b)
            for f in b.frames:
                assert last_frame is None or f.seq > last_frame
                last_frame = f.seq
            if last_frame is not None:
                assert b.resume_seq > last_frame, b
            last_resume = b.resume_seq
            frames += len(b.frames)
            lost += sum(l.frames for l in b.losses)
        stream.cancel()
    assert (frames, lost, last_resume) == (148, 50, 148)
