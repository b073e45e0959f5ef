// fuzz_msg: the MPI wire format (msg.h, traj.h): GROUP and WEIGHTS messages as a learner receives them. Each
// input is decoded as is, and once more with its header's payload length and CRC made to match (so
// the fuzzer reaches the payload decoder instead of stopping at the checksum). Invariant: a decoded
// message passes traj_group_check and encodes back to the same bytes.
#include "comm/msg.h"
#include "comm/traj.h"
#include "fuzz.h"

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void decode(const uint8_t *buf, size_t n) {
    TrajGroup g;
    Err e;
    if (msg_decode_group(buf, n, &g, &e) == 0) {
        FUZZ_CHECK(traj_group_check(&g, &e) == 0, "decoded group fails the check: %s", e.msg);
        uint8_t *out;
        size_t out_n;
        FUZZ_CHECK(msg_encode_group(&g, &out, &out_n, &e) == 0, "decoded group does not encode: %s", e.msg);
        FUZZ_CHECK(out_n == n && memcmp(out, buf, n) == 0, "group re-encodes to %zu other bytes (of %zu)", out_n, n);
        free(out);
        traj_group_free(&g);
    }
    WeightsInfo w;
    if (msg_decode_weights(buf, n, &w, &e) == 0) {
        uint8_t out[MSG_WEIGHTS_BYTES];
        msg_encode_weights(w.version, w.n_elems, w.bucket_elems, out);
        FUZZ_CHECK(n == MSG_WEIGHTS_BYTES && memcmp(out, buf, n) == 0, "weights re-encode to other bytes");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    decode(data, size);
    if (size < MSG_HEADER_BYTES) return 0;
    uint8_t *fixed = mallocCheck(size);
    memcpy(fixed, data, size);
    put_le(fixed + 8, size - MSG_HEADER_BYTES, 8);
    put_le(fixed + 24, msg_crc32(fixed + MSG_HEADER_BYTES, size - MSG_HEADER_BYTES), 4);
    decode(fixed, size);
    free(fixed);
    return 0;
}
