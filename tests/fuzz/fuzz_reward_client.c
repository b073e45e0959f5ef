// fuzz_reward_client: what the rollout's reward client reads from the network: response lines (split
// at '\n' as client.c does) decoded by json_loadb + reward_proto_result, and the service address
// ("HOST:PORT" from the config) through reward_parse_host_port. Invariant: an accepted response holds
// rewards of 0 or 1, a finite total and mmau_correct -1/0/1; an accepted address has a non-empty host
// and a port in [0, 65535].
#include <jansson.h>
#include <math.h>

#include "fuzz.h"
#include "reward/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        json_t *resp = json_loadb(p, (size_t)(eol - p), 0, NULL);
        RewardResult r;
        Err e;
        if (resp && reward_proto_result(resp, &r, &e) == 0) {
            FUZZ_CHECK((r.accuracy == 0 || r.accuracy == 1) && (r.format == 0 || r.format == 1),
                       "accepted rewards %g %g", r.accuracy, r.format);
            FUZZ_CHECK(isfinite(r.total) && r.mmau_correct >= -1 && r.mmau_correct <= 1, "accepted total %g",
                       r.total);
        }
        json_decref(resp);
        p = eol + 1;
    }
    char *addr = fuzz_cstr(data, size);
    char host[256];
    int port = -1;
    Err e;
    if (reward_parse_host_port(addr, host, sizeof host, &port, &e) == 0)
        FUZZ_CHECK(host[0] && port >= 0 && port <= 65535, "accepted host '%s' port %d", host, port);
    free(addr);
    return 0;
}
