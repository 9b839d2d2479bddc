/*
 * ffi_test.c: exercises every function of ringside.h and every error path
 * that can be provoked from a C program.
 *
 * Usage: ffi_test SOCKET BUSY_SOCKET GARBAGE_SOCKET
 *   SOCKET          a sidecar (ring max payload 4096) that accepts producers;
 *                   $RINGSIDE_SOCKET must name the same socket.
 *   BUSY_SOCKET     a sidecar that admits exactly one producer.
 *   GARBAGE_SOCKET  a listener that answers the handshake with garbage.
 *
 * Every frame that must reach the ring is printed to stdout as
 *   FRAME <topic> <timestamp_ns or -> <payload hex>
 * so the driving test can compare them with what a reader saw. The last line
 * is "OK" on success; any failed check prints "FAIL ..." to stderr and exits 1.
 *
 * Build: gcc -Wall -Wextra -Werror -std=c11 -pthread -I ffi/include \
 *            ffi/tests/c/ffi_test.c -L target/debug -lringside
 */
#include "ringside.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PAYLOAD 4096u
#define THREADS 4
#define PER_THREAD 200

static int checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            char why_[512];                                                            \
            rs_last_error(why_, sizeof why_);                                          \
            fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, why_);                                                      \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define CHECK_RC(call, expected)                                                        \
    do {                                                                                \
        checks++;                                                                       \
        rs_status rc_ = (call);                                                         \
        if (rc_ != (expected)) {                                                        \
            char why_[512];                                                             \
            rs_last_error(why_, sizeof why_);                                           \
            fprintf(stderr, "FAIL %s:%d: %s returned %d (%s), expected %d (%s); "      \
                            "last error: %s\n",                                         \
                    __FILE__, __LINE__, #call, (int)rc_, rs_strerror(rc_), (int)(expected), \
                    rs_strerror(expected), why_);                                       \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* Deterministic payload bytes, including zeros and 0xff. */
static void fill(uint8_t *buf, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(seed * 31u + i * 7u + (i >> 8));
}

/* No explicit timestamp: the library stamps the frame with the current time. */
#define NOW ((const uint64_t *)NULL)

static void print_frame(const char *topic, const uint64_t *ts, const void *data, size_t len) {
    const uint8_t *b = data;
    printf("FRAME %s ", topic);
    if (ts == NOW)
        printf("-");
    else
        printf("%" PRIu64, *ts);
    putchar(' ');
    for (size_t i = 0; i < len; i++) printf("%02x", b[i]);
    putchar('\n');
}

/* Sends one frame that must arrive and records it in the manifest. */
static void send_ok(rs_producer *p, const char *topic, const void *data, size_t len) {
    CHECK_RC(rs_send(p, topic, data, len), RS_OK);
    print_frame(topic, NOW, data, len);
}

static void send_at_ok(rs_producer *p, const char *topic, uint64_t ts, const void *data,
                       size_t len) {
    CHECK_RC(rs_send_at(p, topic, ts, data, len), RS_OK);
    print_frame(topic, &ts, data, len);
}

static rs_stats stats_of(const rs_producer *p) {
    rs_stats s;
    memset(&s, 0xab, sizeof s);
    s.size = sizeof s;
    CHECK_RC(rs_producer_stats(p, &s), RS_OK);
    CHECK(s.size == sizeof s && s.reserved[0] == 0 && s.reserved[1] == 0);
    return s;
}

static size_t last_error(char *buf, size_t len) { return rs_last_error(buf, len); }

/* ---------- threads sharing one handle ---------- */

struct worker {
    rs_producer *p;
    int index;
    int failures;
};

static void worker_payload(uint8_t *buf, size_t len, int index, int i) {
    fill(buf, len, (unsigned)(index * 1000 + i));
}

static size_t worker_len(int i) { return (size_t)(1 + (i * 37) % 300); }

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char topic[32];
    snprintf(topic, sizeof topic, "mt/%d", w->index);
    uint8_t buf[512];
    for (int i = 0; i < PER_THREAD; i++) {
        size_t len = worker_len(i);
        if (i % 4 == 3) {
            /* every fourth frame zero-copy, completed on this thread */
            rs_reservation *r = NULL;
            void *dst = NULL;
            if (rs_reserve(w->p, topic, len, &r, &dst) != RS_OK) {
                w->failures++;
                continue;
            }
            worker_payload(dst, len, w->index, i);
            if (rs_commit(r) != RS_OK) w->failures++;
        } else {
            worker_payload(buf, len, w->index, i);
            if (rs_send(w->p, topic, buf, len) != RS_OK) w->failures++;
        }
    }
    return NULL;
}

/* The last error is per thread: a fresh thread sees none. */
static void *fresh_thread_main(void *arg) {
    size_t *out = arg;
    char buf[64] = "junk";
    out[0] = rs_last_error(buf, sizeof buf);
    out[1] = strlen(buf);
    out[2] = (size_t)(rs_last_error_code() == RS_OK);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SOCKET BUSY_SOCKET GARBAGE_SOCKET\n", argv[0]);
        return 2;
    }
    const char *sock = argv[1];
    const char *busy_sock = argv[2];
    const char *garbage_sock = argv[3];
    char err[512];
    uint8_t data[MAX_PAYLOAD + 1];
    uint64_t expect_sent = 0, expect_bytes = 0, expect_too_large = 0, expect_bad_topic = 0,
             expect_discarded = 0;

    /* ---------- version ---------- */
    {
        uint32_t ma = 99, mi = 99, pa = 99;
        const char *v = rs_version(&ma, &mi, &pa);
        CHECK(v != NULL);
        CHECK(ma == RS_VERSION_MAJOR && mi == RS_VERSION_MINOR && pa == RS_VERSION_PATCH);
        char expect[64];
        snprintf(expect, sizeof expect, "%u.%u.%u", (unsigned)ma, (unsigned)mi, (unsigned)pa);
        CHECK(strcmp(v, expect) == 0);
        CHECK(rs_version(NULL, NULL, NULL) == v);
    }

    /* ---------- rs_strerror: every code has its own static text ---------- */
    {
        const rs_status codes[] = {RS_OK,
                                   RS_ERR_INVALID_ARGUMENT,
                                   RS_ERR_NOT_CONNECTED,
                                   RS_ERR_TOO_LARGE,
                                   RS_ERR_INVALID_TOPIC,
                                   RS_ERR_REFUSED_UID,
                                   RS_ERR_REFUSED_TOO_MANY_PRODUCERS,
                                   RS_ERR_REFUSED_VERSION,
                                   RS_ERR_REFUSED_RING,
                                   RS_ERR_REFUSED_SHUTTING_DOWN,
                                   RS_ERR_PROTOCOL,
                                   RS_ERR_IO,
                                   RS_ERR_UNSUPPORTED,
                                   RS_ERR_PANIC,
                                   RS_ERR_BAD_RING,
                                   RS_ERR_BAD_HANDLE,
                                   RS_ERR_FORKED,
                                   RS_ERR_HANDSHAKE_TIMEOUT,
                                   RS_ERR_NOT_RINGSIDE,
                                   RS_ERR_HANDLE_LIMIT};
        const size_t n = sizeof codes / sizeof codes[0];
        const char *unknown = rs_strerror(12345);
        CHECK(unknown != NULL && strlen(unknown) > 0);
        CHECK(rs_strerror(-1000) == unknown);
        for (size_t i = 0; i < n; i++) {
            const char *s = rs_strerror(codes[i]);
            CHECK(s != NULL && strlen(s) > 0 && s != unknown);
            CHECK(i == 0 || codes[i] < 0);
            for (size_t j = 0; j < i; j++) {
                CHECK(codes[i] != codes[j]);
                CHECK(strcmp(s, rs_strerror(codes[j])) != 0);
            }
        }
    }

    /* ---------- last error before any failure ---------- */
    strcpy(err, "junk");
    CHECK(last_error(err, sizeof err) == 0 && err[0] == '\0');
    CHECK(rs_last_error_code() == RS_OK);
    CHECK(last_error(NULL, 0) == 0);

    /* ---------- connect: argument errors ---------- */
    rs_producer *p = (rs_producer *)&p; /* junk that must be overwritten */
    CHECK_RC(rs_producer_connect(sock, NULL), RS_ERR_INVALID_ARGUMENT);
    CHECK(rs_last_error_code() == RS_ERR_INVALID_ARGUMENT);
    CHECK(last_error(err, sizeof err) > 0 && strstr(err, "out") != NULL);
    CHECK_RC(rs_producer_connect("", &p), RS_ERR_INVALID_ARGUMENT);
    CHECK(p == NULL);
    CHECK_RC(rs_producer_close(NULL), RS_OK); /* no-op */

    /* ---------- connect via $RINGSIDE_SOCKET (NULL path) and explicitly ---------- */
    rs_producer *penv = NULL;
    CHECK_RC(rs_producer_connect(NULL, &penv), RS_OK);
    CHECK(penv != NULL);
    CHECK(stats_of(penv).connected);
    send_ok(penv, "env/hello", "via env", 7);
    rs_producer_close(penv);

    CHECK_RC(rs_producer_connect(sock, &p), RS_OK);
    CHECK(p != NULL);
    CHECK_RC(rs_producer_wait_connected(p, 5000), RS_OK);
    CHECK_RC(rs_producer_wait_connected(NULL, 1), RS_ERR_INVALID_ARGUMENT);
    CHECK(rs_producer_connection_error(p, err, sizeof err) == 0 && err[0] == '\0');
    CHECK(rs_producer_connection_error(NULL, err, sizeof err) == 0);
    {
        rs_stats s = stats_of(p);
        CHECK(s.connected && s.sidecar_connected);
        CHECK(s.ring_id != 0);
        CHECK(s.reconnects == 0);
        CHECK(s.max_payload == (int64_t)MAX_PAYLOAD);
        CHECK(s.producer_id >= 0);
        CHECK(s.sent == 0 && s.sent_bytes == 0 && s.dropped_not_connected == 0 &&
              s.dropped_too_large == 0 && s.dropped_invalid_topic == 0 && s.discarded == 0 &&
              s.lost_ring_replaced == 0);
    }

    /* ---------- rs_send / rs_send_at: frames that must arrive ---------- */
    static const size_t sizes[] = {0, 1, 7, 8, 9, 63, 64, 65, 1000, MAX_PAYLOAD - 1, MAX_PAYLOAD};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fill(data, sizes[i], (unsigned)i);
        send_ok(p, "c/sizes", data, sizes[i]);
        expect_sent++;
        expect_bytes += sizes[i];
    }
    send_ok(p, "c/null-empty", NULL, 0); /* NULL data is fine when len is 0 */
    expect_sent++;
    fill(data, 100, 42);
    send_at_ok(p, "c/at", 1234567890123456789ull, data, 100);
    send_at_ok(p, "c/at", 0, data, 1);
    send_at_ok(p, "c/at", UINT64_MAX, data, 2);
    expect_sent += 3;
    expect_bytes += 103;
    send_ok(p, "temp\xc3\xa9rature/\xc2\xb0" "C", "21.5", 4); /* UTF-8 topic */
    expect_sent++;
    expect_bytes += 4;
    {
        char topic[RS_MAX_TOPIC_LEN + 2];
        memset(topic, 't', RS_MAX_TOPIC_LEN);
        topic[RS_MAX_TOPIC_LEN] = '\0'; /* exactly the maximum: fine */
        send_ok(p, topic, "max topic", 9);
        expect_sent++;
        expect_bytes += 9;
    }

    /* ---------- rs_send / rs_send_at: error paths ---------- */
    CHECK_RC(rs_send(NULL, "x", "a", 1), RS_ERR_INVALID_ARGUMENT);
    CHECK(last_error(err, sizeof err) > 0 && strstr(err, "producer") != NULL);
    CHECK_RC(rs_send(p, NULL, "a", 1), RS_ERR_INVALID_ARGUMENT);
    CHECK(last_error(err, sizeof err) > 0 && strstr(err, "topic") != NULL);
    CHECK_RC(rs_send(p, "x", NULL, 1), RS_ERR_INVALID_ARGUMENT);
    CHECK(last_error(err, sizeof err) > 0 && strstr(err, "data") != NULL);
    CHECK_RC(rs_send(p, "x", data, SIZE_MAX), RS_ERR_INVALID_ARGUMENT);
    CHECK_RC(rs_send_at(NULL, "x", 1, "a", 1), RS_ERR_INVALID_ARGUMENT);
    CHECK_RC(rs_send_at(p, NULL, 1, "a", 1), RS_ERR_INVALID_ARGUMENT);
    CHECK_RC(rs_send_at(p, "x", 1, NULL, 1), RS_ERR_INVALID_ARGUMENT);

    CHECK_RC(rs_send(p, "c/big", data, MAX_PAYLOAD + 1), RS_ERR_TOO_LARGE);
    expect_too_large++;
    CHECK(rs_last_error_code() == RS_ERR_TOO_LARGE);
    {
        size_t n = last_error(err, sizeof err);
        CHECK(n == strlen(err) && n > 0);
        CHECK(strstr(err, "4097") != NULL && strstr(err, "4096") != NULL);
        /* snprintf-like truncation and length query */
        char small[8];
        CHECK(last_error(small, sizeof small) == n);
        CHECK(strlen(small) == sizeof small - 1 && strncmp(small, err, 7) == 0);
        CHECK(last_error(NULL, 0) == n);
        CHECK(last_error(NULL, 100) == n);
        small[0] = 'z';
        CHECK(last_error(small, 0) == n && small[0] == 'z');
        CHECK(last_error(small, 1) == n && small[0] == '\0');
    }
    CHECK_RC(rs_send_at(p, "c/big", 5, data, MAX_PAYLOAD + 1), RS_ERR_TOO_LARGE);
    expect_too_large++;
    {
        char topic[RS_MAX_TOPIC_LEN + 2];
        memset(topic, 't', RS_MAX_TOPIC_LEN + 1);
        topic[RS_MAX_TOPIC_LEN + 1] = '\0'; /* one byte too long */
        CHECK_RC(rs_send(p, topic, "a", 1), RS_ERR_INVALID_TOPIC);
        CHECK(last_error(err, sizeof err) > 0 && strstr(err, "256") != NULL);
        expect_bad_topic++;
        CHECK_RC(rs_send_at(p, topic, 1, "a", 1), RS_ERR_INVALID_TOPIC);
        expect_bad_topic++;
    }
    CHECK_RC(rs_send(p, "", "a", 1), RS_ERR_INVALID_TOPIC);
    expect_bad_topic++;
    /* not UTF-8: rejected at the boundary, before the producer counts it */
    CHECK_RC(rs_send(p, "bad\xff\xfe", "a", 1), RS_ERR_INVALID_TOPIC);
    CHECK(last_error(err, sizeof err) > 0 && strstr(err, "UTF-8") != NULL);

    /* ---------- zero-copy reserve / commit / discard ---------- */
    {
        rs_reservation *r = NULL;
        void *buf = NULL;
        CHECK_RC(rs_reserve(p, "zc/commit", 300, &r, &buf), RS_OK);
        CHECK(r != NULL && buf != NULL);
        fill(buf, 300, 7);
        CHECK_RC(rs_commit(r), RS_OK);
        fill(data, 300, 7);
        print_frame("zc/commit", NOW, data, 300);
        expect_sent++;
        expect_bytes += 300;

        CHECK_RC(rs_reserve(p, "zc/commit", MAX_PAYLOAD, &r, &buf), RS_OK);
        fill(buf, MAX_PAYLOAD, 8);
        CHECK_RC(rs_commit(r), RS_OK);
        fill(data, MAX_PAYLOAD, 8);
        print_frame("zc/commit", NOW, data, MAX_PAYLOAD);
        expect_sent++;
        expect_bytes += MAX_PAYLOAD;

        CHECK_RC(rs_reserve(p, "zc/empty", 0, &r, &buf), RS_OK);
        CHECK(r != NULL && buf != NULL);
        CHECK_RC(rs_commit(r), RS_OK);
        print_frame("zc/empty", NOW, NULL, 0);
        expect_sent++;

        /* a reservation with its own timestamp */
        CHECK_RC(rs_reserve(p, "zc/stamped", 16, &r, &buf), RS_OK);
        CHECK_RC(rs_reservation_set_timestamp(r, 777), RS_OK);
        fill(buf, 16, 16);
        CHECK_RC(rs_commit(r), RS_OK);
        fill(data, 16, 16);
        {
            const uint64_t ts = 777;
            print_frame("zc/stamped", &ts, data, 16);
        }
        expect_sent++;
        expect_bytes += 16;
        CHECK_RC(rs_reservation_set_timestamp(NULL, 1), RS_ERR_INVALID_ARGUMENT);

        CHECK_RC(rs_reserve(p, "zc/discard", 50, &r, &buf), RS_OK);
        memset(buf, 0xee, 50);
        CHECK_RC(rs_discard(r), RS_OK); /* must never reach a reader */
        expect_discarded++;

        /* errors; out-parameters are cleared on failure */
        r = (rs_reservation *)&r;
        buf = &buf;
        CHECK_RC(rs_reserve(NULL, "x", 1, &r, &buf), RS_ERR_INVALID_ARGUMENT);
        CHECK(r == NULL && buf == NULL);
        CHECK_RC(rs_reserve(p, NULL, 1, &r, &buf), RS_ERR_INVALID_ARGUMENT);
        buf = &buf;
        CHECK_RC(rs_reserve(p, "x", 1, NULL, &buf), RS_ERR_INVALID_ARGUMENT);
        CHECK(buf == NULL);
        r = (rs_reservation *)&r;
        CHECK_RC(rs_reserve(p, "x", 1, &r, NULL), RS_ERR_INVALID_ARGUMENT);
        CHECK(r == NULL);
        r = (rs_reservation *)&r;
        buf = &buf;
        CHECK_RC(rs_reserve(p, "x", MAX_PAYLOAD + 1, &r, &buf), RS_ERR_TOO_LARGE);
        CHECK(r == NULL && buf == NULL);
        expect_too_large++;
        CHECK_RC(rs_reserve(p, "x", SIZE_MAX, &r, &buf), RS_ERR_TOO_LARGE);
        expect_too_large++;
        CHECK_RC(rs_reserve(p, "", 1, &r, &buf), RS_ERR_INVALID_TOPIC);
        expect_bad_topic++;
        CHECK_RC(rs_reserve(p, "\xc3", 1, &r, &buf), RS_ERR_INVALID_TOPIC);
        CHECK_RC(rs_commit(NULL), RS_ERR_INVALID_ARGUMENT);
        CHECK(last_error(err, sizeof err) > 0 && strstr(err, "reservation") != NULL);
        CHECK_RC(rs_discard(NULL), RS_ERR_INVALID_ARGUMENT);
    }

    /* ---------- counters ---------- */
    {
        rs_stats s = stats_of(p);
        CHECK(s.sent == expect_sent);
        CHECK(s.sent_bytes == expect_bytes);
        CHECK(s.dropped_too_large == expect_too_large);
        CHECK(s.dropped_invalid_topic == expect_bad_topic);
        CHECK(s.discarded == expect_discarded);
        CHECK(s.dropped_not_connected == 0);
        CHECK(s.connected);
        rs_stats junk = RS_STATS_INIT;
        CHECK_RC(rs_producer_stats(NULL, &junk), RS_ERR_INVALID_ARGUMENT);
        CHECK_RC(rs_producer_stats(p, NULL), RS_ERR_INVALID_ARGUMENT);
    }

    /* ---------- one handle shared by threads ---------- */
    {
        pthread_t th[THREADS];
        struct worker w[THREADS];
        for (int t = 0; t < THREADS; t++) {
            w[t] = (struct worker){.p = p, .index = t, .failures = 0};
            CHECK(pthread_create(&th[t], NULL, worker_main, &w[t]) == 0);
        }
        for (int t = 0; t < THREADS; t++) {
            CHECK(pthread_join(th[t], NULL) == 0);
            CHECK(w[t].failures == 0);
        }
        uint8_t buf[512];
        for (int t = 0; t < THREADS; t++) {
            char topic[32];
            snprintf(topic, sizeof topic, "mt/%d", t);
            for (int i = 0; i < PER_THREAD; i++) {
                size_t len = worker_len(i);
                worker_payload(buf, len, t, i);
                print_frame(topic, NOW, buf, len);
                expect_sent++;
                expect_bytes += len;
            }
        }
        rs_stats s = stats_of(p);
        CHECK(s.sent == expect_sent && s.sent_bytes == expect_bytes);
    }

    /* ---------- last error is per thread ---------- */
    {
        CHECK_RC(rs_send(p, "", "a", 1), RS_ERR_INVALID_TOPIC); /* this thread has an error */
        size_t out[3] = {99, 99, 99};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, fresh_thread_main, out) == 0);
        CHECK(pthread_join(th, NULL) == 0);
        CHECK(out[0] == 0 && out[1] == 0 && out[2] == 1);
        CHECK(rs_last_error_code() == RS_ERR_INVALID_TOPIC);
    }

    /* ---------- a reservation outlives the handle it came from ---------- */
    {
        rs_producer *q = NULL;
        CHECK_RC(rs_producer_connect(sock, &q), RS_OK);
        rs_reservation *r = NULL;
        void *buf = NULL;
        CHECK_RC(rs_reserve(q, "zc/after-close", 64, &r, &buf), RS_OK);
        rs_producer_close(q); /* the reservation keeps the producer alive */
        fill(buf, 64, 99);
        CHECK_RC(rs_commit(r), RS_OK);
        fill(data, 64, 99);
        print_frame("zc/after-close", NOW, data, 64);

        CHECK_RC(rs_producer_connect(sock, &q), RS_OK);
        CHECK_RC(rs_reserve(q, "zc/after-close", 64, &r, &buf), RS_OK);
        rs_producer_close(q);
        CHECK_RC(rs_discard(r), RS_OK);
    }

    /* ---------- no sidecar: connect succeeds, sends are counted drops ---------- */
    {
        char missing[1024];
        snprintf(missing, sizeof missing, "%s.missing", sock);
        rs_producer *q = NULL;
        CHECK_RC(rs_producer_connect(missing, &q), RS_OK);
        CHECK(q != NULL);
        rs_stats s = stats_of(q);
        CHECK(!s.connected && !s.sidecar_connected);
        CHECK(s.max_payload == -1 && s.producer_id == -1 && s.ring_id == 0);
        CHECK_RC(rs_producer_wait_connected(q, 30), RS_ERR_NOT_CONNECTED);
        CHECK(rs_producer_connection_error(q, err, sizeof err) > 0 && strlen(err) > 0);
        CHECK_RC(rs_send(q, "nc/x", "a", 1), RS_ERR_NOT_CONNECTED);
        CHECK(last_error(err, sizeof err) > 0 && strstr(err, "not connected") != NULL);
        CHECK_RC(rs_send_at(q, "nc/x", 1, "a", 1), RS_ERR_NOT_CONNECTED);
        rs_reservation *r = (rs_reservation *)&r;
        void *buf = &buf;
        CHECK_RC(rs_reserve(q, "nc/x", 1, &r, &buf), RS_ERR_NOT_CONNECTED);
        CHECK(r == NULL && buf == NULL);
        s = stats_of(q);
        CHECK(s.dropped_not_connected == 3 && s.sent == 0);
        rs_producer_close(q);
    }

    /* ---------- refused by the sidecar: too many producers ---------- */
    {
        rs_producer *a = NULL, *b = (rs_producer *)&b;
        CHECK_RC(rs_producer_connect(busy_sock, &a), RS_OK);
        CHECK(stats_of(a).connected);
        CHECK_RC(rs_producer_connect(busy_sock, &b), RS_ERR_REFUSED_TOO_MANY_PRODUCERS);
        CHECK(b == NULL);
        CHECK(last_error(err, sizeof err) > 0 && strstr(err, "refused") != NULL);
        rs_producer_close(a);
    }

    /* ---------- a peer that does not speak the protocol ---------- */
    {
        rs_producer *q = (rs_producer *)&q;
        CHECK_RC(rs_producer_connect(garbage_sock, &q), RS_ERR_PROTOCOL);
        CHECK(q == NULL);
        CHECK(last_error(err, sizeof err) > 0);
    }

    /* ---------- a socket path the kernel cannot take ---------- */
    {
        char longpath[300];
        memset(longpath, 'a', sizeof longpath - 1);
        longpath[0] = '/';
        longpath[sizeof longpath - 1] = '\0';
        rs_producer *q = (rs_producer *)&q;
        CHECK_RC(rs_producer_connect(longpath, &q), RS_ERR_INVALID_ARGUMENT);
        CHECK(q == NULL);
        CHECK(last_error(err, sizeof err) > 0 && strstr(err, "too long") != NULL);
    }

    /* ---------- a panic inside the library is caught ---------- */
    CHECK_RC(rs_selftest_panic(), RS_ERR_PANIC);
    CHECK(last_error(err, sizeof err) > 0 && strstr(err, "deliberate") != NULL);
    CHECK(rs_last_error_code() == RS_ERR_PANIC);
    /* and the library still works afterwards */
    send_ok(p, "c/after-panic", "still fine", 10);

    rs_producer_close(p);
    fflush(stdout);
    printf("OK %d checks\n", checks);
    return 0;
}
