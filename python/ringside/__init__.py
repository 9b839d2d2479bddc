"""ringside for Python: a producer that writes frames straight into the sidecar's
shared-memory ring (native, over the Rust `ringside-client`), and a subscriber that reads
them back over gRPC and resumes by itself.

    import ringside

    producer = ringside.Producer()            # $RINGSIDE_SOCKET, else /tmp/ringside.sock
    producer.send("metrics", b"...")           # True: published; False: no sidecar yet
    with producer.reserve("metrics", 64) as buf:
        buf[:5] = b"hello"                     # written in place, committed on exit

    for item in ringside.subscribe("http://127.0.0.1:50051", topics=["metrics"]):
        ...                                    # ringside.Frame or ringside.Loss

See python/README.md.
"""

from ringside._native import (
    DEFAULT_SOCKET_PATH,
    MAX_TOPIC_LEN,
    SOCKET_ENV,
    ConnectError,
    Producer,
    ProducerStats,
    RefusedError,
    Reservation,
    RingsideError,
    __version__,
    default_socket_path,
)
from ringside._resume import (
    Frame,
    Gap,
    Loss,
    LossReason,
    RingReplaced,
    SubscribeError,
    Timestamp,
)
from ringside._subscribe import Subscription, subscribe

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "MAX_TOPIC_LEN",
    "SOCKET_ENV",
    "ConnectError",
    "Frame",
    "Gap",
    "Loss",
    "LossReason",
    "Producer",
    "ProducerStats",
    "RefusedError",
    "Reservation",
    "RingReplaced",
    "RingsideError",
    "SubscribeError",
    "Subscription",
    "Timestamp",
    "__version__",
    "default_socket_path",
    "subscribe",
]
