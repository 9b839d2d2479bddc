/*
 * producer.c: a small C program that sends telemetry through ringside.
 *
 *   producer [SOCKET [COUNT]]
 *
 * SOCKET defaults to $RINGSIDE_SOCKET, then /tmp/ringside.sock; COUNT to 10.
 * Each sample is sent twice: once copied in with rs_send, once written in
 * place with rs_reserve/rs_commit. Every frame sent is echoed to stdout as
 * "sent <topic> <payload>".
 *
 * Build (from the repository root, after `cargo build -p ringside-ffi`):
 *   gcc -Wall -Wextra -Werror -std=c11 -I ffi/include ffi/examples/producer.c \
 *       -L target/debug -lringside -Wl,-rpath,$PWD/target/debug -o producer
 * or, with ringside.pc on PKG_CONFIG_PATH:
 *   gcc -Wall -Wextra -Werror -std=c11 ffi/examples/producer.c \
 *       $(pkg-config --cflags --libs ringside) -o producer
 */
#include "ringside.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, rs_status rc) {
    char detail[256];
    rs_last_error(detail, sizeof detail);
    fprintf(stderr, "producer: %s failed: %s (%s)\n", what, rs_strerror(rc), detail);
    return 1;
}

int main(int argc, char **argv) {
    const char *socket_path = argc > 1 ? argv[1] : NULL; /* NULL: env or default */
    long count = argc > 2 ? strtol(argv[2], NULL, 10) : 10;

    uint32_t major = 0;
    const char *version = rs_version(&major, NULL, NULL);
    if (major != RS_VERSION_MAJOR) {
        fprintf(stderr, "producer: header %d.x but library %s\n", RS_VERSION_MAJOR, version);
        return 1;
    }

    rs_producer *p = NULL;
    rs_status rc = rs_producer_connect(socket_path, &p);
    if (rc != RS_OK) return fail("rs_producer_connect", rc);

    int exit_code = 0;
    for (long i = 0; i < count && exit_code == 0; i++) {
        /* copy in: format the sample, then send it */
        char sample[128];
        int n = snprintf(sample, sizeof sample, "{\"host\":\"demo\",\"seq\":%ld,\"load\":%ld.%02ld}",
                         i, (i * 37) % 4, (i * 13) % 100);
        rc = rs_send(p, "cpu/load", sample, (size_t)n);
        if (rc == RS_ERR_NOT_CONNECTED) {
            /* no sidecar (yet): the frame was dropped and counted; keep going */
            continue;
        }
        if (rc != RS_OK) {
            exit_code = fail("rs_send", rc);
            break;
        }
        printf("sent cpu/load %s\n", sample);

        /* zero-copy: format straight into the ring */
        rs_reservation *r = NULL;
        void *buf = NULL;
        n = snprintf(sample, sizeof sample, "{\"seq\":%ld,\"free_kib\":%ld}", i, 1000000 - i * 17);
        rc = rs_reserve(p, "mem/free", (size_t)n, &r, &buf);
        if (rc != RS_OK) {
            exit_code = fail("rs_reserve", rc);
            break;
        }
        memcpy(buf, sample, (size_t)n); /* a real producer would encode in place */
        rc = rs_commit(r);
        if (rc != RS_OK) {
            exit_code = fail("rs_commit", rc);
            break;
        }
        printf("sent mem/free %s\n", sample);
    }

    rs_stats stats = RS_STATS_INIT;
    rc = rs_producer_stats(p, &stats);
    if (rc != RS_OK)
        exit_code = fail("rs_producer_stats", rc);
    else
        fprintf(stderr,
                "producer: libringside %s, producer id %lld, connected %d: sent %llu frames "
                "(%llu bytes), dropped %llu not connected, %llu too large\n",
                version, (long long)stats.producer_id, (int)stats.connected,
                (unsigned long long)stats.sent, (unsigned long long)stats.sent_bytes,
                (unsigned long long)stats.dropped_not_connected,
                (unsigned long long)stats.dropped_too_large);
    rc = rs_producer_close(p);
    if (rc != RS_OK && exit_code == 0) exit_code = fail("rs_producer_close", rc);
    return exit_code;
}
