// bench_common.h: what the GPU benchmarks share: a monotonic clock, a median, strict integer options,
// a model with random bf16 weights drawn on the device (no 16 GB host copy), the R1-AQA workload's
// inputs (one 30 s clip's features and an 846-token prompt holding its 750 <|AUDIO|> tokens), and the
// FLOP count of a training step over a ModelBatch.
#pragma once
#include "model/model.h"
#include "util/check.h"
#include "util/rng.h"

enum { BENCH_FRAMES = 3000, BENCH_TEXT = 96 };  // one 30 s clip (750 audio tokens) + 96 text tokens

double bench_now(void);
// Median of x[n] (sorts x in place).
double bench_median(double *x, int n);
// Parses the value of option `flag` as an integer in [lo, hi] into *out; an error names the flag.
int bench_parse_int(const char *flag, const char *s, int lo, int hi, int *out, Err *e);
// Parses a positive finite number (e.g. --peak-tflops).
int bench_parse_pos(const char *flag, const char *s, double *out, Err *e);

// Seconds per call of `call` over `reps` synchronised calls on backend o, after one warm-up call.
#define BENCH_TIME(o, reps, call)                 \
    ({                                            \
        call;                                     \
        (o)->sync(o);                             \
        double t0_ = bench_now();                 \
        for (int i_ = 0; i_ < (reps); i_++) call; \
        (o)->sync(o);                             \
        (bench_now() - t0_) / (reps);             \
    })

// Random weights as param_init.h draws them (normal(0, init_std), biases 0, norms 1), on the device.
void bench_model_random_gpu(Model *m, const ModelConfig *c, Ops *o);
// Log-mel features [n_mels, BENCH_FRAMES] ~ normal(0, 1) (caller frees).
float *bench_features(const ModelConfig *c, Rng *r);
// Prompt ids [*P]: random text ids with the clip's audio_token_count(BENCH_FRAMES) <|AUDIO|> tokens from
// position 3 on, where the chat template puts them (caller frees).
int *bench_prompt(const ModelConfig *c, Rng *r, int *P);

// Forward FLOPs of one model_forward over a batch, by part. A matmul of an [M, K] input with a [K, N]
// weight is 2*M*N*K; attention is QK^T plus PV, 2 * 2 * hd per (query, visible key, head).
typedef struct {
    double dec_matmul;    // decoder projections + MLP over the batch's tokens
    double lm_head;       // lm_head over lm_rows rows
    double dec_attn;      // decoder attention over the batch's segments
    double audio_matmul;  // conv1/conv2 (as im2col matmuls), encoder layers, projector, per clip
    double audio_attn;    // encoder attention, a_max_pos queries x valid positions per clip
} BenchFlops;
// lm_rows: rows the lm_head runs on (ours: the targets, b->n_tgt; transformers with labels: every token).
BenchFlops bench_flops(const ModelConfig *c, const ModelBatch *b, int lm_rows);
double bench_flops_forward(const BenchFlops *f);
// A training step (forward + backward) is 3x the forward: the backward of every matmul is two matmuls of
// the same size (input gradient and weight gradient), i.e. 6 * params_touched * tokens in all, and the
// attention backward is counted as 2x its forward (dQ, dK, dV, dP; the score recompute of a flash
// backward is not counted, so achieved TFLOP/s are model FLOPs, comparable across implementations).
double bench_flops_train(const BenchFlops *f);
