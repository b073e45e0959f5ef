// fuzz_reward_server: request lines as the reward server receives them (split at '\n', as its line
// buffer does) through reward_proto_answer. Invariant: every non-blank line gets exactly one response
// object that encodes to one line of valid JSON (no raw newline inside), with "error" or "rewards" /
// "items" / "stats".
#include <jansson.h>

#include "fuzz.h"
#include "reward/protocol.h"

static json_t *fuzz_stats(void *ctx) { return json_pack("{s:i}", "lines", 1); }

static void answer_line(const RewardProtoOptions *opt, const char *line, size_t len) {
    RewardLineInfo info;
    json_t *resp = reward_proto_answer(opt, line, len, fuzz_stats, NULL, &info);
    FUZZ_CHECK(json_is_object(resp), "no response object");
    FUZZ_CHECK(json_object_get(resp, "error") || json_object_get(resp, "rewards") ||
                   json_object_get(resp, "items") || json_object_get(resp, "stats"),
               "response without a result or an error");
    size_t n;
    char *out = reward_proto_dump(resp, &n);
    FUZZ_CHECK(n > 0 && out[n - 1] == '\n' && memchr(out, '\n', n) == out + n - 1, "response is not one line");
    json_t *back = json_loadb(out, n - 1, 0, NULL);
    FUZZ_CHECK(back != NULL, "response is not valid JSON: %s", out);
    json_decref(back);
    free(out);
    json_decref(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    RewardProtoOptions opt;
    reward_proto_options_default(&opt);
    opt.max_batch_items = 64;
    opt.scoring.numeric_equivalence = size > 0 && (data[0] & 1);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        size_t len = (size_t)(eol - p);
        if (len && p[len - 1] == '\r') len--;  // the server drops the '\r' of "\r\n"
        if (len) answer_line(&opt, p, len);  // the server skips empty lines only
        p = eol + 1;
    }
    return 0;
}
