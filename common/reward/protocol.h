// protocol.h: the reward service's wire format, one JSON object per line each way (reward/README.md).
// The server side turns one request line into one response object (scoring it, or an error naming
// what is wrong); the client side encodes requests and decodes responses. Shared by reward-server,
// reward-score and the client so the three can never disagree.
#pragma once
#include <jansson.h>
#include <stddef.h>

#include "reward/reward.h"
#include "util/check.h"

// Error kinds, counted separately in the server's stats.
typedef enum {
    REWARD_ERR_PARSE = 0,  // not JSON, or not a JSON object
    REWARD_ERR_TYPE,       // a missing field or a field of the wrong type
    REWARD_ERR_MODE,       // an unknown "mode"
    REWARD_ERR_LIMIT,      // a line over max_line_bytes, or a batch over max_batch_items
    REWARD_N_ERR
} RewardErrKind;
extern const char *const REWARD_ERR_NAMES[REWARD_N_ERR];  // "parse", "type", "mode", "limit"

// What one line turned out to be, for the server's counters.
typedef struct {
    int n_items;                // items scored (1 for a single request, the batch's size otherwise)
    int n_errors[REWARD_N_ERR];  // errors by kind (a batch may have several item errors)
    int is_stats;               // it was a stats request
} RewardLineInfo;

// Server-side settings of the protocol.
typedef struct {
    RewardOptions scoring;  // weights and numeric equivalence; "mode" of a request overrides .mode
    int max_batch_items;    // a longer "items" array is refused whole
} RewardProtoOptions;

// Builds the "stats" object of a stats request (the server's counters); NULL: stats unsupported.
typedef json_t *(*RewardStatsFn)(void *ctx);

// One scoring request as the client sends it.
typedef struct {
    const char *completion;
    const char *solution;        // "<answer>...</answer>" or the bare answer
    RewardMode mode;
    const char *answer;          // MMAU answer text for the evaluation rule, or NULL
    const char *const *choices;  // [n_choices] MMAU choices (with answer), may be NULL
    int n_choices;
} RewardRequest;

void reward_proto_options_default(RewardProtoOptions *opt);

// Answers one request line (without its '\n'); never fails: bad input gets an error response carrying
// the request's id when it could be read. info (may be NULL) is filled. Caller json_decref()s.
json_t *reward_proto_answer(const RewardProtoOptions *opt, const char *line, size_t len,
                            RewardStatsFn stats, void *stats_ctx, RewardLineInfo *info);
// {"id": id, "error": msg}; id is borrowed (NULL -> null).
json_t *reward_proto_error(json_t *id, const char *msg);
// Compact JSON of obj plus '\n' (malloc'd, caller frees); *len excludes the NUL.
char *reward_proto_dump(json_t *obj, size_t *len);

// Client side: the request object for rq with an integer id (strings repaired to valid UTF-8).
json_t *reward_proto_request(long long id, const RewardRequest *rq);
// Reads a single-request response into out. Returns -1 with the server's message (or what is
// malformed: a missing field, a reward other than 0 or 1, a non-finite total) in e.
int reward_proto_result(json_t *resp, RewardResult *out, Err *e);

// "HOST:PORT" or "[IPv6]:PORT" -> host (cap bytes) and port (0..65535). Returns -1 and sets e.
int reward_parse_host_port(const char *s, char *host, size_t cap, int *port, Err *e);
