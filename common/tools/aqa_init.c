// aqa-init: write a randomly initialised Qwen2-Audio model directory in the Hugging Face layout.
//   aqa-init --config configs/model-tiny.json --out DIR --seed S [--tokenizer DIR] [--dtype bf16|f32]
//            [--max-shard-mb N]
// The config is a config.json (the format this tool writes); the weights follow transformers' init
// (param_init.h) and depend only on the seed; tokenizer files are copied from --tokenizer.
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "util/check.h"
#include "util/log.h"

static void usage(const char *msg) {
    fprintf(stderr,
            "aqa-init: %s\n"
            "usage: aqa-init --config FILE --out DIR --seed S [--tokenizer DIR] [--dtype bf16|f32]\n"
            "                [--max-shard-mb N]   (shard limit in MB of 10^6 bytes, default 5000 as HF)\n",
            msg);
    exit(2);
}

static uint64_t parse_u64(const char *flag, const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') {
        fprintf(stderr, "aqa-init: %s: \"%s\" is not a non-negative integer\n", flag, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *tokenizer = NULL, *seed_s = NULL;
    SaveDtype dtype = SAVE_BF16;
    uint64_t shard_mb = 5000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage("every option takes a value");
        const char *v = argv[++i];
        if (strcmp(a, "--config") == 0) config = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--tokenizer") == 0) tokenizer = v;
        else if (strcmp(a, "--seed") == 0) seed_s = v;
        else if (strcmp(a, "--max-shard-mb") == 0) shard_mb = parse_u64(a, v);
        else if (strcmp(a, "--dtype") == 0) {
            if (strcmp(v, "bf16") == 0) dtype = SAVE_BF16;
            else if (strcmp(v, "f32") == 0) dtype = SAVE_F32;
            else usage("--dtype must be bf16 or f32");
        } else {
            usage("unknown option");
        }
    }
    if (!config || !out || !seed_s) usage("--config, --out and --seed are required");
    if (shard_mb == 0) usage("--max-shard-mb must be positive");
    uint64_t seed = parse_u64("--seed", seed_s);
    log_init("aqa-init", -1);
    Err e;
    ModelConfig c;
    if (hf_config_load(config, &c, &e)) {
        log_error("%s", e.msg);
        return 1;
    }
    ParamTable t;
    param_table_build(&t, &c);
    float *params = mallocCheck(t.numel * sizeof(float));  // [numel]
    param_init_random(&c, &t, params, seed);
    int rc = model_save_dir(out, &c, &t, params, dtype, (size_t)shard_mb * 1000000, tokenizer, &e);
    if (rc) log_error("%s", e.msg);
    else
        log_info("wrote %s: %d tensors, %zu parameters (%s), seed %llu", out, t.n, t.numel,
                 dtype == SAVE_BF16 ? "bf16" : "f32", (unsigned long long)seed);
    free(params);
    param_table_free(&t);
    return rc ? 1 : 0;
}
