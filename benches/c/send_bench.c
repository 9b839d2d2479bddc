/*
 * send_bench.c: times one way of writing a frame of one payload size in batches and prints
 * the median nanoseconds per frame, for benches/src/bin/ffi_send.rs, which runs it next to
 * the same loops in Rust (Producer::send, Producer::reserve + commit) against the same ring,
 * in the same run.
 *
 *   send_bench SOCKET PAYLOAD_BYTES BATCHES BATCH_SIZE [send|reserve]
 *
 * send:    rs_send(p, topic, payload, len)                  (copy in; the default)
 * reserve: rs_reserve(p, topic, len, &r, &buf); memcpy(buf, payload, len); rs_commit(r)
 *
 * Prints "median_ns <float>" on success.
 */
#define _POSIX_C_SOURCE 200809L
#include "ringside.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One frame, copied in or written in place. */
static inline rs_status write_one(rs_producer *p, const unsigned char *payload, size_t len,
                                  int zero_copy) {
    if (!zero_copy) return rs_send(p, "telemetry", payload, len);
    rs_reservation *r;
    void *buf;
    rs_status rc = rs_reserve(p, "telemetry", len, &r, &buf);
    if (rc != RS_OK) return rc;
    memcpy(buf, payload, len);
    return rs_commit(r);
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: send_bench SOCKET PAYLOAD_BYTES BATCHES BATCH_SIZE [send|reserve]\n");
        return 2;
    }
    int zero_copy = argc == 6 && strcmp(argv[5], "reserve") == 0;
    if (argc == 6 && !zero_copy && strcmp(argv[5], "send") != 0) {
        fprintf(stderr, "send_bench: mode must be send or reserve\n");
        return 2;
    }
    const char *socket_path = argv[1];
    size_t payload_len = (size_t)strtoul(argv[2], NULL, 10);
    long batches = strtol(argv[3], NULL, 10);
    long batch_size = strtol(argv[4], NULL, 10);
    if (payload_len == 0 || payload_len > 65536 || batches < 1 || batches > 1000 || batch_size < 1) {
        fprintf(stderr, "send_bench: arguments out of range\n");
        return 2;
    }
    struct rs_producer *p = NULL;
    rs_status rc = rs_producer_connect(socket_path, &p);
    if (rc != RS_OK || rs_producer_wait_connected(p, 5000) != RS_OK) {
        fprintf(stderr, "send_bench: connect failed: %s\n", rs_strerror(rc));
        rs_producer_close(p);
        return 1;
    }
    unsigned char *payload = malloc(payload_len);
    double *per_send = malloc((size_t)batches * sizeof *per_send);
    if (payload == NULL || per_send == NULL) {
        fprintf(stderr, "send_bench: out of memory\n");
        return 1;
    }
    memset(payload, 0x5a, payload_len);
    /* Warm-up: one batch not timed. */
    for (long i = 0; i < batch_size; i++) {
        if (write_one(p, payload, payload_len, zero_copy) != RS_OK) {
            char why[256];
            rs_last_error(why, sizeof why);
            fprintf(stderr, "send_bench: write failed: %s\n", why);
            return 1;
        }
    }
    for (long b = 0; b < batches; b++) {
        double start = now_ns();
        for (long i = 0; i < batch_size; i++) {
            write_one(p, payload, payload_len, zero_copy);
        }
        per_send[b] = (now_ns() - start) / (double)batch_size;
    }
    qsort(per_send, (size_t)batches, sizeof *per_send, cmp_double);
    printf("median_ns %.2f\n", per_send[batches / 2]);
    free(per_send);
    free(payload);
    rs_producer_close(p);
    return 0;
}
