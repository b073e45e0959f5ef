#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    char role[32];
    int rank;
    LogLevel level;
    struct timespec t0;
    int bar_active;       // a progress bar occupies the current terminal line
    double last_plain_s;  // when the last non-terminal progress line was printed
} g_log = {"aqa", -1, LOG_INFO, {0, 0}, 0, -1e9};

void log_init(const char *role, int rank) {
    snprintf(g_log.role, sizeof g_log.role, "%s", role);
    g_log.rank = rank;
    clock_gettime(CLOCK_MONOTONIC, &g_log.t0);
}

void log_set_level(LogLevel level) { g_log.level = level; }

int log_level_parse(const char *s, LogLevel *out) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (LogLevel)i;
            return 0;
        }
    return -1;
}

double log_elapsed(void) {
    if (g_log.t0.tv_sec == 0 && g_log.t0.tv_nsec == 0) clock_gettime(CLOCK_MONOTONIC, &g_log.t0);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - g_log.t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - g_log.t0.tv_nsec);
}

static void log_prefix(FILE *f, const char *tag) {
    double s = log_elapsed();
    if (g_log.rank >= 0)
        fprintf(f, "[%s %d +%.3fs] %s", g_log.role, g_log.rank, s, tag);
    else
        fprintf(f, "[%s +%.3fs] %s", g_log.role, s, tag);
}

void log_msg(LogLevel level, const char *fmt, ...) {
    if (level < g_log.level) return;
    static const char *tags[] = {"debug: ", "", "warning: ", "error: "};
    if (g_log.bar_active) {
        fputc('\n', stderr);
        g_log.bar_active = 0;
    }
    log_prefix(stderr, tags[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void progress_update(const char *what, int64_t done, int64_t total) {
    double frac = total > 0 ? (double)done / (double)total : 0.0;
    if (frac > 1.0) frac = 1.0;
    if (isatty(STDERR_FILENO)) {
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int filled = (int)(frac * WIDTH);
        for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = 0;
        fprintf(stderr, "\r[%s] %3.0f%% %lld/%lld %s  %.1fs", bar, 100.0 * frac, (long long)done,
                (long long)total, what, log_elapsed());
        g_log.bar_active = 1;
        fflush(stderr);
        return;
    }
    double now = log_elapsed();
    if (done < total && now - g_log.last_plain_s < 5.0) return;
    g_log.last_plain_s = now;
    log_prefix(stderr, "");
    fprintf(stderr, "progress %lld/%lld %s (%.0f%%)\n", (long long)done, (long long)total, what,
            100.0 * frac);
}

void progress_end(void) {
    if (g_log.bar_active) {
        fputc('\n', stderr);
        g_log.bar_active = 0;
    }
}
