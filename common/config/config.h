// config.h: the run configuration. One JSON file per run ({"section": {"key": value}}), overridden by
// repeated `--set section.key=value` on the command line. A schema table (config.c) lists every key
// once: its type, default, range or choices, one-line doc and where it lives in the typed Config struct.
// Parsing, validation, --help-config and the effective-config JSON all walk that table, so code reads
// cfg->grpo.beta directly and no key exists in one place but not another.
// Defaults reproduce the R1-AQA recipe (shared/spec/r1-aqa-recipe.md).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/check.h"
#include "util/log.h"

// String capacities (bytes including the NUL); a longer value is an error, never truncated.
enum { CFG_PATH_CAP = 4096, CFG_NAME_CAP = 256 };
// Most completions per question (group size G): the range of rollout.num_generations, the limit of the
// group codec (comm/msg.c) and the size of the learner's per-group arrays (learner/grpo_step.c).
enum { CFG_MAX_GENERATIONS = 1024 };

typedef enum { CFG_BACKEND_CPU, CFG_BACKEND_CUDA } CfgBackend;
typedef enum { CFG_DTYPE_FP32, CFG_DTYPE_BF16 } CfgDtype;
typedef enum { CFG_FORMAT_R1AQA, CFG_FORMAT_MMAU } CfgDataFormat;
typedef enum { CFG_MONO_FIRST, CFG_MONO_MEAN } CfgMono;
typedef enum { CFG_PROMPT_ANSWER, CFG_PROMPT_THINK } CfgPromptMode;
typedef enum { CFG_LOSS_GRPO, CFG_LOSS_BNPO, CFG_LOSS_DR_GRPO, CFG_LOSS_DAPO } CfgLossType;
typedef enum { CFG_SCALE_GROUP, CFG_SCALE_BATCH, CFG_SCALE_NONE } CfgScaleRewards;
typedef enum { CFG_SCHEDULE_LINEAR, CFG_SCHEDULE_CONSTANT, CFG_SCHEDULE_COSINE } CfgSchedule;
typedef enum { CFG_MODE_GRPO, CFG_MODE_SFT } CfgTrainMode;
typedef enum { CFG_OFFLOAD_NONE, CFG_OFFLOAD_HOST } CfgOffload;
typedef enum { CFG_PLACEMENT_DISAGGREGATED, CFG_PLACEMENT_COLOCATED } CfgPlacement;

typedef struct {
    struct {
        char path[CFG_PATH_CAP];       // Hugging Face model directory
        char tokenizer[CFG_PATH_CAP];  // "" = model.path (use config_tokenizer_dir)
        CfgBackend backend;
        CfgDtype dtype;
        bool recompute;
        char ref_model[CFG_PATH_CAP];  // "" = model.path (use config_ref_model_dir)
    } model;
    struct {
        char train[CFG_PATH_CAP];
        char test[CFG_PATH_CAP];
        CfgDataFormat format;
        char audio_dir[CFG_PATH_CAP];  // "" = the data file's directory
        CfgMono mono;
        CfgPromptMode prompt_mode;
        int max_bad_records;
        bool shuffle;
        double max_audio_s;
    } data;
    struct {
        int num_generations;
        double temperature;
        int top_k;  // 0 = off
        double top_p;
        double repetition_penalty;
        int max_new_tokens;
        bool greedy;
        CfgBackend backend;
        int batch_questions;  // questions generated together (one prefill, one decode batch)
    } rollout;
    struct {
        char server[CFG_NAME_CAP];  // "host:port"
        double accuracy_weight;
        double format_weight;
        bool numeric_equivalence;
        int timeout_ms;
        double start_wait_s;  // rollouts wait this long for the reward service at start
        int max_failures;
        int max_line_bytes;
    } reward;
    struct {
        double beta;
        double epsilon_low;
        double epsilon_high;
        int num_iterations;  // mu
        CfgLossType loss_type;
        CfgScaleRewards scale_rewards;
        double std_eps;
        bool dynamic_filter;
        int max_staleness;      // k: step s is sampled with weights version >= s - k (pipeline/schedule.h)
        double tis_cap;         // C of truncated importance sampling; 0 = off
        double mismatch_bound;  // C of the bounds [1/C, C] on pi_learner / pi_sample
        bool mismatch_mask;     // drop completions whose sequence-level ratio leaves the bounds
    } grpo;
    struct {
        double lr;
        double beta1;
        double beta2;
        double eps;
        double weight_decay;
        double grad_clip;  // 0 = off
        CfgSchedule schedule;
        int warmup_steps;
        CfgOffload offload;
    } optim;
    struct {
        CfgTrainMode mode;
        CfgPlacement placement;  // where rollouts run: beside their learner (colocated) or apart
        int max_steps;
        int questions_per_step;
        int grad_accum;
        int seed;
        char run_dir[CFG_PATH_CAP];
        int save_every;  // 0 = only at the end
        int keep_last;   // 0 = keep all
        bool save_only_model;  // checkpoints without trainer state (not resumable)
        bool resume;
        double test_ckpt_pause_s;  // test hook: pause inside each checkpoint write (0 = off)
        int epochs;
        int grad_bucket_mb;     // GPU learners: gradient reduction bucket, MiB of bf16
        double nccl_timeout_s;  // GPU ranks: an NCCL wait longer than this ends the job
    } train;
    struct {
        LogLevel level;
        int every;
        bool jsonl;
        bool hdf5;
        bool samples;
    } log;
} Config;

// One schema entry. `path` is "section.key"; numbers are checked against [min, max] (an end is
// excluded when min_open / max_open); enums store the index of the chosen name in `choices`
// (NULL-terminated).
typedef enum { CFG_BOOL, CFG_INT, CFG_FLOAT, CFG_STRING, CFG_ENUM } CfgType;
typedef struct {
    const char *path;
    CfgType type;
    size_t offset;    // into Config
    size_t cap;       // CFG_STRING: capacity of the char array
    const char *def;  // default, in --set syntax
    double min, max;
    bool min_open, max_open;
    const char *const *choices;
    const char *doc;
} CfgKey;

extern const CfgKey config_keys[];
extern const int config_num_keys;

// Fills every key with its default.
void config_defaults(Config *cfg);
// Applies a JSON file (an object of sections; keys may be omitted) on top of cfg. On error cfg is
// unchanged and e names the file and the dotted key.
int config_load_file(Config *cfg, const char *path, Err *e);
// The same for JSON text[0..size) already in memory; path names it in messages.
int config_load_text(Config *cfg, const char *path, const char *text, size_t size, Err *e);
// Applies one "section.key=value" (value in the key's type: true/false, integer, number, text).
int config_set(Config *cfg, const char *assignment, Err *e);
// Rules between keys (ranges of single keys are checked when set).
int config_validate(const Config *cfg, Err *e);
// Checks that the string key `path` is non-empty ("data.train: required ...").
int config_require(const Config *cfg, const char *path, Err *e);
// Rules that need the job's shape: questions of a step split evenly over learners and micro-steps;
// train.placement=colocated pairs rollout k with learner k, so it needs as many rollouts as learners.
int config_check_world(const Config *cfg, int n_learners, int n_rollouts, Err *e);

// The effective config, every key, as indented JSON (caller frees). Loading it gives the same Config.
char *config_to_json(const Config *cfg);
// Writes config_to_json atomically.
int config_write(const Config *cfg, const char *path, Err *e);
// Every key: path, type, default, range or choices, doc.
void config_print_help(FILE *f);

// Entry point for binaries: defaults, then `--config FILE` (at most one), then each `--set k=v` (or
// `--set=k=v`) in order, then config_validate. Consumed arguments are removed from argv/argc; the rest
// (argv[0] first) stay in order for the binary. Returns 0, CONFIG_ARGS_HELP after printing help on
// stdout for `--help-config` (the caller exits 0), or -1 with e set.
enum { CONFIG_ARGS_HELP = 1 };
int config_from_args(Config *cfg, int *argc, char **argv, Err *e);

// Directories with the "" = model.path rule applied.
static inline const char *config_tokenizer_dir(const Config *cfg) {
    return cfg->model.tokenizer[0] ? cfg->model.tokenizer : cfg->model.path;
}
static inline const char *config_ref_model_dir(const Config *cfg) {
    return cfg->model.ref_model[0] ? cfg->model.ref_model : cfg->model.path;
}
