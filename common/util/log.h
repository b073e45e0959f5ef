// log.h: leveled logging with a "[role rank +wall]" prefix, and a progress bar.
// Lines go to stderr. On a terminal the progress bar redraws in place; otherwise it prints a plain
// line at most every few seconds so batch logs (SLURM, CI) stay readable.
#pragma once
#include <stdint.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } LogLevel;

// role: "learner", "rollout", "reward", a tool's name; rank: -1 when the process has none.
void log_init(const char *role, int rank);
void log_set_level(LogLevel level);
// Parses "debug" | "info" | "warn" | "error"; returns -1 on anything else.
int log_level_parse(const char *s, LogLevel *out);
void log_msg(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
// Seconds since log_init (monotonic clock).
double log_elapsed(void);

// Progress of `done` out of `total` items; `what` names them ("steps", "clips").
void progress_update(const char *what, int64_t done, int64_t total);
// Ends the bar's line on a terminal (no-op otherwise).
void progress_end(void);
