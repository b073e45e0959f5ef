// fuzz_config: the run configuration from outside bytes. The input is a config file's JSON text
// (config_load_text) and, as a NUL-terminated string, one `--set section.key=value` (config_set).
// Invariant: an accepted config passes through config_to_json and loads back to the same Config.
#include "config/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    static Config base;
    static int init;
    if (!init) config_defaults(&base);
    init = 1;
    Config cfg = base;
    Err e;
    if (config_load_text(&cfg, "fuzz.json", (const char *)data, size, &e) == 0 && config_validate(&cfg, &e) == 0) {
        char *json = config_to_json(&cfg);
        Config again = base;
        FUZZ_CHECK(config_load_text(&again, "effective.json", json, strlen(json), &e) == 0, "%s", e.msg);
        FUZZ_CHECK(memcmp(&again, &cfg, sizeof cfg) == 0, "effective config does not load back: %s", json);
        free(json);
    }
    char *assign = fuzz_cstr(data, size);
    cfg = base;
    config_set(&cfg, assign, &e);
    free(assign);
    return 0;
}
