// server_proc.h: helpers for the loopback tests and the benchmark of the reward service: start
// reward-server as a child on a port the OS picks (127.0.0.1:0), stop it, and talk to it over raw
// sockets with bounded waits. Every wait has a deadline, so a broken server fails a test, never hangs it.
#pragma once
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "util/check.h"

typedef struct {
    pid_t pid;
    int port;
} ServerProc;

static inline double sp_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline void sp_sleep(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

// Starts `binary --listen 127.0.0.1:<port> args...` (port 0: the OS picks) and reads the bound port
// from its "listening on 127.0.0.1:PORT" line. Returns 0, or -1 if it did not come up within 10 s.
static inline int server_start(ServerProc *sp, const char *binary, int port, const char *const *args) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[32] = {binary, "--listen", listen, "--log-level", "warn"};
    int argc = 5;
    for (int i = 0; args && args[i] && argc < 31; i++) argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[256];
    size_t n = 0;
    double deadline = sp_now() + 10;
    sp->pid = pid;
    sp->port = -1;
    while (n < sizeof buf - 1 && sp_now() < deadline) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = read(fds[0], buf + n, sizeof buf - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = 0;
        char *nl = strchr(buf, '\n'), *colon = strrchr(buf, ':');
        if (nl && colon && colon < nl) {
            sp->port = atoi(colon + 1);
            break;
        }
    }
    close(fds[0]);  // the server's later stdout writes (none) would get EPIPE, which it ignores
    if (sp->port <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return 0;
}

// Waits up to timeout_s for the child; returns its exit status, 128+signal, or -1 on timeout.
static inline int server_wait(ServerProc *sp, double timeout_s) {
    double deadline = sp_now() + timeout_s;
    while (sp_now() < deadline) {
        int st;
        pid_t r = waitpid(sp->pid, &st, WNOHANG);
        if (r == sp->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sp_sleep(0.01);
    }
    return -1;
}

// Sends sig and waits; a server that ignores it is killed. Returns what server_wait returned.
static inline int server_stop(ServerProc *sp, int sig, double timeout_s) {
    kill(sp->pid, sig);
    int rc = server_wait(sp, timeout_s);
    if (rc < 0) {
        kill(sp->pid, SIGKILL);
        waitpid(sp->pid, NULL, 0);
    }
    return rc;
}

// A blocking TCP connection to 127.0.0.1:port (rcvbuf > 0 shrinks the receive buffer first).
static inline int tcp_connect(int port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline int send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

static inline int send_str(int fd, const char *s) { return send_all(fd, s, strlen(s)); }

// Buffered line reading from one socket.
typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} LineReader;

static inline void lr_init(LineReader *lr, int fd) {
    lr->fd = fd;
    lr->len = 0;
    lr->cap = 1 << 16;
    lr->buf = mallocCheck(lr->cap);
}

static inline void lr_free(LineReader *lr) { free(lr->buf); }

// Reads the next line (without '\n') into a malloc'd string; NULL on EOF, error or timeout. *eof is
// set to 1 on a clean EOF with nothing pending.
static inline char *lr_line(LineReader *lr, double timeout_s, int *eof) {
    double deadline = sp_now() + timeout_s;
    if (eof) *eof = 0;
    for (;;) {
        char *nl = memchr(lr->buf, '\n', lr->len);
        if (nl) {
            size_t n = (size_t)(nl - lr->buf);
            char *line = mallocCheck(n + 1);
            memcpy(line, lr->buf, n);
            line[n] = 0;
            memmove(lr->buf, nl + 1, lr->len - n - 1);
            lr->len -= n + 1;
            return line;
        }
        double left = deadline - sp_now();
        if (left <= 0) return NULL;
        struct pollfd p = {.fd = lr->fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
        if (lr->cap - lr->len < 4096) lr->buf = reallocCheck(lr->buf, lr->cap *= 2);
        ssize_t r = recv(lr->fd, lr->buf + lr->len, lr->cap - lr->len, 0);
        if (r <= 0) {
            if (eof) *eof = r == 0 && lr->len == 0;
            return NULL;
        }
        lr->len += (size_t)r;
    }
}

// The server's "stats" object (caller json_decref()s), or NULL if it did not answer within 5 s.
static inline json_t *stats_fetch(int port) {
    int fd = tcp_connect(port, 0);
    if (fd < 0) return NULL;
    json_t *st = NULL;
    if (send_str(fd, "{\"id\":\"stats\",\"stats\":true}\n") == 0) {
        LineReader lr;
        lr_init(&lr, fd);
        char *line = lr_line(&lr, 5.0, NULL);
        json_t *resp = line ? json_loads(line, 0, NULL) : NULL;
        st = json_incref(json_object_get(resp, "stats"));
        json_decref(resp);
        free(line);
        lr_free(&lr);
    }
    close(fd);
    return st;
}

// One integer counter of the stats (-1 when the server did not answer).
static inline long long stats_int(int port, const char *key) {
    json_t *st = stats_fetch(port);
    long long v = st ? json_integer_value(json_object_get(st, key)) : -1;
    json_decref(st);
    return v;
}
