// prepare.h: one question -> everything the model needs, computed the same way by every role (rollout,
// learner for SFT and for re-scoring groups, aqa-eval): audio_load -> cut to data.max_audio_s ->
// mel_compute (features [128, 3000] + valid frames + audio-token count N; a model with a shorter audio
// window, max_source_positions P < 1500, takes the first 2P frames of each band and audio beyond 2P
// frames is cut) -> prompt_for_question ->
// processor_encode_aqa_prompt (prompt ids, <|AUDIO|> expanded N times) and the solution
// "<answer>...</answer>" with its ids + <|im_end|> (SFT targets). The whole path is deterministic, so the
// learner recomputes features from the audio path instead of receiving them over MPI.
// A PrepContext owns a Tokenizer (its piece cache makes encoding per-thread) and a MelContext.
#pragma once
#include <stdint.h>

#include "audio/audio.h"
#include "audio/mel.h"
#include "config/config.h"
#include "data/dataset.h"
#include "data/prompt.h"
#include "text/tokenizer.h"
#include "util/check.h"

typedef struct {
    AudioMono mono;
    PromptStyle style;
    double max_audio_s;  // audio beyond this is cut, (0, 30]
    int audio_frames;    // mel frames the model's encoder takes (2 x max_source_positions), even, in
                         // [2, 3000]; 0 = 3000 (Qwen2-Audio's 30 s window)
} PrepOptions;

typedef struct {
    PrepOptions opt;
    Tokenizer *tok;
    MelContext *mel;
    int64_t max_samples;  // max_audio_s at 16 kHz, at most the audio window
    int audio_frames;     // F: mel frames per clip
    float *full;          // [MEL_N_MELS, MEL_FRAMES] scratch when F < MEL_FRAMES
    int32_t im_end_id;     // <|im_end|>: ends an assistant turn (the SFT target's last token)
    int32_t endoftext_id;  // <|endoftext|>
    int32_t audio_id;      // <|AUDIO|>
} PrepContext;

typedef struct {
    int64_t index;        // the question's dataset index
    int64_t n_samples;    // 16 kHz mono samples used (after the max_audio_s cut)
    int valid_frames;     // L: valid mel frames
    int n_audio_tokens;   // N: <|AUDIO|> tokens in the prompt
    float *features;      // [MEL_N_MELS, F], F = the context's audio_frames
    TokenIds prompt;      // chat-templated prompt ids, generation prompt included
    char *solution;       // "<answer>{choice}</answer>"
    TokenIds solution_ids;  // tokenize(solution) + <|im_end|>
} PreparedQuestion;

// The options a run's config implies: data.mono, data.max_audio_s, and the prompt style from
// data.prompt_mode (think -> r1aqa_think; answer -> mmau for data.format=mmau, else r1aqa).
PrepOptions prep_options_from_config(const Config *cfg);
// Sets o->audio_frames from the model in model_dir (its config.json): 2 x max_source_positions; a model
// whose audio input is not [128, F <= 3000] is an error naming the directory.
int prep_options_set_model(PrepOptions *o, const char *model_dir, Err *e);
// The dataset options a run's config implies (data.format, data.audio_dir, data.max_bad_records); the
// strings point into cfg.
DataOptions prep_data_options(const Config *cfg);

// Loads the tokenizer from tokenizer_path (a directory or tokenizer.json) and looks up the special ids;
// a tokenizer without <|im_end|>, <|endoftext|> or <|AUDIO|> is an error naming the path.
int prep_context_init(PrepContext *ctx, const char *tokenizer_path, const PrepOptions *opt, Err *e);
void prep_context_free(PrepContext *ctx);
// The two ids that end a completion, {<|im_end|>, <|endoftext|>}, into eos[2].
void prep_eos_ids(const PrepContext *ctx, int eos[2]);

// Prepares q into out (prep_question_free it). Bad input (unreadable audio, audio too short for one
// audio token, text the tokenizer rejects) returns -1 with e naming the question (id, file line) and the
// audio file; out then holds nothing.
int prep_question(PrepContext *ctx, const Question *q, PreparedQuestion *out, Err *e);
void prep_question_free(PreparedQuestion *p);
