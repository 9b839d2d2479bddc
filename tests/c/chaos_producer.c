/*
 * chaos_producer.c: the C producer of the chaos harness (tests/tests/chaos.rs), linked
 * against libringside (ffi/include/ringside.h).
 *
 *   chaos_producer SOCKET INDEX BURST PAUSE_US
 *
 * Writes self-checking payloads on topic "ring.test": the layout of
 * tests/src/ring_support.rs (encode_payload) with magic "RSCF" and an FNV-1a 64 checksum
 * instead of xxh3 (decoded by the same decode_payload). Even bursts copy with rs_send, odd
 * bursts fill the frame in place with rs_reserve/rs_commit. Speaks the chaos producer's
 * line protocol (tests/src/chaos_support.rs): reads "park" / "stop" on stdin, prints
 * "CHAOS CONNECTED", "CHAOS STAT ..." every 200 ms and at the end, "CHAOS ERROR ...",
 * and "PARKED" when it holds a reserved frame it will never commit (then it hangs until
 * SIGKILLed).
 */
#include "ringside.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TOPIC "ring.test"
#define MIN_PAYLOAD 32
#define MAX_EXTRA 200

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t payload_len(uint32_t producer, uint64_t seq) {
    return MIN_PAYLOAD + (size_t)((seq * 37u + (uint64_t)producer * 11u) % (MAX_EXTRA + 1));
}

static void put_le(uint8_t *out, uint64_t v, int n) {
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void encode_payload(uint8_t *out, size_t len, uint32_t producer, uint64_t seq) {
    memcpy(out, "RSCF", 4);
    put_le(out + 4, producer, 4);
    put_le(out + 8, seq, 8);
    out[16] = 0;
    out[17] = out[18] = out[19] = 0xA5;
    put_le(out + 20, (uint64_t)len, 4);
    uint64_t x = seq ^ ((uint64_t)producer << 48) ^ 0x9E3779B97F4A7C15ull;
    for (size_t i = 24; i < len - 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (uint8_t)x;
    }
    put_le(out + len - 8, fnv1a64(out, len - 8), 8);
}

struct stat_line {
    uint32_t index;
    uint64_t sent, max_ns, calls, blocked, preempted;
};

static void print_stat(const rs_producer *p, const struct stat_line *s) {
    rs_stats st = RS_STATS_INIT;
    uint64_t nc = 0;
    if (rs_producer_stats(p, &st) == RS_OK) nc = st.dropped_not_connected;
    printf("CHAOS STAT index=%u sent=%llu max_ns=%llu p999_ns=0 nc=%llu calls=%llu blocked=%llu "
           "preempted=%llu\n",
           s->index, (unsigned long long)s->sent, (unsigned long long)s->max_ns,
           (unsigned long long)nc, (unsigned long long)s->calls, (unsigned long long)s->blocked,
           (unsigned long long)s->preempted);
    fflush(stdout);
}

static void switches(uint64_t *vol, uint64_t *invol) {
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        *vol = (uint64_t)ru.ru_nvcsw;
        *invol = (uint64_t)ru.ru_nivcsw;
    } else {
        *vol = *invol = 0;
    }
}

static void fail(const char *what, rs_status rc) {
    char detail[256];
    rs_last_error(detail, sizeof detail);
    printf("CHAOS ERROR %s: %s (%s)\n", what, rs_strerror(rc), detail);
    fflush(stdout);
    exit(1);
}

/* Reads pending stdin commands without blocking; returns 1 on "stop" or EOF. */
static int poll_commands(int *park) {
    static char line[256];
    static size_t have = 0;
    for (;;) {
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        if (poll(&pfd, 1, 0) <= 0) return 0;
        ssize_t n = read(0, line + have, sizeof line - 1 - have);
        if (n <= 0) return 1;
        have += (size_t)n;
        line[have] = 0;
        char *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = 0;
            if (strcmp(line, "park") == 0) *park = 1;
            if (strcmp(line, "stop") == 0) return 1;
            size_t rest = have - (size_t)(nl + 1 - line);
            memmove(line, nl + 1, rest);
            have = rest;
            line[have] = 0;
        }
        if (have == sizeof line - 1) have = 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: chaos_producer SOCKET INDEX BURST PAUSE_US\n");
        return 2;
    }
    struct stat_line s = {0};
    s.index = (uint32_t)strtoul(argv[2], NULL, 10);
    long burst = strtol(argv[3], NULL, 10);
    long pause_us = strtol(argv[4], NULL, 10);

    rs_producer *p = NULL;
    rs_status rc = rs_producer_connect(argv[1], &p);
    if (rc != RS_OK) fail("connect", rc);
    (void)rs_producer_wait_connected(p, 5000);
    printf("CHAOS CONNECTED index=%u\n", s.index);
    fflush(stdout);

    uint8_t buf[MIN_PAYLOAD + MAX_EXTRA];
    uint64_t seq = 0, bursts = 0, last_stat = now_ns();
    int park = 0;
    while (!poll_commands(&park)) {
        uint64_t vol0, invol0, vol1, invol1;
        int in_place = (bursts++ & 1) != 0;
        switches(&vol0, &invol0);
        for (long i = 0; i < burst; i++) {
            size_t len = payload_len(s.index, seq);
            if (park) {
                /* Claim a frame and never commit it: the harness SIGKILLs us now. */
                rs_reservation *r = NULL;
                void *dst = NULL;
                rc = rs_reserve(p, TOPIC, len, &r, &dst);
                if (rc != RS_OK) fail("reserve (park)", rc);
                encode_payload(dst, len, s.index, seq);
                printf("PARKED\n");
                fflush(stdout);
                for (;;) pause();
            }
            uint64_t ns;
            if (in_place) {
                /* Timed: rs_reserve and rs_commit, not the encoding in between. */
                rs_reservation *r = NULL;
                void *dst = NULL;
                uint64_t t0 = now_ns();
                rc = rs_reserve(p, TOPIC, len, &r, &dst);
                ns = now_ns() - t0;
                if (rc == RS_OK) {
                    encode_payload(dst, len, s.index, seq);
                    t0 = now_ns();
                    rc = rs_commit(r);
                    ns += now_ns() - t0;
                }
            } else {
                encode_payload(buf, len, s.index, seq);
                uint64_t t0 = now_ns();
                rc = rs_send(p, TOPIC, buf, len);
                ns = now_ns() - t0;
            }
            s.calls++;
            if (ns > s.max_ns) s.max_ns = ns;
            if (rc == RS_ERR_NOT_CONNECTED) continue; /* counted by the library (nc=) */
            if (rc != RS_OK) fail(in_place ? "reserve/commit" : "send", rc);
            seq++;
        }
        switches(&vol1, &invol1);
        s.blocked += vol1 - vol0;
        s.preempted += invol1 - invol0;
        s.sent = seq;
        if (now_ns() - last_stat >= 200000000ull) {
            print_stat(p, &s);
            last_stat = now_ns();
        }
        usleep((useconds_t)pause_us);
    }
    print_stat(p, &s);
    rs_producer_close(p);
    return 0;
}
