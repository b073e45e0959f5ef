// Tests of common/config: defaults, the schema table, file loading and every error path, --set, cross-key
// rules, argument handling, help text, JSON round trip, the shipped configs, and jsonout formatting.
#include "test.h"
#include "config/config.h"
#include "config/jsonout.h"
#include "util/fileio.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

static const char *write_tmp(const char *name, const char *text) {
    const char *path = TMP_PATH(name);
    Err e;
    if (file_write_atomic(path, text, strlen(text), &e)) fatal("%s", e.msg);
    return path;
}

// Field-wise equality over the schema (string bytes after the NUL do not count).
static int config_equal(const Config *a, const Config *b, const char **differs) {
    static const size_t scalar_size[] = {sizeof(bool), sizeof(int), sizeof(double), 0, sizeof(int)};
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
        int same = k->type == CFG_STRING ? strcmp(fa, fb) == 0 : memcmp(fa, fb, scalar_size[k->type]) == 0;
        if (!same) {
            *differs = k->path;
            return 0;
        }
    }
    return 1;
}

static void test_defaults(void) {
    Config c;
    config_defaults(&c);
    CHECK_STR(c.model.path, "");
    CHECK(c.model.backend == CFG_BACKEND_CPU && c.model.dtype == CFG_DTYPE_FP32 && !c.model.recompute);
    CHECK(c.data.format == CFG_FORMAT_R1AQA && c.data.mono == CFG_MONO_FIRST);
    CHECK(c.data.prompt_mode == CFG_PROMPT_ANSWER && c.data.shuffle);
    CHECK_INT(c.data.max_bad_records, 100);
    CHECK_NEAR(c.data.max_audio_s, 30.0, 0);
    CHECK_INT(c.rollout.num_generations, 8);
    CHECK_NEAR(c.rollout.temperature, 1.0, 0);
    CHECK_INT(c.rollout.top_k, 50);
    CHECK_NEAR(c.rollout.top_p, 1.0, 0);
    CHECK_NEAR(c.rollout.repetition_penalty, 1.0, 0);
    CHECK_INT(c.rollout.max_new_tokens, 256);
    CHECK(!c.rollout.greedy);
    CHECK_STR(c.reward.server, "127.0.0.1:7700");
    CHECK(c.reward.accuracy_weight == 1.0 && c.reward.format_weight == 1.0 && !c.reward.numeric_equivalence);
    CHECK_INT(c.reward.timeout_ms, 30000);
    CHECK_INT(c.reward.max_failures, 5);
    CHECK_INT(c.reward.max_line_bytes, 1048576);
    CHECK(c.grpo.beta == 0.04 && c.grpo.epsilon_low == 0.2 && c.grpo.epsilon_high == 0.2);
    CHECK_INT(c.grpo.num_iterations, 1);
    CHECK(c.grpo.loss_type == CFG_LOSS_GRPO && c.grpo.scale_rewards == CFG_SCALE_GROUP);
    CHECK(c.grpo.std_eps == 1e-4 && !c.grpo.dynamic_filter);
    CHECK_INT(c.grpo.max_staleness, 0);
    CHECK(c.grpo.tis_cap == 0 && c.grpo.mismatch_bound == 2 && !c.grpo.mismatch_mask);
    CHECK(c.optim.lr == 1e-6 && c.optim.beta1 == 0.9 && c.optim.beta2 == 0.999 && c.optim.eps == 1e-8);
    CHECK(c.optim.weight_decay == 0.0 && c.optim.grad_clip == 1.0);
    CHECK(c.optim.schedule == CFG_SCHEDULE_LINEAR && c.optim.warmup_steps == 0);
    CHECK(c.train.mode == CFG_MODE_GRPO);
    CHECK_INT(c.train.max_steps, 1000);
    CHECK_INT(c.train.questions_per_step, 16);
    CHECK_INT(c.train.grad_accum, 2);
    CHECK_INT(c.train.seed, 42);
    CHECK_STR(c.train.run_dir, "runs/default");
    CHECK_INT(c.train.save_every, 100);
    CHECK_INT(c.train.keep_last, 3);
    CHECK(!c.train.resume && c.train.epochs == 1);
    CHECK(c.log.level == LOG_INFO && c.log.every == 1 && c.log.jsonl && c.log.hdf5 && !c.log.samples);
    Err e;
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);
    // The "" = model.path rules.
    snprintf(c.model.path, sizeof c.model.path, "m");
    CHECK_STR(config_tokenizer_dir(&c), "m");
    CHECK_STR(config_ref_model_dir(&c), "m");
    snprintf(c.model.tokenizer, sizeof c.model.tokenizer, "t");
    snprintf(c.model.ref_model, sizeof c.model.ref_model, "r");
    CHECK_STR(config_tokenizer_dir(&c), "t");
    CHECK_STR(config_ref_model_dir(&c), "r");
}

static void test_schema(void) {
    static const char *sections[] = {"model", "data", "rollout", "reward", "grpo", "optim", "train", "log"};
    int s = 0, ok_order = 1, ok_unique = 1, ok_docs = 1;
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        size_t n = strlen(sections[s]);
        if (!(strncmp(k->path, sections[s], n) == 0 && k->path[n] == '.')) {
            s++;  // sections come in the order above, each one contiguous
            n = s < 8 ? strlen(sections[s]) : 0;
            if (s >= 8 || strncmp(k->path, sections[s], n) != 0 || k->path[n] != '.') ok_order = 0;
        }
        if (strchr(k->path + n + 1, '.')) ok_order = 0;
        for (int j = 0; j < i; j++)
            if (strcmp(config_keys[j].path, k->path) == 0 || config_keys[j].offset == k->offset)
                ok_unique = 0;
        if (!k->doc || !*k->doc) ok_docs = 0;
    }
    CHECK(ok_order && s == 7);
    CHECK(ok_unique);
    CHECK(ok_docs);
    CHECK(config_num_keys >= 60);
}

static void test_load_file(void) {
    const char *path = write_tmp("cfg_ok.json",
                                 "{\"grpo\": {\"beta\": 0, \"loss_type\": \"dapo\"},\n"
                                 " \"model\": {\"path\": \"/m/q\", \"tokenizer\": \"/t\", \"recompute\": true},\n"
                                 " \"optim\": {\"lr\": 3e-5},\n"
                                 " \"log\": {\"level\": \"debug\"}, \"data\": {}}\n");
    Config c;
    config_defaults(&c);
    Err e;
    CHECKF(config_load_file(&c, path, &e) == 0, "%s", e.msg);
    CHECK(c.grpo.beta == 0.0 && c.grpo.loss_type == CFG_LOSS_DAPO);
    CHECK_STR(c.model.path, "/m/q");
    CHECK_STR(c.model.tokenizer, "/t");
    CHECK(c.model.recompute);
    CHECK(c.optim.lr == 3e-5);
    CHECK(c.log.level == LOG_DEBUG);
    CHECK_INT(c.rollout.num_generations, 8);  // untouched keys keep their value
}

// Each bad file must fail naming the file and the key (or JSON position), and leave the Config as it was.
static void test_load_errors(void) {
    static char long_path[6000];
    memset(long_path, 0, sizeof long_path);
    strcpy(long_path, "{\"model\": {\"path\": \"");
    memset(long_path + strlen(long_path), 'a', 4096);
    strcat(long_path, "\"}}");
    struct {
        const char *json;
        const char *want[3];
    } cases[] = {
        {"{\"grpoo\": {}}",
         {"grpoo: unknown section (sections: model, data, rollout, reward, grpo, optim, train, log)"}},
        {"{\"grpo\": {\"betta\": 1}}", {"grpo.betta: unknown key", "beta, epsilon_low"}},
        {"{\"grpo\": {\"beta\": \"0.1\"}}", {"grpo.beta: expected a number, got string"}},
        {"{\"rollout\": {\"top_k\": 1.5}}", {"rollout.top_k: expected an integer, got real"}},
        {"{\"rollout\": {\"greedy\": 1}}", {"rollout.greedy: expected true or false, got integer"}},
        {"{\"model\": {\"path\": null}}", {"model.path: expected a string, got null"}},
        {"{\"grpo\": {\"beta\": -0.5}}", {"grpo.beta: -0.5 is out of range [0, inf)"}},
        {"{\"rollout\": {\"temperature\": 0}}", {"rollout.temperature: 0 is out of range (0, 100]"}},
        {"{\"rollout\": {\"num_generations\": 2000}}",
         {"rollout.num_generations: 2000 is out of range [1, 1024]"}},
        {"{\"optim\": {\"beta2\": 1}}", {"optim.beta2: 1 is out of range [0, 1)"}},
        {"{\"grpo\": {\"loss_type\": \"ppo\"}}",
         {"grpo.loss_type: \"ppo\" is not one of grpo|bnpo|dr_grpo|dapo"}},
        {"{\"grpo\": {\"loss_type\": 3}}",
         {"grpo.loss_type: expected a string (one of grpo|bnpo", "got integer"}},
        {"{\"grpo\": 5}", {"grpo: expected an object of keys, got integer"}},
        {"[1, 2]", {"expected a JSON object of sections, got array"}},
        {"{\"grpo\": {\"beta\": 0.1,}}", {":1:", "invalid JSON"}},
        {"{\n  \"grpo\": {\n    \"beta\": 0.1\n    \"x\": 1}}", {":4:", "invalid JSON"}},
        {"{\"grpo\": {\"beta\": 0.1, \"beta\": 0.2}}", {"invalid JSON", "duplicate"}},
        {"{\"model\": {\"path\": \"a\\u0000b\"}}", {"invalid JSON", "\\u0000"}},
        {long_path, {"model.path: string of 4096 bytes exceeds the limit of 4095"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_tmp("cfg_bad.json", cases[i].json);
        Config c, before;
        config_defaults(&c);
        c.grpo.beta = 0.5;
        memcpy(&before, &c, sizeof c);
        Err e = {{0}};
        CHECKF(config_load_file(&c, path, &e) == -1, "case %zu accepted", i);
        CHECKF(strncmp(e.msg, path, strlen(path)) == 0, "case %zu: no file name: %s", i, e.msg);
        for (int w = 0; w < 3 && cases[i].want[w]; w++)
            CHECKF(strstr(e.msg, cases[i].want[w]) != NULL, "case %zu: \"%s\" not in: %s", i,
                   cases[i].want[w], e.msg);
        CHECKF(memcmp(&c, &before, sizeof c) == 0, "case %zu changed the config", i);
    }
    Config c;
    config_defaults(&c);
    Err e;
    CHECK(config_load_file(&c, TMP_PATH("no_such_config.json"), &e) == -1);
    CHECK(strstr(e.msg, "no_such_config.json: cannot open") != NULL);
}

static void test_set(void) {
    Config c;
    config_defaults(&c);
    Err e;
    CHECK(config_set(&c, "grpo.beta=0.0", &e) == 0 && c.grpo.beta == 0.0);
    CHECK(config_set(&c, "model.path=/x/a=b", &e) == 0);
    CHECK_STR(c.model.path, "/x/a=b");  // only the first '=' splits
    CHECK(config_set(&c, "model.tokenizer=", &e) == 0);
    CHECK_STR(c.model.tokenizer, "");
    CHECK(config_set(&c, "rollout.greedy=true", &e) == 0 && c.rollout.greedy);
    CHECK(config_set(&c, "rollout.top_k=0", &e) == 0 && c.rollout.top_k == 0);
    CHECK(config_set(&c, "grpo.scale_rewards=none", &e) == 0 && c.grpo.scale_rewards == CFG_SCALE_NONE);
    CHECK(config_set(&c, "log.level=error", &e) == 0 && c.log.level == LOG_ERROR);
    CHECK(config_set(&c, "optim.lr=2.5e-7", &e) == 0 && c.optim.lr == 2.5e-7);
    CHECK(config_set(&c, "rollout.top_p=1", &e) == 0 && c.rollout.top_p == 1.0);

    static char long_set[5000];
    strcpy(long_set, "train.run_dir=");
    memset(long_set + strlen(long_set), 'r', 4200);
    struct {
        const char *arg;
        const char *want;
    } bad[] = {
        {"grpo.beta", "--set grpo.beta: expected section.key=value"},
        {"=1", "--set =1: expected section.key=value"},
        {"grpo.betta=1", "--set grpo.betta=1: unknown key grpo.betta"},
        {"beta=1", "unknown key beta"},
        {"grpo.beta=abc", "--set grpo.beta=abc: grpo.beta: expected a number, got \"abc\""},
        {"grpo.beta=", "grpo.beta: expected a number, got \"\""},
        {"grpo.beta=nan", "grpo.beta: expected a finite number"},
        {"grpo.beta=1e999", "grpo.beta: expected a number"},
        {"grpo.beta=-1", "grpo.beta: -1 is out of range [0, inf)"},
        {"rollout.top_p=1.5", "rollout.top_p: 1.5 is out of range (0, 1]"},
        {"rollout.top_k=2.5", "rollout.top_k: expected an integer, got \"2.5\""},
        {"rollout.num_generations=0", "rollout.num_generations: 0 is out of range [1, 1024]"},
        {"train.max_steps=99999999999999999999", "train.max_steps: expected an integer"},
        {"train.max_steps=9999999999", "train.max_steps: 9999999999 is out of range [1, 2147483647]"},
        {"rollout.greedy=yes", "rollout.greedy: expected true or false, got \"yes\""},
        {"model.backend=gpu", "model.backend: \"gpu\" is not one of cpu|cuda"},
        {"model.path=\xff\xfe", "model.path: string is not valid UTF-8"},
        {long_set, "train.run_dir: string of 4200 bytes exceeds the limit of 4095"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Config before;
        memcpy(&before, &c, sizeof c);
        CHECKF(config_set(&c, bad[i].arg, &e) == -1, "accepted %.60s", bad[i].arg);
        CHECKF(strncmp(e.msg, "--set ", 6) == 0, "no --set in: %s", e.msg);
        CHECKF(strstr(e.msg, bad[i].want) != NULL, "\"%s\" not in: %s", bad[i].want, e.msg);
        CHECKF(memcmp(&c, &before, sizeof c) == 0, "%.60s changed the config", bad[i].arg);
    }
}

static void test_validate(void) {
    Config c;
    Err e;
    config_defaults(&c);
    c.model.dtype = CFG_DTYPE_BF16;
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg, "model.dtype: bf16 needs model.backend=cuda"));
    c.model.backend = CFG_BACKEND_CUDA;
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);

    config_defaults(&c);
    CHECKF(config_set(&c, "optim.offload=host", &e) == 0, "%s", e.msg);
    CHECK(c.optim.offload == CFG_OFFLOAD_HOST);
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg, "optim.offload=host needs model.backend=cuda"));
    c.model.backend = CFG_BACKEND_CUDA;
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);
    CHECK(config_set(&c, "optim.offload=disk", &e) == -1 && strstr(e.msg, "optim.offload"));

    // colocated: GRPO, synchronous, one backend for both roles, as many rollouts as learners
    config_defaults(&c);
    CHECK(c.train.placement == CFG_PLACEMENT_DISAGGREGATED);
    CHECKF(config_set(&c, "train.placement=colocated", &e) == 0, "%s", e.msg);
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);
    c.grpo.max_staleness = 1;
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg, "colocated needs grpo.max_staleness=0 (got 1)"));
    c.grpo.max_staleness = 0;
    c.model.backend = CFG_BACKEND_CUDA;
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg, "model.backend = rollout.backend (got cuda and cpu)"));
    c.rollout.backend = CFG_BACKEND_CUDA;
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);
    c.train.mode = CFG_MODE_SFT;
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg, "train.mode=grpo only"));
    c.train.mode = CFG_MODE_GRPO;
    CHECK(config_check_world(&c, 2, 2, &e) == 0);
    CHECK(config_check_world(&c, 2, 1, &e) == -1 && strstr(e.msg, "2 learners but 1 rollouts"));
    CHECK(config_set(&c, "train.placement=shared", &e) == -1 && strstr(e.msg, "train.placement"));

    config_defaults(&c);
    c.train.questions_per_step = 5;
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg,
                                                  "train.questions_per_step (5) must be a multiple of "
                                                  "train.grad_accum (2)"));
    config_defaults(&c);
    c.optim.warmup_steps = 1001;
    CHECK(config_validate(&c, &e) == -1 &&
          strstr(e.msg, "optim.warmup_steps (1001) exceeds train.max_steps"));
    c.optim.warmup_steps = 1000;
    CHECK(config_validate(&c, &e) == 0);
    c.grpo.tis_cap = 0.5;
    CHECK(config_validate(&c, &e) == -1 && strstr(e.msg, "grpo.tis_cap 0.5: 0 (off) or at least 1"));
    c.grpo.tis_cap = 1;
    CHECK(config_validate(&c, &e) == 0);

    static const char *bad_addr[] = {"localhost", ":7011", "host:", "host:0", "host:65536", "host:70x"};
    for (int i = 0; i < 6; i++) {
        config_defaults(&c);
        snprintf(c.reward.server, sizeof c.reward.server, "%s", bad_addr[i]);
        CHECKF(config_validate(&c, &e) == -1 && strstr(e.msg, "reward.server"), "accepted %s", bad_addr[i]);
    }
    snprintf(c.reward.server, sizeof c.reward.server, "[::1]:65535");
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);

    config_defaults(&c);  // 16 questions, 2 micro-steps
    CHECK(config_check_world(&c, 8, 0, &e) == 0);
    CHECK(config_check_world(&c, 1, 0, &e) == 0);
    CHECK(config_check_world(&c, 3, 0, &e) == -1 && strstr(e.msg, "learners (3) x train.grad_accum (2)"));
    CHECK(config_check_world(&c, 16, 0, &e) == -1);

    CHECK(config_require(&c, "data.train", &e) == -1 && strstr(e.msg, "data.train: required") &&
          strstr(e.msg, "--set data.train="));
    snprintf(c.data.train, sizeof c.data.train, "x.jsonl");
    CHECK(config_require(&c, "data.train", &e) == 0);
}

// Every key set to a non-default value (strings that need escaping), written, read back: equal.
static void test_round_trip(void) {
    Config c, d;
    config_defaults(&c);
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        char *field = (char *)&c + k->offset;
        switch (k->type) {
        case CFG_BOOL: *(bool *)field = !*(bool *)field; break;
        case CFG_INT: *(int *)field = (int)k->max - i; break;
        case CFG_FLOAT: {
            double hi = isinf(k->max) ? 1e3 : k->max;
            *(double *)field = k->min + (hi - k->min) / (3.0 + i);  // 1/3-like values need 17 digits
            break;
        }
        case CFG_STRING: snprintf(field, k->cap, "a\"b\\c\n\td/\x01 \xc3\xa9 %d", i); break;
        case CFG_ENUM: {
            int n = 0;
            while (k->choices[n]) n++;
            *(int *)field = n - 1;
            break;
        }
        }
    }
    snprintf(c.reward.server, sizeof c.reward.server, "host:1");
    char *text = config_to_json(&c);
    const char *path = TMP_PATH("cfg_round.json");
    Err e;
    CHECKF(config_write(&c, path, &e) == 0, "%s", e.msg);
    config_defaults(&d);
    CHECKF(config_load_file(&d, path, &e) == 0, "%s", e.msg);
    const char *differs = "";
    CHECKF(config_equal(&c, &d, &differs), "%s differs after the round trip", differs);
    char *again = config_to_json(&d);
    CHECK_STR(again, text);
    free(again);
    free(text);
}

static void test_help(void) {
    const char *path = TMP_PATH("cfg_help.txt");
    FILE *f = fopenCheck(path, "w");
    config_print_help(f);
    fcloseCheck(f);
    Err e;
    char *text = file_read_all(path, NULL, &e);
    CHECK(text != NULL);
    if (!text) return;
    int all = 1;
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        char line[512];
        snprintf(line, sizeof line, "  %s  (", k->path);
        if (!strstr(text, line) || !strstr(text, k->doc)) {
            all = 0;
            fprintf(stderr, "     help lacks %s\n", k->path);
        }
    }
    CHECK(all);
    CHECK(strstr(text, "  grpo.beta  (float in [0, inf), default 0.04)") != NULL);
    CHECK(strstr(text, "  grpo.loss_type  (enum grpo|bnpo|dr_grpo|dapo, default grpo)") != NULL);
    CHECK(strstr(text, "  train.run_dir  (string, default \"runs/default\")") != NULL);
    CHECK(strstr(text, "  rollout.top_p  (float in (0, 1], default 1.0)") != NULL);
    CHECK(strstr(text, "  rollout.max_new_tokens  (int in [1, 8192], default 256)") != NULL);
    CHECK(strstr(text, "  log.samples  (bool, default false)") != NULL);
    free(text);
}

static void test_from_args(void) {
    const char *file = write_tmp("cfg_args.json", "{\"grpo\": {\"beta\": 0.1, \"epsilon_low\": 0.3}}");
    char setfile[4200];
    snprintf(setfile, sizeof setfile, "--config=%s", file);
    // --set before --config still applies after the file; later --set wins.
    char *argv[] = {
        "prog",  "--set",         "grpo.beta=0.2", "input.wav", setfile, "--verbose", "--set=grpo.beta=0.3",
        "--set", "optim.lr=1e-5", "--settle",      NULL};
    int argc = 10;
    Config c;
    Err e;
    CHECKF(config_from_args(&c, &argc, argv, &e) == 0, "%s", e.msg);
    CHECK(c.grpo.beta == 0.3 && c.grpo.epsilon_low == 0.3 && c.optim.lr == 1e-5);
    CHECK_INT(argc, 4);
    CHECK_STR(argv[0], "prog");
    CHECK_STR(argv[1], "input.wav");
    CHECK_STR(argv[2], "--verbose");
    CHECK_STR(argv[3], "--settle");
    CHECK(argv[4] == NULL);

    char *plain[] = {"prog", NULL};
    argc = 1;
    CHECK(config_from_args(&c, &argc, plain, &e) == 0 && argc == 1 && c.grpo.beta == 0.04);

    struct {
        char *argv[6];
        int argc;
        const char *want;
    } bad[] = {
        {{"p", "--config", NULL}, 2, "--config: missing file name"},
        {{"p", "--config", "a.json", "--config=b.json", NULL}, 4, "--config given twice"},
        {{"p", "--set", NULL}, 2, "--set: missing section.key=value"},
        {{"p", "--set", "grpo.beta", NULL}, 3, "--set grpo.beta: expected section.key=value"},
        {{"p", "--set=grpo.x=1", NULL}, 2, "--set grpo.x=1: unknown key grpo.x"},
        {{"p", "--config", "/no/such/cfg.json", NULL}, 3, "/no/such/cfg.json: cannot open"},
        {{"p", "--set", "model.dtype=bf16", NULL}, 3, "model.dtype: bf16 needs model.backend=cuda"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        argc = bad[i].argc;
        CHECKF(config_from_args(&c, &argc, bad[i].argv, &e) == -1, "case %zu accepted", i);
        CHECKF(strstr(e.msg, bad[i].want) != NULL, "\"%s\" not in: %s", bad[i].want, e.msg);
    }
    // --help-config wins over everything else (help goes to stdout).
    char *help[] = {"prog", "--set", "bad", "--help-config", NULL};
    argc = 4;
    CHECK(config_from_args(&c, &argc, help, &e) == CONFIG_ARGS_HELP);
}

// The shipped configs load and validate; default.json is exactly the effective default config.
static void test_shipped_configs(void) {
    Config c, d;
    Err e;
    config_defaults(&c);
    CHECKF(config_load_file(&c, SRC_PATH("configs/default.json"), &e) == 0, "%s", e.msg);
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);
    config_defaults(&d);
    const char *differs = "";
    CHECKF(config_equal(&c, &d, &differs), "default.json differs from the defaults at %s", differs);
    char *text = file_read_all(SRC_PATH("configs/default.json"), NULL, &e);
    char *want = config_to_json(&d);
    CHECKF(text && strcmp(text, want) == 0, "configs/default.json is not config_to_json(defaults):\n%s",
           want);
    free(text);
    free(want);

    config_defaults(&c);
    CHECKF(config_load_file(&c, SRC_PATH("configs/debug-tiny.json"), &e) == 0, "%s", e.msg);
    CHECKF(config_validate(&c, &e) == 0, "%s", e.msg);
    CHECK_INT(c.rollout.num_generations, 4);
    CHECK_INT(c.rollout.max_new_tokens, 12);
    CHECK_INT(c.train.questions_per_step, 4);
    CHECK_INT(c.train.grad_accum, 1);
    CHECK_INT(c.train.max_steps, 40);
    CHECK_STR(c.train.run_dir, "runs/debug-tiny");
    CHECK(c.model.backend == CFG_BACKEND_CPU);
    CHECK(config_check_world(&c, 1, 0, &e) == 0);
}

static void test_jsonout(void) {
    char b[64];
    CHECK_STR(jsonout_double(b, sizeof b, 0.04), "0.04");
    CHECK_STR(jsonout_double(b, sizeof b, 1.0), "1.0");
    CHECK_STR(jsonout_double(b, sizeof b, -3.0), "-3.0");
    CHECK_STR(jsonout_double(b, sizeof b, 1e-6), "1e-06");
    CHECK_STR(jsonout_double(b, sizeof b, 1e300), "1e+300");
    CHECK_STR(jsonout_double(b, sizeof b, NAN), "null");
    CHECK_STR(jsonout_double(b, sizeof b, -INFINITY), "null");
    double hard[] = {1.0 / 3.0, 0.1 + 0.2, DBL_MIN, DBL_MAX, 5e-324, 123456789.123456789};
    for (int i = 0; i < 6; i++)
        CHECKF(strtod(jsonout_double(b, sizeof b, hard[i]), NULL) == hard[i], "%s != %.17g", b, hard[i]);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    jsonout_string(&buf, &len, &cap, "a\"b\\c\nd\x1f\xc3\xa9");
    CHECK_STR(buf, "\"a\\\"b\\\\c\\nd\\u001f\xc3\xa9\"");
    CHECK_INT(len, strlen(buf));
    free(buf);
}

int main(void) {
    RUN(test_defaults);
    RUN(test_schema);
    RUN(test_load_file);
    RUN(test_load_errors);
    RUN(test_set);
    RUN(test_validate);
    RUN(test_round_trip);
    RUN(test_help);
    RUN(test_from_args);
    RUN(test_shipped_configs);
    RUN(test_jsonout);
    return test_summary("test_config");
}
