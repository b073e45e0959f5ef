// msg.h: the wire format of messages between roles. Every message is a 32-byte header (magic, protocol
// version, type, payload bytes, weights version, CRC32 of the payload) followed by its payload, all
// little-endian. Two payloads: a trajectory GROUP (rollout -> learner: one question's G completions with
// their rewards and log-probs, or a FAILED group saying why the question could not be used, so the
// learner's count of groups per step never depends on the data being good) and the WEIGHTS announcement that precedes a bucketed broadcast of the
// flat fp32 parameter buffer. Decoding validates everything (never reads out of bounds, never trusts a
// count) and names the offending field.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "util/check.h"

#define MSG_MAGIC 0x4d514141u  // bytes "AAQM"
#define MSG_PROTOCOL 4  // 2: slot, failure flag + reason, per-phase timings in GROUP; 3: prefill/decode apart;
                        // 4: a GROUP's weights version may lag its step (grpo.max_staleness; a learner of 3
                        // would refuse it, a rollout of 3 would wait for weights the learners send later)
#define MSG_HEADER_BYTES 32

typedef enum { MSG_GROUP = 1, MSG_WEIGHTS = 2 } MsgType;

typedef struct {
    uint32_t magic;
    uint16_t protocol;
    uint16_t type;           // MsgType
    uint64_t payload_bytes;
    int64_t version;         // weights version: the one sampled with (GROUP) or being sent (WEIGHTS)
    uint32_t crc;            // CRC32 (IEEE) of the payload
} MsgHeader;

// CRC-32 (IEEE 802.3, reflected, as zlib's crc32).
uint32_t msg_crc32(const void *data, size_t n);

// Checks buf[0, n) as one whole message of type `type`: size, magic, protocol, type, payload length,
// reserved bytes, CRC. Fills h.
int msg_header_read(const uint8_t *buf, size_t n, MsgType type, MsgHeader *h, Err *e);

// Seconds one group spent in each rollout phase (for the step metrics).
typedef struct {
    double data;       // audio load + features + prompt
    double prefill;    // prompt (audio + text) through the policy, once per question
    double decode;     // sampling the G completions
    double reward;     // reward service round trip
    double reference;  // reference-model forward (0 when beta = 0)
} TrajTimes;

// One question's completions, packed: sample i owns tokens [offset[i], offset[i] + len[i]) of the flat
// arrays (the GrpoBatch layout). A failed group (failed = 1) has G = 0, no prompt, no functions, and a
// reason; question, slot, version, audio_path and the timings are still set.
typedef struct {
    int64_t question;       // global question index (the dataset index)
    int64_t slot;           // global slot, step * questions_per_step + s: decides the learner, orders groups
    int64_t version;        // weights version the completions were sampled with
    int failed;             // 1: the question could not be prepared (audio or prompt); see reason
    char *reason;           // why it failed (NULL unless failed)
    TrajTimes time;
    int G;                  // completions
    int n_prompt;
    int32_t *prompt_ids;    // [n_prompt] shared prompt (chat template, audio pads included)
    int64_t audio_samples;  // audio handle: 16 kHz samples and the path the learner reloads
    char *audio_path;
    int n_funcs;
    char **func_names;      // [n_funcs] reward function names
    float *func_rewards;    // [G, n_funcs] per-function rewards (NaN: function not applicable)
    float *rewards;         // [G] total reward
    int *offset, *len;      // [G]
    int n_tokens;           // sum of len
    int32_t *ids;           // [n_tokens] completion token ids
    uint8_t *mask;          // [n_tokens] 1 up to and including the first EOS, then 0
    float *sample_lp;       // [n_tokens] log-probs under the sampling policy
    float *ref_lp;          // [n_tokens] reference model log-probs, or NULL (beta = 0)
} TrajGroup;

// Allocates every array of g for G samples of len[i] tokens (zeroed; offsets set; strings NULL,
// func_names zeroed pointers). Sets question/slot/version/timings to 0; the caller fills the rest.
void traj_group_alloc(TrajGroup *g, int G, const int *len, int n_prompt, int n_funcs, int with_ref);
// A failed group for (question, slot): G = 0, audio_path and reason copied; version and timings 0.
void traj_group_init_failed(TrajGroup *g, int64_t question, int64_t slot, const char *audio_path, const char *reason);
void traj_group_free(TrajGroup *g);
// Semantic checks shared by encoder and decoder: counts, ids >= 0, mask 0/1 and prefix-shaped, finite
// rewards and log-probs, names and path present without NUL, names unique, slot >= 0, timings finite and
// >= 0, a failed group empty with a reason and a good one without.
int traj_group_check(const TrajGroup *g, Err *e);

// Encodes g (checked first) into a malloc'd message; *out_bytes its size.
int msg_encode_group(const TrajGroup *g, uint8_t **out, size_t *out_bytes, Err *e);
// Decodes a whole GROUP message into g (allocated; traj_group_free it). On error g holds nothing.
int msg_decode_group(const uint8_t *buf, size_t n, TrajGroup *g, Err *e);

// WEIGHTS announcement: version, buffer size and bucket size of the broadcast that follows.
typedef struct {
    int64_t version;
    uint64_t n_elems;       // fp32 elements of the flat buffer
    uint64_t bucket_elems;  // elements per broadcast bucket (the last one may be shorter)
    uint32_t n_buckets;     // ceil(n_elems / bucket_elems)
} WeightsInfo;

#define MSG_WEIGHTS_BYTES (MSG_HEADER_BYTES + 24)

// Number of buckets of n elements in pieces of bucket_elems (0 when n is 0).
uint32_t msg_weights_n_buckets(uint64_t n_elems, uint64_t bucket_elems);
// Writes the MSG_WEIGHTS_BYTES announcement of w (n_buckets derived) into buf.
void msg_encode_weights(int64_t version, uint64_t n_elems, uint64_t bucket_elems, uint8_t buf[MSG_WEIGHTS_BYTES]);
int msg_decode_weights(const uint8_t *buf, size_t n, WeightsInfo *w, Err *e);
