// client.h: the reward-service client used by rollout (blocking API, plain sockets + poll).
// A batch is sent as pipelined single requests (up to max_in_flight on the wire); answers come back in
// order and are matched by id. A lost connection, a refused connect or a request that exceeds its
// timeout is a failure: the client backs off (doubling), reconnects and resends only the unanswered
// requests, so each answer reaches the caller exactly once. After max_failures consecutive failures
// the call returns an error, so a dead service stops the rollout instead of yielding zero rewards.
#pragma once
#include "reward/protocol.h"
#include "util/check.h"

typedef struct {
    double connect_timeout_s;  // one connection attempt
    double request_timeout_s;  // from sending a request to receiving its answer
    int max_failures;          // consecutive failures before the call returns an error
    double backoff_initial_s;  // sleep after the first failure, doubled after each next one
    double backoff_max_s;      // the sleep's ceiling
    int max_in_flight;         // pipelined requests awaiting an answer
    double open_wait_s;        // reward_client_open goes on trying this long (a service still starting)
} RewardClientOptions;

typedef struct RewardClient RewardClient;

// connect 5 s, request 30 s, 8 failures, back-off 0.05 s doubling to 2 s, 64 in flight, no open wait.
void reward_client_options_default(RewardClientOptions *opt);
// Connects to "HOST:PORT", retrying as above until both max_failures attempts and open_wait_s seconds
// are spent; opt NULL means defaults. NULL and e set (naming the address) on failure.
RewardClient *reward_client_open(const char *host_port, const RewardClientOptions *opt, Err *e);
// Scores items[0..n) into out[0..n) (completion and solution non-NULL; any bytes, invalid UTF-8 is
// repaired as in reward.h). Returns 0, or -1 with e set: the service failed max_failures times
// in a row, or it rejected a request (its error message is passed on; not retried).
int reward_client_score_batch(RewardClient *c, const RewardRequest *items, int n, RewardResult *out, Err *e);
void reward_client_close(RewardClient *c);
