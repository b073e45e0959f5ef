#include "config/config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "config/jsonout.h"
#include "util/fileio.h"

// ---------------------------------------------------------------------------------------------------
// The schema. Each macro takes the Config field itself (grpo.beta): the dotted path is its spelling and
// the field's C type is checked at compile time against the key's type (a negative array size fails).

#define CFG_TYPE_IS(field, T) (0 * sizeof(char[_Generic(((Config *)0)->field, T: 1, default: -1)]))
#define CFG_INT_SIZED(field) (0 * sizeof(char[sizeof(((Config *)0)->field) == sizeof(int) ? 1 : -1]))
#define CFG_AT(field) offsetof(Config, field)

#define KEY_BOOL(field, def, doc) \
    {#field, CFG_BOOL, CFG_AT(field) + CFG_TYPE_IS(field, bool), 0, def, 0, 0, false, false, NULL, doc}
#define KEY_INT(field, def, lo, hi, doc) \
    {#field, CFG_INT, CFG_AT(field) + CFG_TYPE_IS(field, int), 0, def, lo, hi, false, false, NULL, doc}
// lo_br / hi_br are '[' or '(' and ']' or ')', so a range reads as written in maths: '(', 0, 1, ']'.
#define KEY_FLOAT(field, def, lo_br, lo, hi, hi_br, doc)                                             \
    {#field, CFG_FLOAT, CFG_AT(field) + CFG_TYPE_IS(field, double), 0, def, lo, hi, (lo_br) == '(', \
     (hi_br) == ')', NULL, doc}
#define KEY_STRING(field, def, doc)                                                                  \
    {#field, CFG_STRING, CFG_AT(field) + CFG_TYPE_IS(field, char *), sizeof(((Config *)0)->field), \
     def, 0, 0, false, false, NULL, doc}
// The enum's C values must be 0, 1, ... in the order of `choices`.
#define KEY_ENUM(field, def, choices, doc) \
    {#field, CFG_ENUM, CFG_AT(field) + CFG_INT_SIZED(field), 0, def, 0, 0, false, false, choices, doc}

static const char *const backend_choices[] = {"cpu", "cuda", NULL};
static const char *const dtype_choices[] = {"fp32", "bf16", NULL};
static const char *const format_choices[] = {"r1aqa", "mmau", NULL};
static const char *const mono_choices[] = {"first", "mean", NULL};
static const char *const prompt_choices[] = {"answer", "think", NULL};
static const char *const loss_choices[] = {"grpo", "bnpo", "dr_grpo", "dapo", NULL};
static const char *const scale_choices[] = {"group", "batch", "none", NULL};
static const char *const schedule_choices[] = {"linear", "constant", "cosine", NULL};
static const char *const offload_choices[] = {"none", "host", NULL};
static const char *const mode_choices[] = {"grpo", "sft", NULL};
static const char *const placement_choices[] = {"disaggregated", "colocated", NULL};
static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};  // LogLevel order

// Keys of one section must be contiguous: the JSON output and help group them in this order.
const CfgKey config_keys[] = {
    KEY_STRING(model.path, "",
               "Model directory, Hugging Face layout (config.json, *.safetensors, tokenizer)"),
    KEY_STRING(model.tokenizer, "", "Tokenizer directory; \"\" = model.path"),
    KEY_ENUM(model.backend, "cpu", backend_choices, "Compute backend: cpu (fp32 reference) or cuda"),
    KEY_ENUM(model.dtype, "fp32", dtype_choices, "Weight and activation storage type (bf16 needs cuda)"),
    KEY_BOOL(model.recompute, "false",
             "Learner keeps only each layer's input and reruns the layer's forward in backward: activation "
             "memory of long prompts for about one more forward of compute; gradients are unchanged"),
    KEY_STRING(model.ref_model, "", "Frozen reference model for the KL term; \"\" = model.path"),

    KEY_STRING(data.train, "", "Training data file"),
    KEY_STRING(data.test, "", "Evaluation data file"),
    KEY_ENUM(data.format, "r1aqa", format_choices,
             "Data layout: r1aqa (JSON lines, answer index) or mmau (test-mini JSON, answer text)"),
    KEY_STRING(data.audio_dir, "", "Base of relative audio paths; \"\" = the data file's directory"),
    KEY_ENUM(data.mono, "first", mono_choices, "Multi-channel audio to mono: first channel or mean"),
    KEY_ENUM(data.prompt_mode, "answer", prompt_choices,
             "Prompt asks for <answer> only, or <think> then <answer>"),
    KEY_INT(data.max_bad_records, "100", 0, INT_MAX, "Bad records skipped (each reported) before stopping"),
    KEY_BOOL(data.shuffle, "true", "Seeded shuffle of the question order each epoch"),
    KEY_FLOAT(data.max_audio_s, "30", '(', 0, 30, ']',
              "Audio beyond this many seconds is cut (the encoder takes at most 30 s)"),

    KEY_INT(rollout.num_generations, "8", 1, CFG_MAX_GENERATIONS, "Completions sampled per question (group size G)"),
    KEY_FLOAT(rollout.temperature, "1.0", '(', 0, 100, ']', "Sampling temperature"),
    KEY_INT(rollout.top_k, "50", 0, 1000000, "Sample among the k most likely tokens; 0 = off"),
    KEY_FLOAT(rollout.top_p, "1.0", '(', 0, 1, ']', "Nucleus sampling probability mass; 1 = off"),
    KEY_FLOAT(rollout.repetition_penalty, "1.0", '(', 0, 100, ']',
              "Penalty on tokens already generated (HF rule); 1 = off"),
    KEY_INT(rollout.max_new_tokens, "256", 1, 8192, "Most tokens generated per completion"),
    KEY_BOOL(rollout.greedy, "false", "Take the most likely token instead of sampling"),
    KEY_ENUM(rollout.backend, "cpu", backend_choices,
             "Compute backend of the rollout ranks (policy sampling and reference log-probs): cpu or cuda (one "
             "GPU per rank, the node-local rank's); independent of model.backend, the learners'"),
    KEY_INT(rollout.batch_questions, "1", 1, 64,
            "Questions a rollout rank generates together (prompts prefilled in one batch, every sample "
            "decoded in one batch); the samples are the same as one question at a time"),

    KEY_STRING(reward.server, "127.0.0.1:7700", "Reward service address, host:port"),
    KEY_FLOAT(reward.accuracy_weight, "1", '[', 0, INFINITY, ')', "Weight of the accuracy reward"),
    KEY_FLOAT(reward.format_weight, "1", '[', 0, INFINITY, ')', "Weight of the (think-)format reward"),
    KEY_BOOL(reward.numeric_equivalence, "false", "Accuracy also accepts equal numbers (\"2\" and \"2.0\")"),
    KEY_INT(reward.timeout_ms, "30000", 1, 3600000, "Time allowed for one scoring request, milliseconds"),
    KEY_FLOAT(reward.start_wait_s, "60", '[', 0, 3600, ']',
              "At start, seconds a rollout waits for the reward service to answer (launchers start it "
              "alongside the job) before stopping with an error naming reward.server"),
    KEY_INT(reward.max_failures, "5", 0, 1000000, "Consecutive failed scoring requests before stopping"),
    KEY_INT(reward.max_line_bytes, "1048576", 1024, 1 << 30, "Longest request or response line, bytes"),

    KEY_FLOAT(grpo.beta, "0.04", '[', 0, INFINITY, ')',
              "KL penalty coefficient (k3); 0 = no reference model"),
    KEY_FLOAT(grpo.epsilon_low, "0.2", '[', 0, 1, ']', "Lower ratio clip: 1 - epsilon_low"),
    KEY_FLOAT(grpo.epsilon_high, "0.2", '[', 0, 10, ']', "Upper ratio clip: 1 + epsilon_high"),
    KEY_INT(grpo.num_iterations, "1", 1, 1024, "Optimizer updates per generated batch (mu)"),
    KEY_ENUM(grpo.loss_type, "grpo", loss_choices,
             "Token loss aggregation: grpo (mean per sequence, then mean), bnpo (mean over the "
             "micro-batch's tokens), dr_grpo (sum / (sequences x max_new_tokens)), dapo (mean over the "
             "step's tokens)"),
    KEY_ENUM(grpo.scale_rewards, "group", scale_choices,
             "Divide advantages by the reward std of the group, of the batch, or not at all"),
    KEY_FLOAT(grpo.std_eps, "1e-4", '(', 0, 1, ']', "Added to the reward std before dividing"),
    KEY_BOOL(grpo.dynamic_filter, "false", "Drop groups whose rewards are all equal (zero advantage)"),
    KEY_INT(grpo.max_staleness, "0", 0, 64,
            "Asynchronous rollout: rollouts sample step s with weights version max(s - k, the last checkpoint "
            "step <= s, the first step), so they generate steps s + 1 .. s + k while learners train step s; "
            "learners refuse groups more than k versions old; 0 = synchronous"),
    KEY_FLOAT(grpo.tis_cap, "0", '[', 0, INFINITY, ')',
              "Truncated importance sampling: each token's policy loss is weighted by min(pi_learner / "
              "pi_sample, C), pi_learner the learner's log-probs before the update, pi_sample the rollout's; "
              "0 = off"),
    KEY_FLOAT(grpo.mismatch_bound, "2", '(', 1, INFINITY, ')',
              "C of the bounds [1/C, C] on pi_learner / pi_sample: the metric mismatch.out_frac (tokens "
              "outside) and grpo.mismatch_mask"),
    KEY_BOOL(grpo.mismatch_mask, "false",
             "Drop from the loss every completion whose sequence-level ratio (geometric mean of pi_learner / "
             "pi_sample over its tokens) lies outside [1/C, C], C = grpo.mismatch_bound"),

    KEY_FLOAT(optim.lr, "1e-6", '[', 0, 1, ']', "Peak learning rate (AdamW)"),
    KEY_FLOAT(optim.beta1, "0.9", '[', 0, 1, ')', "AdamW first-moment decay"),
    KEY_FLOAT(optim.beta2, "0.999", '[', 0, 1, ')', "AdamW second-moment decay"),
    KEY_FLOAT(optim.eps, "1e-8", '(', 0, 1, ']', "AdamW denominator epsilon"),
    KEY_FLOAT(optim.weight_decay, "0", '[', 0, INFINITY, ')', "AdamW decoupled weight decay"),
    KEY_FLOAT(optim.grad_clip, "1.0", '[', 0, INFINITY, ')',
              "Clip the global gradient norm to this; 0 = off"),
    KEY_ENUM(optim.schedule, "linear", schedule_choices,
             "Learning rate after warm-up: linear or cosine decay to 0 at train.max_steps, or constant"),
    KEY_INT(optim.warmup_steps, "0", 0, INT_MAX, "Linear learning-rate warm-up from 0, steps"),
    KEY_ENUM(optim.offload, "none", offload_choices,
             "GPU learner: none (fp32 master weights and AdamW moments of the ZeRO-1 shard on the GPU) or "
             "host (in pinned host memory, updated there by the CPU per gradient bucket; 12 bytes per "
             "shard element move off the GPU; needs model.backend=cuda)"),

    KEY_ENUM(train.mode, "grpo", mode_choices, "grpo (reinforcement learning) or sft (on the solutions)"),
    KEY_ENUM(train.placement, "disaggregated", placement_choices,
             "GRPO: disaggregated (every rollout rank on a GPU of its own, weights sent to it each step over "
             "NCCL or MPI) or colocated (mpirun -np L learner : -np L rollout; rollout k beside learner k, on "
             "its GPU, reading its weights in place through CUDA IPC, or POSIX shared memory on the cpu "
             "backend; needs grpo.max_staleness=0 and the same backend for both roles)"),
    KEY_INT(train.max_steps, "1000", 1, INT_MAX, "Optimizer steps"),
    KEY_INT(train.questions_per_step, "16", 1, 1 << 20, "Questions per optimizer step, all ranks together"),
    KEY_INT(train.grad_accum, "2", 1, 1 << 20, "Micro-steps per optimizer step"),
    KEY_INT(train.seed, "42", 0, INT_MAX, "Seed of data order, sampling and initialisation"),
    KEY_STRING(train.run_dir, "runs/default", "Output directory: effective config, metrics, checkpoints"),
    KEY_INT(train.save_every, "100", 0, INT_MAX, "Checkpoint every this many steps; 0 = only at the end"),
    KEY_INT(train.keep_last, "3", 0, INT_MAX, "Newest checkpoints kept, older ones deleted; 0 = keep all"),
    KEY_BOOL(train.save_only_model, "false",
             "Checkpoints hold model/ only, no trainer state (optimizer, data cursor, RNG): a run cannot resume "
             "from them (a resume passes over them). For disks too small for the optimizer state: 12 bytes a "
             "parameter, ~94 GiB at 7B"),
    KEY_BOOL(train.resume, "false", "Continue from the newest complete checkpoint in train.run_dir"),
    KEY_FLOAT(train.test_ckpt_pause_s, "0", '[', 0, 3600, ']',
              "Test only (fault-injection tests): the learner root pauses this many seconds inside every "
              "checkpoint write, after its files and before the commit, and says so in the log; 0 = off"),
    KEY_INT(train.epochs, "1", 1, INT_MAX, "Passes over the data at most (max_steps may stop earlier)"),
    KEY_INT(train.grad_bucket_mb, "256", 1, 1 << 20,
            "model.backend=cuda: gradient reduce-scatter bucket, MiB of bf16 (buckets are reduced while "
            "backward continues)"),
    KEY_FLOAT(train.nccl_timeout_s, "600", '(', 0, 86400, ']',
              "model.backend=cuda: an NCCL collective that makes no progress for this many seconds ends the "
              "job, naming the collective"),

    KEY_ENUM(log.level, "info", level_choices, "Least severe log message printed"),
    KEY_INT(log.every, "1", 1, INT_MAX, "Print a step line every this many steps"),
    KEY_BOOL(log.jsonl, "true", "Write per-step metrics to train.run_dir/metrics.jsonl"),
    KEY_BOOL(log.hdf5, "true", "Write per-step metrics to train.run_dir/metrics.h5"),
    KEY_BOOL(log.samples, "false", "Also record rollout samples (completions, rewards)"),
};
const int config_num_keys = (int)(sizeof config_keys / sizeof config_keys[0]);

// ---------------------------------------------------------------------------------------------------
// Setting one key from a typed value, with every single-key check in one place.

typedef struct {
    bool b;
    long long i;
    double f;
    const char *s;
} CfgValue;

static const CfgKey *cfg_key_find(const char *path) {
    for (int i = 0; i < config_num_keys; i++)
        if (strcmp(config_keys[i].path, path) == 0) return &config_keys[i];
    return NULL;
}

static size_t cfg_section_len(const CfgKey *k) { return (size_t)(strchr(k->path, '.') - k->path); }

// Whether key b starts a new section after key a (a NULL: b is the first key).
static int cfg_new_section(const CfgKey *a, const CfgKey *b) {
    size_t n = cfg_section_len(b);
    return !a || cfg_section_len(a) != n || strncmp(a->path, b->path, n) != 0;
}

static int cfg_in_section(const CfgKey *k, const char *section) {
    size_t n = cfg_section_len(k);
    return strlen(section) == n && strncmp(k->path, section, n) == 0;
}

static int cfg_section_known(const char *section) {
    for (int i = 0; i < config_num_keys; i++)
        if (cfg_in_section(&config_keys[i], section)) return 1;
    return 0;
}

// "model, data, ..." in table order.
static const char *cfg_sections_text(char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < config_num_keys && n < cap; i++) {
        const CfgKey *k = &config_keys[i];
        int len = (int)cfg_section_len(k);
        if (cfg_new_section(i ? &config_keys[i - 1] : NULL, k))
            n += (size_t)snprintf(out + n, cap - n, "%s%.*s", n ? ", " : "", len, k->path);
    }
    return out;
}

// "a|b|c" for enum choices.
static const char *cfg_choices_text(const CfgKey *k, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; k->choices[i]; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "|" : "", k->choices[i]);
    return out;
}

static const char *cfg_range_text(const CfgKey *k, char *out, size_t cap) {
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, isinf(k->min) ? "-inf" : "%.10g", k->min);
    snprintf(hi, sizeof hi, isinf(k->max) ? "inf" : "%.10g", k->max);
    snprintf(out, cap, "%c%s, %s%c", k->min_open ? '(' : '[', lo, hi, k->max_open ? ')' : ']');
    return out;
}

static int cfg_in_range(const CfgKey *k, double x) {
    return (k->min_open ? x > k->min : x >= k->min) && (k->max_open ? x < k->max : x <= k->max);
}

static int utf8_valid(const char *s) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    utf8proc_ssize_t n = (utf8proc_ssize_t)strlen(s);
    while (n > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t used = utf8proc_iterate(p, n, &cp);
        if (used <= 0) return 0;
        p += used;
        n -= used;
    }
    return 1;
}

// Stores v into cfg after the key's checks; the message says what is wrong without the key's name
// (callers prefix the file or the --set argument and the key).
static int cfg_store(Config *cfg, const CfgKey *k, const CfgValue *v, Err *e) {
    char *field = (char *)cfg + k->offset;
    char text[256];
    switch (k->type) {
    case CFG_BOOL: *(bool *)field = v->b; return 0;
    case CFG_INT:
        if (!cfg_in_range(k, (double)v->i))
            return err_set(e, "%lld is out of range %s", v->i, cfg_range_text(k, text, sizeof text));
        *(int *)field = (int)v->i;
        return 0;
    case CFG_FLOAT:
        if (!isfinite(v->f)) return err_set(e, "expected a finite number, got %g", v->f);
        if (!cfg_in_range(k, v->f))
            return err_set(e, "%.10g is out of range %s", v->f, cfg_range_text(k, text, sizeof text));
        *(double *)field = v->f;
        return 0;
    case CFG_STRING: {
        size_t n = strlen(v->s);
        if (n >= k->cap) return err_set(e, "string of %zu bytes exceeds the limit of %zu", n, k->cap - 1);
        if (!utf8_valid(v->s)) return err_set(e, "string is not valid UTF-8");
        memcpy(field, v->s, n + 1);
        return 0;
    }
    case CFG_ENUM:
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(k->choices[i], v->s) == 0) {
                *(int *)field = i;
                return 0;
            }
        return err_set(e, "\"%.200s\" is not one of %s", v->s, cfg_choices_text(k, text, sizeof text));
    }
    fatal("config: key %s has no type", k->path);
}

// Parses text in the key's type (--set syntax; also the defaults in the table).
static int cfg_parse_text(const CfgKey *k, const char *s, CfgValue *v, Err *e) {
    char *end;
    switch (k->type) {
    case CFG_BOOL:
        if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
            v->b = s[0] == 't';
            return 0;
        }
        return err_set(e, "expected true or false, got \"%.200s\"", s);
    case CFG_INT:
        errno = 0;
        v->i = strtoll(s, &end, 10);
        if (!*s || *end || errno == ERANGE) return err_set(e, "expected an integer, got \"%.200s\"", s);
        return 0;
    case CFG_FLOAT:
        errno = 0;
        v->f = strtod(s, &end);
        if (!*s || *end || errno == ERANGE) return err_set(e, "expected a number, got \"%.200s\"", s);
        return 0;
    case CFG_STRING:
    case CFG_ENUM: v->s = s; return 0;
    }
    fatal("config: key %s has no type", k->path);
}

static const char *json_type_name(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

static int cfg_parse_json(const CfgKey *k, const json_t *j, CfgValue *v, Err *e) {
    char text[256];
    switch (k->type) {
    case CFG_BOOL:
        if (!json_is_boolean(j)) return err_set(e, "expected true or false, got %s", json_type_name(j));
        v->b = json_is_true(j);
        return 0;
    case CFG_INT:
        if (!json_is_integer(j)) return err_set(e, "expected an integer, got %s", json_type_name(j));
        v->i = json_integer_value(j);
        return 0;
    case CFG_FLOAT:
        if (!json_is_number(j)) return err_set(e, "expected a number, got %s", json_type_name(j));
        v->f = json_number_value(j);
        return 0;
    case CFG_STRING:
    case CFG_ENUM:
        if (!json_is_string(j)) {
            if (k->type == CFG_ENUM)
                return err_set(e, "expected a string (one of %s), got %s",
                               cfg_choices_text(k, text, sizeof text), json_type_name(j));
            return err_set(e, "expected a string, got %s", json_type_name(j));
        }
        v->s = json_string_value(j);  // jansson rejects "\u0000" unless asked to allow it
        return 0;
    }
    fatal("config: key %s has no type", k->path);
}

// ---------------------------------------------------------------------------------------------------

void config_defaults(Config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        CfgValue v;
        Err e;
        if (cfg_parse_text(k, k->def, &v, &e) || cfg_store(cfg, k, &v, &e))
            fatal("config: default of %s: %s", k->path, e.msg);
    }
}

// Applies the keys of one section object onto cfg.
static int cfg_apply_section(Config *cfg, const char *file, const char *section, json_t *obj, Err *e) {
    const char *name;
    json_t *val;
    json_object_foreach(obj, name, val) {
        char path[512];
        snprintf(path, sizeof path, "%s.%.400s", section, name);
        const CfgKey *k = cfg_key_find(path);
        if (!k) {
            char known[2048];
            size_t n = 0;
            known[0] = 0;
            for (int i = 0; i < config_num_keys && n < sizeof known; i++)
                if (cfg_in_section(&config_keys[i], section))
                    n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "",
                                          config_keys[i].path + strlen(section) + 1);
            return err_set(e, "%s: %s: unknown key (%s has: %s)", file, path, section, known);
        }
        CfgValue v;
        if (cfg_parse_json(k, val, &v, e) || cfg_store(cfg, k, &v, e))
            return err_prefix(e, "%s: %s", file, path);
    }
    return 0;
}

int config_load_file(Config *cfg, const char *path, Err *e) {
    size_t size = 0;
    char *text = file_read_all(path, &size, e);
    if (!text) return -1;
    int rc = config_load_text(cfg, path, text, size, e);
    free(text);
    return rc;
}

int config_load_text(Config *cfg, const char *path, const char *text, size_t size, Err *e) {
    json_error_t jerr;
    json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return err_set(e, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column, jerr.text);
    int rc = 0;
    Config *work = mallocCheck(sizeof *work);
    memcpy(work, cfg, sizeof *work);
    if (!json_is_object(root)) {
        rc = err_set(e, "%s: expected a JSON object of sections, got %s", path, json_type_name(root));
    } else {
        const char *section;
        json_t *obj;
        json_object_foreach(root, section, obj) {
            if (!cfg_section_known(section)) {
                char names[256];
                rc = err_set(e, "%s: %.200s: unknown section (sections: %s)", path, section,
                             cfg_sections_text(names, sizeof names));
                break;
            }
            if (!json_is_object(obj)) {
                rc = err_set(e, "%s: %s: expected an object of keys, got %s", path, section,
                             json_type_name(obj));
                break;
            }
            if ((rc = cfg_apply_section(work, path, section, obj, e))) break;
        }
    }
    if (rc == 0) memcpy(cfg, work, sizeof *cfg);
    free(work);
    json_decref(root);
    return rc;
}

int config_set(Config *cfg, const char *assignment, Err *e) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return err_set(e, "--set %.200s: expected section.key=value", assignment);
    char path[256];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof path) return err_set(e, "--set %.200s: key too long", assignment);
    memcpy(path, assignment, n);
    path[n] = 0;
    const CfgKey *k = cfg_key_find(path);
    if (!k) return err_set(e, "--set %.200s: unknown key %s (see --help-config)", assignment, path);
    CfgValue v;
    if (cfg_parse_text(k, eq + 1, &v, e) || cfg_store(cfg, k, &v, e))
        return err_prefix(e, "--set %.200s: %s", assignment, path);
    return 0;
}

// "host:port" with a port in 1..65535 (the last ':' splits, so "[::1]:7011" works too).
static int cfg_check_address(const char *path, const char *addr, Err *e) {
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr) return err_set(e, "%s: \"%s\" is not host:port", path, addr);
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port < 1 || port > 65535)
        return err_set(e, "%s: \"%s\": port must be a number in [1, 65535]", path, addr);
    return 0;
}

int config_validate(const Config *cfg, Err *e) {
    if (cfg->model.dtype == CFG_DTYPE_BF16 && cfg->model.backend != CFG_BACKEND_CUDA)
        return err_set(e, "model.dtype: bf16 needs model.backend=cuda (the cpu backend is fp32 only)");
    if (cfg->optim.offload == CFG_OFFLOAD_HOST && cfg->model.backend != CFG_BACKEND_CUDA)
        return err_set(e, "optim.offload=host needs model.backend=cuda (the cpu learner's optimizer state is "
                          "in host memory already)");
    if (cfg->train.questions_per_step % cfg->train.grad_accum != 0)
        return err_set(e, "train.questions_per_step (%d) must be a multiple of train.grad_accum (%d)",
                       cfg->train.questions_per_step, cfg->train.grad_accum);
    if (cfg->optim.warmup_steps > cfg->train.max_steps)
        return err_set(e, "optim.warmup_steps (%d) exceeds train.max_steps (%d)", cfg->optim.warmup_steps,
                       cfg->train.max_steps);
    if (cfg->train.placement == CFG_PLACEMENT_COLOCATED) {
        if (cfg->train.mode != CFG_MODE_GRPO)
            return err_set(e, "train.placement=colocated pairs rollouts with learners: train.mode=grpo only");
        // In place there is one copy of the weights: a rollout a version behind would read weights the
        // learner is overwriting (docs/async-rollout.md).
        if (cfg->grpo.max_staleness > 0)
            return err_set(e, "train.placement=colocated needs grpo.max_staleness=0 (got %d): the rollout reads the "
                              "learner's weights in place, so it cannot sample with an older version while the "
                              "learner updates them",
                           cfg->grpo.max_staleness);
        if (cfg->model.backend != cfg->rollout.backend)
            return err_set(e, "train.placement=colocated needs model.backend = rollout.backend (got %s and %s): the "
                              "rollout reads the learner's parameter buffer as its own",
                           backend_choices[cfg->model.backend], backend_choices[cfg->rollout.backend]);
    }
    // A cap below 1 would down-weight even the tokens the rollout sampled exactly as the learner would.
    if (cfg->grpo.tis_cap > 0 && cfg->grpo.tis_cap < 1)
        return err_set(e, "grpo.tis_cap %g: 0 (off) or at least 1", cfg->grpo.tis_cap);
    return cfg_check_address("reward.server", cfg->reward.server, e);
}

int config_require(const Config *cfg, const char *path, Err *e) {
    const CfgKey *k = cfg_key_find(path);
    if (!k || k->type != CFG_STRING) fatal("config_require: %s is not a string key", path);
    if (((const char *)cfg + k->offset)[0] == 0)
        return err_set(e, "%s: required (set it in the config file or with --set %s=...)", path, path);
    return 0;
}

int config_check_world(const Config *cfg, int n_learners, int n_rollouts, Err *e) {
    long long per = (long long)n_learners * cfg->train.grad_accum;
    if (n_learners < 1 || cfg->train.questions_per_step % per != 0)
        return err_set(
            e, "train.questions_per_step (%d) must be a multiple of learners (%d) x train.grad_accum (%d)",
            cfg->train.questions_per_step, n_learners, cfg->train.grad_accum);
    if (cfg->train.placement == CFG_PLACEMENT_COLOCATED && n_rollouts != n_learners)
        return err_set(e,
                       "train.placement=colocated pairs rollout k with learner k: %d learners but %d rollouts (launch "
                       "mpirun -np L learner ARGS : -np L rollout ARGS)",
                       n_learners, n_rollouts);
    return 0;
}

// ---------------------------------------------------------------------------------------------------

char *config_to_json(const Config *cfg) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    jsonout_printf(&buf, &len, &cap, "{");
    const CfgKey *prev = NULL;
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        size_t sl = cfg_section_len(k);
        if (cfg_new_section(prev, k))
            jsonout_printf(&buf, &len, &cap, "%s\n  \"%.*s\": {\n", prev ? "\n  }," : "", (int)sl, k->path);
        else
            jsonout_printf(&buf, &len, &cap, ",\n");
        jsonout_printf(&buf, &len, &cap, "    \"%s\": ", k->path + sl + 1);
        const char *field = (const char *)cfg + k->offset;
        char num[64];
        switch (k->type) {
        case CFG_BOOL: jsonout_printf(&buf, &len, &cap, "%s", *(const bool *)field ? "true" : "false"); break;
        case CFG_INT: jsonout_printf(&buf, &len, &cap, "%d", *(const int *)field); break;
        case CFG_FLOAT:
            jsonout_printf(&buf, &len, &cap, "%s", jsonout_double(num, sizeof num, *(const double *)field));
            break;
        case CFG_STRING: jsonout_string(&buf, &len, &cap, field); break;
        case CFG_ENUM: jsonout_string(&buf, &len, &cap, k->choices[*(const int *)field]); break;
        }
        prev = k;
    }
    jsonout_printf(&buf, &len, &cap, "\n  }\n}\n");
    return buf;
}

int config_write(const Config *cfg, const char *path, Err *e) {
    char *text = config_to_json(cfg);
    int rc = file_write_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

void config_print_help(FILE *f) {
    fprintf(f,
            "Configuration keys. Set them in a JSON file of sections, {\"grpo\": {\"beta\": 0.04}, ...},\n"
            "given with --config FILE, and one at a time with --set section.key=value (applied after\n"
            "the file, in order). Unknown keys and bad values are errors.\n");
    static const char *type_names[] = {"bool", "int", "float", "string", "enum"};
    const CfgKey *prev = NULL;
    for (int i = 0; i < config_num_keys; i++) {
        const CfgKey *k = &config_keys[i];
        if (cfg_new_section(prev, k)) fprintf(f, "\n[%.*s]\n", (int)cfg_section_len(k), k->path);
        char extra[256] = "";
        if (k->type == CFG_INT || k->type == CFG_FLOAT) {
            char range[128];
            snprintf(extra, sizeof extra, " in %s", cfg_range_text(k, range, sizeof range));
        } else if (k->type == CFG_ENUM) {
            char choices[200];
            snprintf(extra, sizeof extra, " %s", cfg_choices_text(k, choices, sizeof choices));
        }
        const char *quote = k->type == CFG_STRING ? "\"" : "";
        fprintf(f, "  %s  (%s%s, default %s%s%s)\n      %s\n", k->path, type_names[k->type], extra, quote,
                k->def, quote, k->doc);
        prev = k;
    }
}

// Splits "--opt=value" or "--opt value"; returns the value (advancing *i past it) or NULL when argv[*i]
// is not this option. *missing is set when the option is last with no value.
static const char *cfg_arg_value(const char *opt, int argc, char **argv, int *i, int *missing) {
    size_t n = strlen(opt);
    const char *a = argv[*i];
    *missing = 0;
    if (strncmp(a, opt, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != 0) return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

int config_from_args(Config *cfg, int *argc, char **argv, Err *e) {
    config_defaults(cfg);
    const char *file = NULL;
    int missing;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--help-config") == 0) {
            config_print_help(stdout);
            return CONFIG_ARGS_HELP;
        }
        const char *v = cfg_arg_value("--config", *argc, argv, &i, &missing);
        if (missing) return err_set(e, "--config: missing file name");
        if (v) {
            if (file) return err_set(e, "--config given twice (%s, %s)", file, v);
            file = v;
            continue;
        }
        cfg_arg_value("--set", *argc, argv, &i, &missing);
        if (missing) return err_set(e, "--set: missing section.key=value");
    }
    if (file && config_load_file(cfg, file, e)) return -1;
    int kept = 1;
    for (int i = 1; i < *argc; i++) {
        int at = i;
        if (cfg_arg_value("--config", *argc, argv, &i, &missing)) continue;
        const char *v = cfg_arg_value("--set", *argc, argv, &i, &missing);
        if (v) {
            if (config_set(cfg, v, e)) return -1;
            continue;
        }
        argv[kept++] = argv[at];
    }
    *argc = kept;
    argv[kept] = NULL;
    if (config_validate(cfg, e)) return -1;
    return 0;
}
