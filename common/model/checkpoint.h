// checkpoint.h: a model directory in the Hugging Face layout <-> (ModelConfig, ParamTable, flat fp32 params).
// Loading reads config.json, builds the parameter table and converts every tensor (BF16/F16/F32) into one
// fp32 allocation, checking that the files hold exactly the table's tensors with the table's shapes.
// Saving writes config.json, generation_config.json, preprocessor_config.json, the safetensors shards +
// index and the tokenizer files into "<dir>.tmp.<pid>", fsyncs, writes the ".complete" marker last and
// renames the whole directory into place: a crash leaves either the old directory or the new one, never a
// half-written directory under the final name. (Training checkpoints, model + trainer state, are
// common/ckpt's directories with a model/ saved by model_save_dir inside.)
#pragma once
#include <stddef.h>

#include "model/model_config.h"
#include "model/safetensors.h"
#include "util/check.h"

typedef enum { SAVE_BF16, SAVE_F32 } SaveDtype;

// The marker written last into a saved directory.
#define CHECKPOINT_MARKER ".complete"

// Tensor names load in two layouts: transformers 4 / the hub's Qwen2-Audio-7B-Instruct (what the
// parameter table and model_save_dir use: "language_model.model.*", "language_model.lm_head.weight",
// "audio_tower.*", "multi_modal_projector.*") and transformers 5's in-memory module names, which its
// save_pretrained writes for a model built in memory ("model.language_model.*", "lm_head.weight",
// "model.audio_tower.*", "model.multi_modal_projector.*"). A name of the second layout maps to the
// first; other names are left as they are (and then rejected as unexpected).
const char *checkpoint_canonical_name(const char *name, char *buf, size_t cap);
// st_open with every name mapped by checkpoint_canonical_name (both layouts of one tensor: an error).
int checkpoint_open(StReader *r, const char *dir, Err *e);

// Loads dir. On success *cfg and *t are filled (param_table_free(t) and free(*params) release them) and
// *params holds t->numel floats. Missing, unexpected and mis-shaped tensors are errors naming the tensor;
// with tie_word_embeddings a stored lm_head is ignored and a missing one is fine.
int model_load_dir(const char *dir, ModelConfig *cfg, ParamTable *t, float **params, Err *e);

// Loads dir's tensors into params[t->numel] for an already built table (e.g. resuming into existing
// buffers); the same checks as model_load_dir. config.json is not read.
int model_load_params(const char *dir, const ParamTable *t, float *params, Err *e);

// Parameters [lo, lo + n) of t's flat layout into out[n] as fp32, from a checkpoint opened with
// checkpoint_open: each tensor overlapping the range converted from the file mapping (no copy of the
// rest). A missing or mis-shaped tensor is an error naming it. Fills a learner's master-weight shard
// straight from the files (train_zero.h).
int model_read_range(const StReader *r, const ParamTable *t, size_t lo, size_t n, float *out, Err *e);

// Saves the model to dir atomically (see above); replaces an existing dir. tokenizer_dir (may be NULL)
// is where tokenizer.json / tokenizer_config.json / vocab.json / merges.txt / special_tokens_map.json /
// added_tokens.json / chat_template.json are copied from (those present; at least tokenizer.json or
// vocab.json must be). max_shard_bytes as in st_write_sharded.
int model_save_dir(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params,
                   SaveDtype dtype, size_t max_shard_bytes, const char *tokenizer_dir, Err *e);
// The same in bf16 from bf16 weights read on demand: read(ctx, off, n, out) gives the flat parameters
// [off, off + n) (a GPU's weights, fetched in chunks): the files hold those bits, and no host copy of the
// model is made.
int model_save_dir_bf16(const char *dir, const ModelConfig *cfg, const ParamTable *t, StReadBf16 read, void *ctx,
                        size_t max_shard_bytes, const char *tokenizer_dir, Err *e);

// 1 if dir holds the completion marker (a checkpoint reader skips directories without it).
int checkpoint_is_complete(const char *dir);
