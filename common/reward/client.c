#include "reward/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// A response line longer than this means the peer is not a reward server.
#define CLIENT_MAX_LINE (64u << 20)

struct RewardClient {
    char host[256];
    char port[8];
    RewardClientOptions opt;
    int fd;              // -1 while disconnected
    long long next_id;   // ids never repeat over the client's life: a stale answer cannot match
    char *in;            // received bytes not yet consumed, [in_len] of [in_cap]
    size_t in_len, in_cap;
    int failures;        // consecutive
};

void reward_client_options_default(RewardClientOptions *opt) {
    opt->connect_timeout_s = 5.0;
    opt->request_timeout_s = 30.0;
    opt->max_failures = 8;
    opt->backoff_initial_s = 0.05;
    opt->backoff_max_s = 2.0;
    opt->max_in_flight = 64;
    opt->open_wait_s = 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// A poll timeout in ms; long waits are cut into hours (poll takes an int).
static int poll_ms(double s) { return s > 3600 ? 3600 * 1000 : (int)(s * 1000) + 1; }

static void sleep_s(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

static void client_disconnect(RewardClient *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->in_len = 0;
}

// The back-off after the n-th consecutive failure: backoff_initial_s doubled n - 1 times, at most
// backoff_max_s.
static double client_backoff_s(const RewardClient *c, int n) {
    double b = c->opt.backoff_initial_s;
    for (int i = 1; i < n && b < c->opt.backoff_max_s; i++) b *= 2;
    return b < c->opt.backoff_max_s ? b : c->opt.backoff_max_s;
}

// Counts a failure described by why. Returns -1 (and sets e) once max_failures is reached; otherwise
// sleeps the back-off and returns 0.
static int client_failure(RewardClient *c, const char *why, Err *e) {
    c->failures++;
    if (c->failures >= c->opt.max_failures)
        return err_set(e, "reward service %s:%s: %d consecutive failures, last: %s", c->host, c->port,
                       c->failures, why);
    sleep_s(client_backoff_s(c, c->failures));
    return 0;
}

// One non-blocking connect to any address of host:port within the connect timeout.
static int client_connect_once(RewardClient *c, char *why, size_t cap) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        snprintf(why, cap, "resolving %s: %s", c->host, gai_strerror(rc));
        return -1;
    }
    snprintf(why, cap, "no address for %s", c->host);
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            snprintf(why, cap, "socket: %s", strerror(errno));
            continue;
        }
        int err = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                int n = poll(&p, 1, poll_ms(c->opt.connect_timeout_s));
                socklen_t len = sizeof err;
                if (n == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                else err = ETIMEDOUT;
            }
        }
        if (err == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small pipelined lines
            freeaddrinfo(res);
            c->fd = fd;
            return 0;
        }
        snprintf(why, cap, "connect: %s", strerror(err));
        close(fd);
    }
    freeaddrinfo(res);
    return -1;
}

// Connects, retrying with back-off. Returns -1 with e set after max_failures.
static int client_connect(RewardClient *c, Err *e) {
    char why[300];
    while (client_connect_once(c, why, sizeof why) != 0)
        if (client_failure(c, why, e) != 0) return -1;
    return 0;
}

// The first connection: as client_connect, but it goes on trying until open_wait_s has passed too.
static int client_connect_first(RewardClient *c, Err *e) {
    double t0 = now_s();
    char why[300];
    for (int n = 1;; n++) {
        if (client_connect_once(c, why, sizeof why) == 0) return 0;
        double left = t0 + c->opt.open_wait_s - now_s();
        if (n >= c->opt.max_failures && left <= 0)
            return err_set(e, "reward service %s:%s: not answering after %.1f s (%d attempts), last: %s", c->host,
                           c->port, now_s() - t0, n, why);
        double b = client_backoff_s(c, n);
        sleep_s(n >= c->opt.max_failures && left < b ? left : b);
    }
}

RewardClient *reward_client_open(const char *host_port, const RewardClientOptions *opt, Err *e) {
    RewardClient *c = callocCheck(1, sizeof *c);
    int port;
    if (reward_parse_host_port(host_port, c->host, sizeof c->host, &port, e) != 0) goto fail;
    if (opt) c->opt = *opt;
    else reward_client_options_default(&c->opt);
    if (c->opt.max_failures < 1 || c->opt.max_in_flight < 1 || c->opt.request_timeout_s <= 0 ||
        c->opt.connect_timeout_s <= 0 || c->opt.backoff_initial_s < 0 || c->opt.backoff_max_s < 0 ||
        !(c->opt.open_wait_s >= 0)) {
        err_set(e, "reward client: max_failures and max_in_flight must be >= 1, timeouts > 0, back-off and "
                   "open wait >= 0");
        goto fail;
    }
    snprintf(c->port, sizeof c->port, "%d", port);
    c->fd = -1;
    c->in_cap = 1 << 16;
    c->in = mallocCheck(c->in_cap);
    if (client_connect_first(c, e) != 0) goto fail;
    return c;
fail:
    reward_client_close(c);
    return NULL;
}

void reward_client_close(RewardClient *c) {
    if (!c) return;
    client_disconnect(c);
    free(c->in);
    free(c);
}

// The state of one batch: what is on the wire, what is still to send.
typedef struct {
    const RewardRequest *items;
    RewardResult *out;
    int n;
    long long base_id;   // item i has id base_id + i
    char *done;          // [n]
    int n_done;
    int next;            // next item to consider sending
    int *fifo;           // [max_in_flight] items on the wire, in send order (answers come in order)
    double *sent_at;     // [max_in_flight] send time of each fifo slot
    int head, count;
    char *out_buf;       // encoded lines not yet written
    size_t out_len, out_off, out_cap;
} Batch;

// Queues requests until max_in_flight are on the wire.
static void batch_fill(RewardClient *c, Batch *b) {
    while (b->count < c->opt.max_in_flight && b->next < b->n) {
        int i = b->next++;
        if (b->done[i]) continue;
        json_t *req = reward_proto_request(b->base_id + i, &b->items[i]);
        size_t len;
        char *line = reward_proto_dump(req, &len);
        json_decref(req);
        if (b->out_len + len > b->out_cap) {
            b->out_cap = 2 * (b->out_len + len);
            b->out_buf = reallocCheck(b->out_buf, b->out_cap);
        }
        memcpy(b->out_buf + b->out_len, line, len);
        b->out_len += len;
        free(line);
        int slot = (b->head + b->count) % c->opt.max_in_flight;
        b->fifo[slot] = i;
        b->sent_at[slot] = now_s();
        b->count++;
    }
}

// Handles one response line: it answers the oldest request on the wire. Returns 0, 1 when the line
// does not fit the protocol (treated as a lost connection; why says what came), or -1 when the server
// rejected a request.
static int batch_answer(RewardClient *c, Batch *b, const char *line, size_t len, char *why, size_t cap, Err *e) {
    json_t *resp = json_loadb(line, len, 0, NULL);
    json_t *id = json_object_get(resp, "id"), *error = json_object_get(resp, "error");
    int i = b->count ? b->fifo[b->head] : -1, rc = 0;
    if (i < 0 || !json_is_object(resp) || json_is_true(json_object_get(resp, "retry")) ||
        (id && !json_is_null(id) && (!json_is_integer(id) || json_integer_value(id) != b->base_id + i))) {
        // Out of step, or a refusal of the connection ("retry": too many connections): resend what
        // is unanswered on a fresh connection.
        if (json_is_string(error)) snprintf(why, cap, "unexpected response: %.200s", json_string_value(error));
        else snprintf(why, cap, "unexpected response: %.*s", (int)(len < 200 ? len : 200), line);
        rc = 1;
    } else if (reward_proto_result(resp, &b->out[i], e) != 0) {
        rc = err_prefix(e, "item %d", i);
    }
    json_decref(resp);
    if (rc == 0) {
        b->done[i] = 1;
        b->n_done++;
        b->head = (b->head + 1) % c->opt.max_in_flight;
        b->count--;
        c->failures = 0;
    }
    return rc;
}

// Reads what is available and consumes complete lines. Returns 0, 1 on a lost/broken connection
// (why set), -1 on a rejected request.
static int batch_read(RewardClient *c, Batch *b, char *why, size_t cap, Err *e) {
    if (c->in_cap - c->in_len < 4096) {
        if (c->in_cap >= CLIENT_MAX_LINE) {
            snprintf(why, cap, "response line over %u bytes", CLIENT_MAX_LINE);
            return 1;
        }
        c->in_cap *= 2;
        c->in = reallocCheck(c->in, c->in_cap);
    }
    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r <= 0) {
        snprintf(why, cap, "%s", r == 0 ? "server closed the connection" : strerror(errno));
        return 1;
    }
    c->in_len += (size_t)r;
    size_t start = 0;
    char *nl;
    while ((nl = memchr(c->in + start, '\n', c->in_len - start))) {
        int rc = batch_answer(c, b, c->in + start, (size_t)(nl - c->in - start), why, cap, e);
        start = (size_t)(nl - c->in) + 1;
        if (rc) return rc;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    return 0;
}

// Puts every unanswered request back in the queue after the connection is lost.
static void batch_requeue(Batch *b) {
    b->next = 0;
    b->head = b->count = 0;
    b->out_len = b->out_off = 0;
}

// One poll round: write, read, check the oldest request's deadline. Returns 0, 1 on a connection
// failure (why set), -1 on a rejected request.
static int batch_step(RewardClient *c, Batch *b, char *why, size_t cap, Err *e) {
    batch_fill(c, b);
    double deadline = b->count ? b->sent_at[b->head] + c->opt.request_timeout_s : now_s() + 1;
    double wait = deadline - now_s();
    if (wait <= 0) {
        snprintf(why, cap, "request timed out after %.3g s", c->opt.request_timeout_s);
        return 1;
    }
    struct pollfd p = {.fd = c->fd, .events = POLLIN | (b->out_off < b->out_len ? POLLOUT : 0)};
    int n = poll(&p, 1, poll_ms(wait));
    if (n < 0 && errno != EINTR) fatal("poll: %s", strerror(errno));
    if (n <= 0) return 0;
    if (p.revents & POLLOUT) {
        ssize_t w = send(c->fd, b->out_buf + b->out_off, b->out_len - b->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(why, cap, "send: %s", strerror(errno));
            return 1;
        }
        if (w > 0) b->out_off += (size_t)w;
        if (b->out_off == b->out_len) b->out_off = b->out_len = 0;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) return batch_read(c, b, why, cap, e);
    return 0;
}

int reward_client_score_batch(RewardClient *c, const RewardRequest *items, int n, RewardResult *out, Err *e) {
    if (n <= 0) return 0;
    int w = c->opt.max_in_flight;
    Batch b = {.items = items, .out = out, .n = n, .base_id = c->next_id};
    c->next_id += n;
    b.done = callocCheck((size_t)n, 1);
    b.fifo = mallocCheck((size_t)w * sizeof *b.fifo);
    b.sent_at = mallocCheck((size_t)w * sizeof *b.sent_at);
    b.out_cap = 1 << 16;
    b.out_buf = mallocCheck(b.out_cap);
    c->failures = 0;
    int rc = 0;
    char why[300];
    while (b.n_done < n) {
        if (c->fd < 0 && (rc = client_connect(c, e)) != 0) break;
        int s = batch_step(c, &b, why, sizeof why, e);
        if (s < 0) {
            rc = -1;
            // Answers still on the wire belong to this batch only; a fresh connection starts clean.
            client_disconnect(c);
            break;
        }
        if (s > 0) {
            client_disconnect(c);
            batch_requeue(&b);
            if ((rc = client_failure(c, why, e)) != 0) break;
        }
    }
    free(b.done);
    free(b.fifo);
    free(b.sent_at);
    free(b.out_buf);
    return rc;
}
