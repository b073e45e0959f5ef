// server.h: the reward service, a single-threaded libuv TCP server speaking reward/README.md's
// protocol. Scoring takes microseconds, so requests are answered on the loop thread, in order per
// connection; all socket I/O is asynchronous, so a slow or vanished client only holds its own
// connection. Bounded memory: a line over max_line_bytes gets an error and is skipped, and a client that
// does not read its answers is dropped once max_queued_bytes of output wait for it.
// SIGTERM/SIGINT: stop accepting, answer every complete line already received, flush, exit 0.
#pragma once
#include <stddef.h>

#include "reward/protocol.h"
#include "util/check.h"

// Every field maps to a config key (reward.server, reward.max_line_bytes, reward.*_weight, ...).
typedef struct {
    char listen[300];         // "HOST:PORT" (default 127.0.0.1:7700); port 0 lets the OS pick
    size_t max_line_bytes;    // longest request line (default 1 MiB)
    size_t max_queued_bytes;  // unsent output per connection before it is dropped (default 16 MiB)
    int max_connections;      // further clients get an error line and are closed (default 1024)
    double drain_timeout_s;   // after SIGTERM, how long to wait for slow readers (default 5 s)
    RewardProtoOptions proto;  // reward weights, numeric equivalence, max_batch_items
    char port_file[4096];     // when set: the bound port is written there (atomically) once listening
} RewardServerOptions;

void reward_server_options_default(RewardServerOptions *opt);
// Listens, prints "listening on HOST:PORT" on stdout, serves until SIGTERM/SIGINT. Returns 0 after a
// graceful stop, -1 with e set when it cannot listen.
int reward_server_run(const RewardServerOptions *opt, Err *e);
