// msg.h: the wire format of messages between roles. Every message is a 32-byte header (magic, protocol
// version, type, payload bytes, weights version, CRC32 of the payload) followed by its payload, all
// little-endian. Two payloads: a trajectory GROUP (rollout -> learner; the type and its codec are
// traj.h) and the WEIGHTS announcement that precedes a bucketed broadcast of the flat parameter buffer
// (here). Decoding validates everything (never reads out of bounds, never trusts a count) and names the
// offending field. Any change to a payload's layout bumps MSG_PROTOCOL, so mixed builds refuse each
// other's messages instead of misreading them.
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
