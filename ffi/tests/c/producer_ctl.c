/*
 * producer_ctl.c: a C producer driven line by line on stdin, for tests that do
 * something to the sidecar between two sends (kill it, restart it with other
 * flags) and then look at the producer's counters.
 *
 *   producer_ctl SOCKET
 *
 * Commands (one per line); every answer is one line on stdout:
 *   send N TOPIC      sends N frames "TOPIC-<i>" with rs_send
 *                     -> "SENT ok=<n> not_connected=<n> other=<n>"
 *   wait-sidecar MS   rs_producer_wait_connected -> "WAIT <rs_status>"
 *   wait-detached MS  polls until no sidecar is connected -> "DETACHED 1|0"
 *   wait-ring-change MS
 *                     polls until the ring id differs from the one seen by the
 *                     last `stats` -> "RING_CHANGED 1|0"
 *   stats             -> "STATS sent=.. lost_ring_replaced=.. reconnects=..
 *                         ring_id=.. sidecar_connected=.. dropped_not_connected=.."
 *   quit              closes the producer and exits 0
 */
#define _POSIX_C_SOURCE 200809L
#include "ringside.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static rs_stats stats_of(const rs_producer *p) {
    rs_stats s = RS_STATS_INIT;
    if (rs_producer_stats(p, &s) != RS_OK) {
        char why[256];
        rs_last_error(why, sizeof why);
        fprintf(stderr, "producer_ctl: rs_producer_stats failed: %s\n", why);
        exit(1);
    }
    return s;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
        return 2;
    }
    rs_producer *p = NULL;
    rs_status rc = rs_producer_connect(argv[1], &p);
    if (rc != RS_OK) {
        fprintf(stderr, "producer_ctl: connect failed: %s\n", rs_strerror(rc));
        return 1;
    }
    uint64_t ring_id = 0;
    char line[512];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char topic[300];
        long n = 0;
        if (sscanf(line, "send %ld %255s", &n, topic) == 2) {
            long ok = 0, not_connected = 0, other = 0;
            for (long i = 0; i < n; i++) {
                char payload[320];
                int len = snprintf(payload, sizeof payload, "%s-%ld", topic, i);
                rc = rs_send(p, topic, payload, (size_t)len);
                if (rc == RS_OK)
                    ok++;
                else if (rc == RS_ERR_NOT_CONNECTED)
                    not_connected++;
                else
                    other++;
            }
            printf("SENT ok=%ld not_connected=%ld other=%ld\n", ok, not_connected, other);
        } else if (sscanf(line, "wait-sidecar %ld", &n) == 1) {
            printf("WAIT %d\n", (int)rs_producer_wait_connected(p, (uint32_t)n));
        } else if (sscanf(line, "wait-detached %ld", &n) == 1) {
            int detached = 0;
            for (long waited = 0; waited <= n; waited += 5) {
                if (!stats_of(p).sidecar_connected) {
                    detached = 1;
                    break;
                }
                sleep_ms(5);
            }
            printf("DETACHED %d\n", detached);
        } else if (sscanf(line, "wait-ring-change %ld", &n) == 1) {
            int changed = 0;
            for (long waited = 0; waited <= n; waited += 5) {
                rs_stats s = stats_of(p);
                if (s.ring_id != ring_id && s.sidecar_connected) {
                    changed = 1;
                    break;
                }
                sleep_ms(5);
            }
            printf("RING_CHANGED %d\n", changed);
        } else if (strncmp(line, "stats", 5) == 0) {
            rs_stats s = stats_of(p);
            ring_id = s.ring_id;
            printf("STATS sent=%" PRIu64 " lost_ring_replaced=%" PRIu64 " reconnects=%" PRIu64
                   " ring_id=%" PRIu64 " sidecar_connected=%d dropped_not_connected=%" PRIu64
                   "\n",
                   s.sent, s.lost_ring_replaced, s.reconnects, s.ring_id,
                   (int)s.sidecar_connected, s.dropped_not_connected);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            fprintf(stderr, "producer_ctl: unknown command: %s", line);
            return 2;
        }
        fflush(stdout);
    }
    rc = rs_producer_close(p);
    return rc == RS_OK ? 0 : 1;
}
