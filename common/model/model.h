// model.h: Qwen2-Audio (Whisper-style audio encoder, projector, Qwen2 decoder) written once against the
// ops interface (ops.h), so the same code runs on every backend.
//
// Work is described by a ModelBatch: token sequences PACKED one after another (no padding), a list of
// attention segments saying which keys each run of queries sees, the audio clips whose encoder outputs
// replace the <|AUDIO|> tokens (in order), and the target tokens whose log-probabilities are wanted.
// A shared-prefix group (prompt once, G completions attending to it) is just another segment layout,
// so training on groups and on plain sequences share one forward/backward.
//
// Training: model_forward saves activations in a ModelActs buffer (one allocation carved from a size
// table, sized for the batch shape: every layer's, or only the layer inputs with recompute) and returns
// target log-probs; model_backward takes d(loss)/d(log-prob) per target and ACCUMULATES every trainable
// parameter's gradient into a buffer laid out like the parameters (ParamTable offsets). Inference:
// model_infer runs prefill or decode steps with a KV cache, keeping one layer of scratch.
#pragma once
#include <stdint.h>

#include "model/model_config.h"
#include "model/ops.h"
#include "util/check.h"

typedef struct Model {
    ModelConfig cfg;
    ParamTable t;
    Ops *ops;
    Tensor *params;       // backend buffer [t.numel]
    int params_borrowed;  // params belong to someone else (the colocated weights: comm/wshare.h)
    // Optional (NULL: never called): model_backward calls grad_ready(grad_ctx, i) as soon as gradient
    // range i of model_grad_ranges gets no more contributions from this backward, so a distributed
    // learner can start reducing it while the remaining layers run.
    void (*grad_ready)(void *grad_ctx, int range);
    void *grad_ctx;
} Model;

// A contiguous range [lo, hi) of the flat parameter / gradient buffer.
typedef struct {
    size_t lo, hi;
} GradRange;

// Number of ranges model_grad_ranges lists for cfg.
int model_grad_range_count(const ModelConfig *cfg);
// The gradient ranges in the order model_backward finishes them: the decoder's final norm and lm_head,
// the decoder layers last to first, the embedding, the audio projector and final norm, the audio
// layers last to first, the convolution front end (audio ranges are reported also for batches without
// audio, at the end). Each range ends where the previous one starts, so together they cover
// [0, t.numel) once, from the top down. out: [model_grad_range_count].
void model_grad_ranges(const Model *m, GradRange *out);

// Builds the table for cfg and uploads host_params ([t.numel], ParamTable layout).
void model_init(Model *m, const ModelConfig *cfg, Ops *ops, const float *host_params);
// The same over a backend buffer of t.numel elements the caller owns (model_free leaves it): params is
// taken as it is when host_params is NULL (a rollout reading its colocated learner's weights).
void model_init_at(Model *m, const ModelConfig *cfg, Ops *ops, const float *host_params, Tensor *params);
// Moves the parameters into dst (t.numel elements of backend memory the caller owns, which model_free
// then leaves): the colocated learner's weights into shared memory.
void model_params_move(Model *m, Tensor *dst);
void model_free(Model *m);
// Checks the shape rules the model relies on (heads divide dims, GQA grouping, even head_dim ...).
int model_config_check(const ModelConfig *c, Err *e);

// ---- batches ----

typedef struct {
    int n_tokens, cap_tokens;
    int *ids;     // [n_tokens]
    int *pos;     // [n_tokens] RoPE positions
    int *kv_row;  // [n_tokens] KV-cache row each token's key/value goes to (model_infer only)
    int n_segs, cap_segs;
    AttnSeg *segs;
    int n_audio, cap_audio, audio_frames;  // audio_frames: mel frames per clip (2 * a_max_pos)
    int n_mels;
    float *features;  // [n_audio, n_mels, audio_frames], host copies
    int *valid;       // [n_audio] valid mel frames L (the feature mask's sum)
    int n_tgt, cap_tgt;
    int *tgt_row;  // [n_tgt] row whose output predicts the target
    int *tgt_id;   // [n_tgt]
} ModelBatch;

void mbatch_init(ModelBatch *b, const ModelConfig *c);
void mbatch_free(ModelBatch *b);
void mbatch_clear(ModelBatch *b);
// A causal sequence at positions 0..n-1; adds targets ids[i] (predicted by row i-1) for i in
// [max(first_target, 1), n) (pass n for none). Returns the row of its first token.
int mbatch_add_seq(ModelBatch *b, const int *ids, int n, int first_target);
// A shared-prefix group: prefix[P] once, then completion g (comp[g], comp_len[g] tokens) at positions
// P.. attending to the prefix and causally to itself. With targets, adds every completion token, g by g
// (token 0 is predicted by the prefix's last row). comp_row[g] (may be NULL) gets each completion's first
// row. Returns the prefix's first row.
int mbatch_add_group(ModelBatch *b, const int *prefix, int P, const int *const *comp, const int *comp_len, int G,
                     int with_targets, int *comp_row);
// One audio clip: features [n_mels, audio_frames] (copied) with `valid` frames; clips are consumed in
// order by the <|AUDIO|> tokens of the batch, whose count must match the clips' kept rows exactly. A batch
// without clips embeds <|AUDIO|> like any token (HF without input_features).
void mbatch_add_audio(ModelBatch *b, const float *features, int valid);
void mbatch_add_target(ModelBatch *b, int row, int id);
// Low level (decode steps): one token with its position and cache row, and a segment.
void mbatch_add_token(ModelBatch *b, int id, int pos, int kv_row);
void mbatch_add_seg(ModelBatch *b, AttnSeg s);

// ---- training forward / backward ----

typedef struct ModelActs ModelActs;
// What activations keep. ACTS_INFER: one layer of scratch (model_infer, scoring). ACTS_TRAIN: every
// layer's activations for model_backward. ACTS_RECOMPUTE: only every layer's input plus one layer of
// scratch; model_backward reruns each layer's forward just before its backward (decoder and encoder
// layers), so long prompts train in a fraction of the memory for about one more forward of compute. The
// gradients are the same bits as ACTS_TRAIN's (same ops, same order, same inputs).
typedef enum { ACTS_INFER = 0, ACTS_TRAIN = 1, ACTS_RECOMPUTE = 2 } ActsMode;
// Activations for batches of up to max_tokens tokens, max_audio clips and max_tgt targets.
ModelActs *model_acts_create(Model *m, int max_tokens, int max_audio, int max_tgt, ActsMode mode);
void model_acts_free(Model *m, ModelActs *a);
size_t model_acts_bytes(const ModelActs *a);

// The size table of model_acts_create, by part, without allocating: what a backend of act_size-byte
// elements would allocate for this shape (memory planning for models that do not fit here).
typedef enum {
    ACTS_PART_INPUTS,     // every layer's input (residual stream), encoder and decoder
    ACTS_PART_LAYERS,     // per-layer activations: all layers (ACTS_TRAIN) or one layer of scratch
    ACTS_PART_AUDIO,      // encoder conv front end, pooling, final norm, projector output
    ACTS_PART_HEAD,       // final norm, target rows, log-prob statistics, index buffers
    ACTS_PART_LOGITS,     // the lm_head chunk workspace ([chunk, vocab] logits + [chunk, dim] rows)
    ACTS_PART_BACKWARD,   // gradient scratch of model_backward (one layer's worth)
    ACTS_PARTS
} ActsPart;
extern const char *const acts_part_names[ACTS_PARTS];
typedef struct {
    size_t bytes;               // the total model_acts_bytes reports
    size_t part[ACTS_PARTS];    // bytes by part (sums to bytes)
    int chunk;                  // lm_head rows per chunk
} ActsSize;
ActsSize model_acts_size(const ModelConfig *c, size_t act_size, int max_tokens, int max_audio, int max_tgt,
                         ActsMode mode);

// Forward over the batch; lp (host, [b->n_tgt]) gets the targets' log-probs. With ACTS_TRAIN or
// ACTS_RECOMPUTE activations it saves what model_backward needs; with ACTS_INFER it only scores
// (reference-model log-probs).
int model_forward(Model *m, const ModelBatch *b, ModelActs *a, float *lp, Err *e);
// Logits [n, vocab] (host) of rows of the last model_forward (or model_infer) batch.
void model_logits(Model *m, ModelActs *a, const int *rows, int n, float *logits);
// The same for up to model_logits_chunk(a) rows, left in backend memory ([n, vocab], the activations'
// lm_head workspace, valid until the next call): for a sampler that runs on the backend.
int model_logits_chunk(const ModelActs *a);
const Tensor *model_logits_device(Model *m, ModelActs *a, const int *rows, int n);
// Final hidden states [T, D] (after the last norm) of the last model_forward (or model_infer) batch, in
// backend memory: a head that stays on the device (GPU sampling) multiplies its rows by lm_head itself.
const Tensor *model_final_hidden(const ModelActs *a);
// Backward of the last model_forward: dlp (host, [n_tgt]) = d loss / d lp; grads (backend buffer
// [t.numel], ParamTable layout) += d loss / d params for every trainable tensor.
void model_backward(Model *m, const ModelBatch *b, ModelActs *a, const float *dlp, Tensor *grads);

// ---- inference with a KV cache ----

typedef struct {
    int layers, rows, kv_dim;
    Tensor *k, *v;  // backend buffers [layers, rows, kv_dim], keys after RoPE
} KVCache;

void kv_cache_init(KVCache *kv, Model *m, int rows);
// Bytes of a cache of `rows` rows (keys and values) for elements of act_size bytes, without allocating.
size_t kv_cache_bytes(const ModelConfig *c, size_t act_size, int rows);
void kv_cache_free(KVCache *kv, Model *m);

// Forward of the batch's tokens writing their keys/values to rows b->kv_row of the cache; segment key
// rows index the CACHE (prefix and earlier tokens already there). Logits of the batch rows `rows`
// (host [n, vocab]; n = 0 computes none, for model_logits_device afterwards). The activations (any mode)
// need capacity for the batch.
int model_infer(Model *m, const ModelBatch *b, ModelActs *a, KVCache *kv, const int *rows, int n, float *logits,
                Err *e);
