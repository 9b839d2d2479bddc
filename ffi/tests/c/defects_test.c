/*
 * defects_test.c: one C test per defect found when a new C user tried the
 * library (issue 12, section 3). Each case is a subcommand, run by the driver
 * in tests/tests/ffi_c_programs.rs as its own process, so a crash shows up as
 * that case failing:
 *
 *   defects_test CASE ARGS...
 *
 *   use-after-close SOCKET      rs_send/rs_producer_stats/... on a closed handle
 *   double-close SOCKET         rs_producer_close twice
 *   double-commit SOCKET        rs_commit/rs_discard twice on one reservation
 *   bad-handles                 garbage and mismatched handles
 *   reserve-no-malloc SOCKET    rs_reserve+rs_commit (and rs_send) never call malloc
 *                               (build with -DRS_TEST_COUNT_ALLOCATIONS)
 *   reserve-null-out SOCKET     rs_reserve(p, t, n, NULL, &buf) sets buf to NULL
 *   handshake-timeout SOCKET    a peer that accepts and never answers
 *   backlog-full PATH           a listener that never accepts (creates it at PATH)
 *   not-ringside SOCKET         a SOCK_STREAM socket at the path
 *   wait-text SOCKET            rs_producer_wait_connected's error text (no sidecar)
 *   fork SOCKET                 a child using its parent's handle after fork()
 *   stats-size SOCKET           rs_stats grows without breaking the ABI
 *   handle-limit SOCKET         more outstanding reservations than the pool holds
 *
 * Prints "OK <case>" and exits 0 on success; prints "FAIL ..." to stderr and
 * exits 1 otherwise.
 */
#define _GNU_SOURCE
#include "ringside.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------- counting allocator (interposes malloc for the whole process) ---------- */

#ifdef RS_TEST_COUNT_ALLOCATIONS
/* Built only for reserve-no-malloc: the other cases also run under valgrind, which must
 * see the real malloc. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* malloc, calloc, realloc, memalign calls made by this thread (the producer's background
 * thread allocates when it reconnects; what is measured is the calling thread's calls). */
static _Thread_local long allocations;

void *malloc(size_t n) {
    allocations++;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m) {
    allocations++;
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n) {
    allocations++;
    return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }
int posix_memalign(void **out, size_t align, size_t n) {
    allocations++;
    void *p = __libc_memalign(align, n);
    if (p == NULL) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
void *aligned_alloc(size_t align, size_t n) {
    allocations++;
    return __libc_memalign(align, n);
}
void *memalign(size_t align, size_t n) {
    allocations++;
    return __libc_memalign(align, n);
}
#endif

/* ---------- checks ---------- */

static const char *test_case = "?";

#define FAIL(...)                                                      \
    do {                                                               \
        char why_[512];                                                \
        rs_last_error(why_, sizeof why_);                              \
        fprintf(stderr, "FAIL %s (%s:%d): ", test_case, __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                  \
        fprintf(stderr, " (last error: %s)\n", why_);                  \
        exit(1);                                                       \
    } while (0)

#define CHECK(cond)                             \
    do {                                        \
        if (!(cond)) FAIL("%s", #cond);         \
    } while (0)

#define CHECK_RC(call, expected)                                                          \
    do {                                                                                  \
        rs_status rc_ = (call);                                                           \
        if (rc_ != (expected))                                                            \
            FAIL("%s returned %d (%s), expected %d (%s)", #call, (int)rc_, rs_strerror(rc_), \
                 (int)(expected), rs_strerror(expected));                                 \
    } while (0)

/* The last error's text contains `needle`. */
static void check_text(const char *needle, int line) {
    char why[512];
    rs_last_error(why, sizeof why);
    if (strstr(why, needle) == NULL) {
        fprintf(stderr, "FAIL %s (line %d): last error \"%s\" lacks \"%s\"\n", test_case, line,
                why, needle);
        exit(1);
    }
}
#define CHECK_TEXT(needle) check_text((needle), __LINE__)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static rs_producer *connect_ok(const char *sock) {
    rs_producer *p = NULL;
    CHECK_RC(rs_producer_connect(sock, &p), RS_OK);
    CHECK(p != NULL);
    CHECK_RC(rs_producer_wait_connected(p, 5000), RS_OK);
    return p;
}

static rs_stats stats_of(const rs_producer *p) {
    rs_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    CHECK_RC(rs_producer_stats(p, &s), RS_OK);
    return s;
}

/* ---------- cases ---------- */

static void use_after_close(const char *sock) {
    rs_producer *p = connect_ok(sock);
    CHECK_RC(rs_send(p, "c/uac", "x", 1), RS_OK);
    CHECK_RC(rs_producer_close(p), RS_OK);
    /* Every entry point refuses the stale handle with a code and a text. */
    CHECK_RC(rs_send(p, "c/uac", "x", 1), RS_ERR_BAD_HANDLE);
    CHECK_TEXT("closed");
    CHECK_RC(rs_send_at(p, "c/uac", 1, "x", 1), RS_ERR_BAD_HANDLE);
    rs_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    CHECK_RC(rs_producer_stats(p, &s), RS_ERR_BAD_HANDLE);
    CHECK_TEXT("closed");
    rs_reservation *r = (rs_reservation *)&r;
    void *buf = &buf;
    CHECK_RC(rs_reserve(p, "c/uac", 8, &r, &buf), RS_ERR_BAD_HANDLE);
    CHECK(r == NULL && buf == NULL);
    CHECK_RC(rs_producer_wait_connected(p, 10), RS_ERR_BAD_HANDLE);
    char text[64] = "junk";
    CHECK(rs_producer_connection_error(p, text, sizeof text) == 0 && text[0] == '\0');
    /* A new producer may reuse the slot; the stale handle must not reach it. */
    rs_producer *q = connect_ok(sock);
    CHECK_RC(rs_send(p, "c/uac", "x", 1), RS_ERR_BAD_HANDLE);
    CHECK(stats_of(q).sent == 0);
    CHECK_RC(rs_producer_close(p), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_send(q, "c/uac", "y", 1), RS_OK);
    CHECK_RC(rs_producer_close(q), RS_OK);
}

static void double_close(const char *sock) {
    rs_producer *p = connect_ok(sock);
    CHECK_RC(rs_producer_close(p), RS_OK);
    CHECK_RC(rs_producer_close(p), RS_ERR_BAD_HANDLE);
    CHECK_TEXT("already closed");
    CHECK_RC(rs_producer_close(p), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_producer_close(NULL), RS_OK); /* like free(NULL) */
}

static void double_commit(const char *sock) {
    rs_producer *p = connect_ok(sock);
    rs_reservation *r = NULL;
    void *buf = NULL;
    CHECK_RC(rs_reserve(p, "c/dc", 16, &r, &buf), RS_OK);
    memset(buf, 1, 16);
    CHECK_RC(rs_commit(r), RS_OK);
    CHECK_RC(rs_commit(r), RS_ERR_BAD_HANDLE);
    CHECK_TEXT("already committed or discarded");
    CHECK_RC(rs_discard(r), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_reservation_set_timestamp(r, 5), RS_ERR_BAD_HANDLE);

    CHECK_RC(rs_reserve(p, "c/dc", 16, &r, &buf), RS_OK);
    CHECK_RC(rs_discard(r), RS_OK);
    CHECK_RC(rs_discard(r), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_commit(r), RS_ERR_BAD_HANDLE);

    /* A stale reservation handle must not complete a newer reservation. */
    rs_reservation *stale = r;
    CHECK_RC(rs_reserve(p, "c/dc", 16, &r, &buf), RS_OK);
    memset(buf, 2, 16);
    CHECK_RC(rs_commit(stale), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_commit(r), RS_OK);
    rs_stats s = stats_of(p);
    CHECK(s.sent == 2 && s.discarded == 1);
    CHECK_RC(rs_producer_close(p), RS_OK);
}

static void bad_handles(void) {
    /* Never returned by the library: refused without being dereferenced. */
    uint64_t junk[64];
    memset(junk, 0x5a, sizeof junk);
    rs_producer *fake = (rs_producer *)junk;
    CHECK_RC(rs_send(fake, "c/bad", "x", 1), RS_ERR_BAD_HANDLE);
    CHECK_TEXT("not a producer handle");
    CHECK_RC(rs_producer_close(fake), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_send((rs_producer *)(uintptr_t)0x1, "c/bad", "x", 1), RS_ERR_BAD_HANDLE);
    CHECK_RC(rs_commit((rs_reservation *)junk), RS_ERR_BAD_HANDLE);
    CHECK_TEXT("not a reservation handle");
    CHECK_RC(rs_discard((rs_reservation *)(uintptr_t)0xdeadbeef), RS_ERR_BAD_HANDLE);
}

static void reserve_no_malloc(const char *sock) {
#ifndef RS_TEST_COUNT_ALLOCATIONS
    (void)sock;
    FAIL("built without -DRS_TEST_COUNT_ALLOCATIONS: cannot count allocations");
#else
    rs_producer *p = connect_ok(sock);
    enum { WARM = 1000, N = 100000 };
    uint8_t payload[64];
    memset(payload, 0x5a, sizeof payload);
    for (int i = 0; i < WARM; i++) {
        rs_reservation *r;
        void *buf;
        CHECK_RC(rs_reserve(p, "c/zc", sizeof payload, &r, &buf), RS_OK);
        memcpy(buf, payload, sizeof payload);
        CHECK_RC(rs_commit(r), RS_OK);
        CHECK_RC(rs_send(p, "c/send", payload, sizeof payload), RS_OK);
    }
    long before = allocations;
    for (int i = 0; i < N; i++) {
        rs_reservation *r;
        void *buf;
        if (rs_reserve(p, "c/zc", sizeof payload, &r, &buf) != RS_OK) FAIL("reserve %d", i);
        memcpy(buf, payload, sizeof payload);
        if (i % 2) {
            if (rs_commit(r) != RS_OK) FAIL("commit %d", i);
        } else {
            if (rs_discard(r) != RS_OK) FAIL("discard %d", i);
        }
    }
    long zero_copy = allocations - before;
    before = allocations;
    for (int i = 0; i < N; i++)
        if (rs_send(p, "c/send", payload, sizeof payload) != RS_OK) FAIL("send %d", i);
    long copy = allocations - before;
    if (zero_copy != 0 || copy != 0)
        FAIL("%ld allocations in %d rs_reserve+rs_commit/rs_discard, %ld in %d rs_send",
             zero_copy, N, copy, N);
    CHECK_RC(rs_producer_close(p), RS_OK);
#endif
}

static void reserve_null_out(const char *sock) {
    rs_producer *p = connect_ok(sock);
    void *buf = &buf;
    CHECK_RC(rs_reserve(p, "c/x", 1, NULL, &buf), RS_ERR_INVALID_ARGUMENT);
    CHECK(buf == NULL);
    rs_reservation *r = (rs_reservation *)&r;
    CHECK_RC(rs_reserve(p, "c/x", 1, &r, NULL), RS_ERR_INVALID_ARGUMENT);
    CHECK(r == NULL);
    CHECK_RC(rs_producer_close(p), RS_OK);
}

static void handshake_timeout(const char *sock) {
    rs_producer *p = NULL;
    double t0 = now_s();
    rs_status rc = rs_producer_connect(sock, &p);
    double took = now_s() - t0;
    /* The documented longest block: 2 s for the whole handshake (the margin is for a loaded
     * machine; the old code took 2 s per step, up to 4 s). */
    if (took > 3.0) FAIL("rs_producer_connect blocked %.2f s (documented at most 2 s)", took);
    CHECK_RC(rc, RS_OK); /* a silent peer is retried in the background, like no sidecar */
    CHECK(p != NULL);
    char text[512];
    CHECK(rs_producer_connection_error(p, text, sizeof text) > 0);
    if (strstr(text, "timed out after 2 s") == NULL) FAIL("connection error \"%s\"", text);
    CHECK_RC(rs_producer_wait_connected(p, 50), RS_ERR_HANDSHAKE_TIMEOUT);
    CHECK_TEXT("timed out after 2 s");
    CHECK_RC(rs_send(p, "c/x", "x", 1), RS_ERR_NOT_CONNECTED);
    t0 = now_s();
    CHECK_RC(rs_producer_close(p), RS_OK);
    took = now_s() - t0;
    if (took > 1.0) FAIL("rs_producer_close blocked %.2f s (documented at most 200 ms)", took);
}

/* A listener whose backlog is full: connect() itself would wait for room. */
static void backlog_full(const char *path) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    CHECK(strlen(path) < sizeof addr.sun_path);
    strcpy(addr.sun_path, path);
    unlink(path);
    int listener = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(listener >= 0);
    CHECK(bind(listener, (struct sockaddr *)&addr, sizeof addr) == 0);
    CHECK(listen(listener, 0) == 0); /* room for one pending connection, never accepted */
    int filler = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
    CHECK(filler >= 0);
    CHECK(connect(filler, (struct sockaddr *)&addr, sizeof addr) == 0);
    rs_producer *p = NULL;
    double t0 = now_s();
    rs_status rc = rs_producer_connect(path, &p);
    double took = now_s() - t0;
    if (took > 3.0) FAIL("rs_producer_connect blocked %.2f s (documented at most 2 s)", took);
    CHECK_RC(rc, RS_OK);
    CHECK_RC(rs_producer_wait_connected(p, 10), RS_ERR_HANDSHAKE_TIMEOUT);
    CHECK_RC(rs_producer_close(p), RS_OK);
    close(filler);
    close(listener);
    unlink(path);
}

static void not_ringside(const char *sock) {
    rs_producer *p = (rs_producer *)&p;
    CHECK_RC(rs_producer_connect(sock, &p), RS_ERR_NOT_RINGSIDE);
    CHECK(p == NULL);
    CHECK_TEXT("not a ringside socket (expected SOCK_SEQPACKET)");
    CHECK(strstr(rs_strerror(RS_ERR_NOT_RINGSIDE), "SOCK_SEQPACKET") != NULL);
}

static void wait_text(const char *sock) {
    rs_producer *p = NULL;
    CHECK_RC(rs_producer_connect(sock, &p), RS_OK); /* nobody listens: retried */
    CHECK_RC(rs_producer_wait_connected(p, 30), RS_ERR_NOT_CONNECTED);
    char why[512];
    rs_last_error(why, sizeof why);
    /* No frame was involved: the text must not talk about one. */
    if (strstr(why, "frame") != NULL || strstr(why, "dropped") != NULL)
        FAIL("wait_connected text talks about a frame: \"%s\"", why);
    CHECK_TEXT("no sidecar connected within 30 ms");
    CHECK_TEXT("No such file or directory"); /* the last attempt's problem */
    CHECK_RC(rs_producer_close(p), RS_OK);
}

static void fork_case(const char *sock) {
    rs_producer *p = connect_ok(sock);
    CHECK_RC(rs_send(p, "c/fork", "parent-before", 13), RS_OK);
    rs_reservation *r = NULL;
    void *buf = NULL;
    CHECK_RC(rs_reserve(p, "c/fork", 6, &r, &buf), RS_OK);
    fflush(NULL);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        test_case = "fork (child)";
        CHECK_RC(rs_send(p, "c/fork", "child", 5), RS_ERR_FORKED);
        CHECK_TEXT("fork");
        CHECK_RC(rs_send_at(p, "c/fork", 1, "child", 5), RS_ERR_FORKED);
        rs_reservation *cr = (rs_reservation *)&cr;
        void *cbuf = &cbuf;
        CHECK_RC(rs_reserve(p, "c/fork", 5, &cr, &cbuf), RS_ERR_FORKED);
        CHECK(cr == NULL && cbuf == NULL);
        CHECK_RC(rs_commit(r), RS_ERR_FORKED); /* the parent's reservation */
        /* Closing in the child releases the child's copy only. */
        CHECK_RC(rs_producer_close(p), RS_ERR_FORKED);
        CHECK_RC(rs_send(p, "c/fork", "child", 5), RS_ERR_BAD_HANDLE);
        /* A producer connected in the child works. */
        rs_producer *own = connect_ok(sock);
        CHECK_RC(rs_send(own, "c/fork", "child-own", 9), RS_OK);
        CHECK_RC(rs_producer_close(own), RS_OK);
        printf("child ok\n");
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("child failed (status %d)", status);
    /* The parent's connection and reservation are untouched. */
    memcpy(buf, "parent", 6);
    CHECK_RC(rs_commit(r), RS_OK);
    usleep(300 * 1000);
    rs_stats s = stats_of(p);
    if (!s.sidecar_connected || s.reconnects != 0)
        FAIL("the child's close disturbed the parent: sidecar_connected %d, reconnects %" PRIu64,
             (int)s.sidecar_connected, s.reconnects);
    CHECK_RC(rs_send(p, "c/fork", "parent-after", 12), RS_OK);
    CHECK(stats_of(p).sent == 3);
    CHECK_RC(rs_producer_close(p), RS_OK);
}

/* What a program built against a later header, with one more field, passes. */
typedef struct {
    rs_stats known;
    uint64_t future_field;
} rs_stats_next;

static void stats_size(const char *sock) {
    rs_producer *p = connect_ok(sock);
    CHECK_RC(rs_send(p, "c/stats", "abc", 3), RS_OK);

    rs_stats s;
    memset(&s, 0, sizeof s);
    CHECK_RC(rs_producer_stats(p, &s), RS_ERR_INVALID_ARGUMENT); /* size not set */
    CHECK_TEXT("size");

    rs_stats init = RS_STATS_INIT;
    CHECK(init.size == sizeof(rs_stats));
    s = init;
    CHECK_RC(rs_producer_stats(p, &s), RS_OK);
    CHECK(s.size == sizeof(rs_stats));
    CHECK(s.sent == 1 && s.sent_bytes == 3 && s.connected);

    /* An older caller knowing only the fields up to sent_bytes: nothing past them is written. */
    size_t old_size = offsetof(rs_stats, sent_bytes) + sizeof s.sent_bytes;
    memset(&s, 0xee, sizeof s);
    s.size = (uint32_t)old_size;
    CHECK_RC(rs_producer_stats(p, &s), RS_OK);
    CHECK(s.size == old_size && s.sent == 1 && s.sent_bytes == 3);
    const unsigned char *tail = (const unsigned char *)&s + old_size;
    for (size_t i = 0; i < sizeof s - old_size; i++)
        if (tail[i] != 0xee) FAIL("byte %zu past the caller's size was written", old_size + i);

    /* A newer caller: the library fills what it knows and says how much. */
    rs_stats_next next;
    memset(&next, 0xee, sizeof next);
    next.known.size = sizeof next;
    CHECK_RC(rs_producer_stats(p, &next.known), RS_OK);
    CHECK(next.known.size == sizeof(rs_stats));
    CHECK(next.known.sent == 1);
    CHECK(next.future_field == 0xeeeeeeeeeeeeeeeeull);

    /* Too small to hold even the size and flags. */
    s.size = 4;
    CHECK_RC(rs_producer_stats(p, &s), RS_ERR_INVALID_ARGUMENT);
    CHECK_RC(rs_producer_close(p), RS_OK);
}

static void handle_limit(const char *sock) {
    rs_producer *p = connect_ok(sock);
    enum { MAX = 100000 };
    static rs_reservation *held[MAX];
    int n = 0;
    rs_status rc = RS_OK;
    for (; n < MAX; n++) {
        void *buf;
        rc = rs_reserve(p, "c/limit", 0, &held[n], &buf);
        if (rc != RS_OK) break;
    }
    CHECK_RC(rc, RS_ERR_HANDLE_LIMIT);
    CHECK_TEXT("outstanding");
    CHECK(n > 0 && n < MAX);
    for (int i = 0; i < n; i++) CHECK_RC(rs_discard(held[i]), RS_OK);
    /* Every slot is usable again. */
    for (int i = 0; i < n; i++) {
        void *buf;
        CHECK_RC(rs_reserve(p, "c/limit", 0, &held[i], &buf), RS_OK);
    }
    for (int i = 0; i < n; i++) CHECK_RC(rs_commit(held[i]), RS_OK);
    printf("reservation pool: %d\n", n);
    CHECK_RC(rs_producer_close(p), RS_OK);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE [SOCKET]\n", argv[0]);
        return 2;
    }
    test_case = argv[1];
    const char *sock = argc > 2 ? argv[2] : NULL;
    if (strcmp(test_case, "bad-handles") != 0 && sock == NULL) {
        fprintf(stderr, "%s needs a SOCKET argument\n", test_case);
        return 2;
    }
    if (strcmp(test_case, "use-after-close") == 0)
        use_after_close(sock);
    else if (strcmp(test_case, "double-close") == 0)
        double_close(sock);
    else if (strcmp(test_case, "double-commit") == 0)
        double_commit(sock);
    else if (strcmp(test_case, "bad-handles") == 0)
        bad_handles();
    else if (strcmp(test_case, "reserve-no-malloc") == 0)
        reserve_no_malloc(sock);
    else if (strcmp(test_case, "reserve-null-out") == 0)
        reserve_null_out(sock);
    else if (strcmp(test_case, "handshake-timeout") == 0)
        handshake_timeout(sock);
    else if (strcmp(test_case, "backlog-full") == 0)
        backlog_full(sock);
    else if (strcmp(test_case, "not-ringside") == 0)
        not_ringside(sock);
    else if (strcmp(test_case, "wait-text") == 0)
        wait_text(sock);
    else if (strcmp(test_case, "fork") == 0)
        fork_case(sock);
    else if (strcmp(test_case, "stats-size") == 0)
        stats_size(sock);
    else if (strcmp(test_case, "handle-limit") == 0)
        handle_limit(sock);
    else {
        fprintf(stderr, "unknown case %s\n", test_case);
        return 2;
    }
    printf("OK %s\n", test_case);
    return 0;
}
