#include "server.h"

#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "util/fileio.h"
#include "util/log.h"

#define LAT_RING 65536  // latencies kept for the percentiles: the most recent ones
#define READ_CHUNK 65536

typedef struct Server Server;

typedef struct Conn {
    uv_tcp_t tcp;  // handle.data points back to the Conn
    Server *srv;
    struct Conn *prev, *next;  // the server's list of open connections
    char *line;                // a partial line, [line_len] of [line_cap] (<= max_line_bytes)
    size_t line_len, line_cap;
    int discarding;  // inside an oversized line: drop bytes until its '\n'
    int closing;     // uv_close called
    int finishing;   // no more reading; output flushing before close
    uv_shutdown_t shutdown;
    char rbuf[READ_CHUNK];
} Conn;

typedef struct {
    uv_write_t req;
    char *data;
} WriteReq;

struct Server {
    RewardServerOptions opt;
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sig_term, sig_int;
    uv_timer_t drain_timer;
    Conn *conns;
    int n_conns;
    int stopping;
    // Counters for the stats request.
    uint64_t start_ns, conns_total, conns_dropped, n_lines, n_items, n_stats;
    uint64_t n_errors[REWARD_N_ERR];
    double *lat_ms;  // [LAT_RING] ring of per-line handling times
    uint64_t lat_n;
};

static void conn_close(Conn *c);

static void on_conn_closed(uv_handle_t *h) {
    Conn *c = h->data;
    Server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    free(c->line);
    free(c);
    if (s->stopping && s->n_conns == 0) {
        // Last client gone: release the remaining handles so uv_run returns.
        if (!uv_is_closing((uv_handle_t *)&s->drain_timer)) uv_close((uv_handle_t *)&s->drain_timer, NULL);
    }
}

static void conn_close(Conn *c) {
    if (c->closing) return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_write(uv_write_t *req, int status) {
    WriteReq *w = (WriteReq *)req;
    Conn *c = req->handle->data;
    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        log_debug("connection write failed: %s", uv_strerror(status));
        conn_close(c);
    }
}

// Queues text (malloc'd, taken over) for the client. A client whose unread output exceeds the cap is
// dropped: it is not reading, and holding its answers would let it grow the server without bound.
static void conn_send(Conn *c, char *text, size_t len) {
    if (c->closing) {
        free(text);
        return;
    }
    WriteReq *w = mallocCheck(sizeof *w);
    w->data = text;
    uv_buf_t buf = uv_buf_init(text, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(text);
        free(w);
        conn_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->srv->opt.max_queued_bytes) {
        log_warn("dropping a client with over %zu bytes of unread answers", c->srv->opt.max_queued_bytes);
        c->srv->conns_dropped++;
        conn_close(c);
    }
}

static void conn_send_json(Conn *c, json_t *resp) {
    size_t len;
    char *text = reward_proto_dump(resp, &len);
    json_decref(resp);
    conn_send(c, text, len);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static json_t *server_stats(void *ctx) {
    Server *s = ctx;
    size_t n = s->lat_n < LAT_RING ? (size_t)s->lat_n : LAT_RING;
    double *v = mallocCheck((n ? n : 1) * sizeof *v);
    memcpy(v, s->lat_ms, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_double);
    json_t *lat = json_object();
    static const double PCT[] = {0.50, 0.90, 0.99};
    static const char *const PCT_NAME[] = {"p50", "p90", "p99"};
    for (int i = 0; i < 3; i++) {
        size_t k = (size_t)(PCT[i] * (double)n + 0.999999);  // nearest rank
        json_object_set_new(lat, PCT_NAME[i], json_real(n ? v[k ? k - 1 : 0] : 0.0));
    }
    json_object_set_new(lat, "max", json_real(n ? v[n - 1] : 0.0));
    json_object_set_new(lat, "samples", json_integer((json_int_t)n));
    free(v);
    json_t *errs = json_object();
    uint64_t total = 0;
    for (int k = 0; k < REWARD_N_ERR; k++) {
        json_object_set_new(errs, REWARD_ERR_NAMES[k], json_integer((json_int_t)s->n_errors[k]));
        total += s->n_errors[k];
    }
    json_t *st = json_object();
    json_object_set_new(st, "uptime_s", json_real((double)(uv_hrtime() - s->start_ns) * 1e-9));
    json_object_set_new(st, "connections", json_integer(s->n_conns));
    json_object_set_new(st, "connections_total", json_integer((json_int_t)s->conns_total));
    json_object_set_new(st, "connections_dropped", json_integer((json_int_t)s->conns_dropped));
    json_object_set_new(st, "lines", json_integer((json_int_t)s->n_lines));
    json_object_set_new(st, "items", json_integer((json_int_t)s->n_items));
    json_object_set_new(st, "stats_requests", json_integer((json_int_t)s->n_stats));
    json_object_set_new(st, "errors", json_integer((json_int_t)total));
    json_object_set_new(st, "errors_by_kind", errs);
    json_object_set_new(st, "latency_ms", lat);
    return st;
}

// Answers one complete line (without '\n'); blank lines are ignored.
static void conn_line(Conn *c, const char *line, size_t len) {
    Server *s = c->srv;
    if (len && line[len - 1] == '\r') len--;
    if (len == 0) return;
    uint64_t t0 = uv_hrtime();
    RewardLineInfo info;
    json_t *resp = reward_proto_answer(&s->opt.proto, line, len, server_stats, s, &info);
    s->n_lines++;
    s->n_items += (uint64_t)info.n_items;
    s->n_stats += (uint64_t)info.is_stats;
    for (int k = 0; k < REWARD_N_ERR; k++) s->n_errors[k] += (uint64_t)info.n_errors[k];
    conn_send_json(c, resp);
    s->lat_ms[s->lat_n++ % LAT_RING] = (double)(uv_hrtime() - t0) * 1e-6;
}

static void conn_oversized(Conn *c) {
    Server *s = c->srv;
    char msg[128];
    snprintf(msg, sizeof msg, "line exceeds %zu bytes", s->opt.max_line_bytes);
    s->n_lines++;
    s->n_errors[REWARD_ERR_LIMIT]++;
    conn_send_json(c, reward_proto_error(NULL, msg));
}

// Splits received bytes into lines. Complete lines inside buf are answered without copying.
static void conn_feed(Conn *c, const char *buf, size_t n) {
    size_t max = c->srv->opt.max_line_bytes;
    while (n > 0 && !c->closing) {
        const char *nl = memchr(buf, '\n', n);
        size_t seg = nl ? (size_t)(nl - buf) : n;  // bytes of the current line in buf
        if (c->discarding) {
            if (nl) c->discarding = 0;
        } else if (c->line_len + seg > max) {
            conn_oversized(c);
            c->line_len = 0;
            c->discarding = nl == NULL;
        } else if (nl && c->line_len == 0) {
            conn_line(c, buf, seg);
        } else {
            if (c->line_len + seg > c->line_cap) {
                c->line_cap = c->line_len + seg > 2 * c->line_cap ? c->line_len + seg : 2 * c->line_cap;
                if (c->line_cap > max) c->line_cap = max;
                c->line = reallocCheck(c->line, c->line_cap);
            }
            memcpy(c->line + c->line_len, buf, seg);
            c->line_len += seg;
            if (nl) {
                conn_line(c, c->line, c->line_len);
                c->line_len = 0;
            }
        }
        size_t used = nl ? seg + 1 : n;
        buf += used;
        n -= used;
    }
}

static void on_shutdown(uv_shutdown_t *req, int status) { conn_close(req->handle->data); }

// Stops reading and closes once the queued answers are written (a partial line is dropped).
static void conn_finish(Conn *c) {
    if (c->finishing || c->closing) return;
    c->finishing = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    Conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    Conn *c = stream->data;
    if (nread > 0) conn_feed(c, buf->base, (size_t)nread);
    else if (nread == UV_EOF) conn_finish(c);  // the client may half-close and still read its answers
    else if (nread < 0) conn_close(c);
}

static void on_connection(uv_stream_t *listener, int status) {
    Server *s = listener->data;
    if (status < 0) {
        log_warn("accept: %s", uv_strerror(status));
        return;
    }
    Conn *c = callocCheck(1, sizeof *c);
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    s->conns_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->n_conns > s->opt.max_connections) {
        s->conns_dropped++;
        char msg[96];
        snprintf(msg, sizeof msg, "too many connections (limit %d)", s->opt.max_connections);
        json_t *resp = reward_proto_error(NULL, msg);
        json_object_set_new(resp, "retry", json_true());  // about the connection, not a request
        conn_send_json(c, resp);
        conn_finish(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_drain_timeout(uv_timer_t *t) {
    Server *s = t->data;
    log_warn("drain timeout: closing %d connection(s) with unsent answers", s->n_conns);
    for (Conn *c = s->conns; c; c = c->next) conn_close(c);
    uv_close((uv_handle_t *)t, NULL);
}

// Answers the complete lines already waiting in the socket (sent before the stop), then finishes.
static void conn_drain_and_finish(Conn *c) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        ssize_t r;
        while (!c->closing && (r = recv(fd, c->rbuf, sizeof c->rbuf, MSG_DONTWAIT)) > 0)
            conn_feed(c, c->rbuf, (size_t)r);
    }
    conn_finish(c);
}

static void on_signal(uv_signal_t *sig, int signum) {
    Server *s = sig->data;
    if (s->stopping) return;
    s->stopping = 1;
    log_info("signal %d: stopping (%d connection(s) to finish)", signum, s->n_conns);
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    Conn *next;
    for (Conn *c = s->conns; c; c = next) {
        next = c->next;
        if (!c->closing && !c->finishing) conn_drain_and_finish(c);
    }
    if (s->n_conns == 0) {
        uv_close((uv_handle_t *)&s->drain_timer, NULL);
    } else {
        uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)(s->opt.drain_timeout_s * 1000), 0);
        uv_unref((uv_handle_t *)&s->drain_timer);  // the connections keep the loop alive, not the timer
    }
}

void reward_server_options_default(RewardServerOptions *opt) {
    memset(opt, 0, sizeof *opt);
    snprintf(opt->listen, sizeof opt->listen, "127.0.0.1:7700");
    opt->max_line_bytes = 1u << 20;
    opt->max_queued_bytes = 16u << 20;
    opt->max_connections = 1024;
    opt->drain_timeout_s = 5.0;
    reward_proto_options_default(&opt->proto);
}

// Resolves and binds opt->listen, starts listening and reports the bound address.
static int server_listen(Server *s, Err *e) {
    char host[256], port_s[8];
    int port;
    if (reward_parse_host_port(s->opt.listen, host, sizeof host, &port, e) != 0) return -1;
    snprintf(port_s, sizeof port_s, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port_s, &hints, &res);
    if (rc != 0) return err_set(e, "listen %s: %s", s->opt.listen, gai_strerror(rc));
    rc = uv_tcp_bind(&s->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc != 0) return err_set(e, "listen %s: %s", s->opt.listen, uv_strerror(rc));
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[64] = "?";
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    printf(ss.ss_family == AF_INET6 ? "listening on [%s]:%d\n" : "listening on %s:%d\n", ip, port);
    fflush(stdout);
    if (s->opt.port_file[0]) {
        char text[16];
        int n = snprintf(text, sizeof text, "%d\n", port);
        if (file_write_atomic(s->opt.port_file, text, (size_t)n, e) != 0) return -1;
    }
    log_info("listening on %s port %d", ip, port);
    return 0;
}

int reward_server_run(const RewardServerOptions *opt, Err *e) {
    if (opt->max_line_bytes < 16 || opt->max_connections < 1 || opt->max_queued_bytes < 1 ||
        opt->proto.max_batch_items < 1 || opt->drain_timeout_s < 0)
        return err_set(e, "reward server: limits must be positive (max_line_bytes >= 16)");
    Server *s = callocCheck(1, sizeof *s);
    s->opt = *opt;
    s->loop = mallocCheck(sizeof *s->loop);
    s->lat_ms = callocCheck(LAT_RING, sizeof *s->lat_ms);
    s->start_ns = uv_hrtime();
    uv_loop_init(s->loop);
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    int rc = server_listen(s, e);
    if (rc == 0) {
        uv_signal_init(s->loop, &s->sig_term);
        uv_signal_init(s->loop, &s->sig_int);
        uv_timer_init(s->loop, &s->drain_timer);
        s->sig_term.data = s->sig_int.data = s->drain_timer.data = s;
        uv_signal_start(&s->sig_term, on_signal, SIGTERM);
        uv_signal_start(&s->sig_int, on_signal, SIGINT);
        uv_run(s->loop, UV_RUN_DEFAULT);
        log_info("stopped: %llu lines, %llu items answered", (unsigned long long)s->n_lines,
                 (unsigned long long)s->n_items);
    } else {
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_run(s->loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(s->loop) != 0) log_warn("event loop closed with live handles");
    free(s->loop);
    free(s->lat_ms);
    free(s);
    return rc;
}
