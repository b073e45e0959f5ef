// prepare.c: see prepare.h.
#include "pipeline/prepare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/hf_config.h"
#include "text/processor.h"

PrepOptions prep_options_from_config(const Config *cfg) {
    PrepOptions o = {.mono = cfg->data.mono == CFG_MONO_MEAN ? AUDIO_MONO_MEAN : AUDIO_MONO_FIRST,
                     .max_audio_s = cfg->data.max_audio_s};
    if (cfg->data.prompt_mode == CFG_PROMPT_THINK) o.style = PROMPT_R1AQA_THINK;
    else o.style = cfg->data.format == CFG_FORMAT_MMAU ? PROMPT_MMAU : PROMPT_R1AQA;
    return o;
}

int prep_options_set_model(PrepOptions *o, const char *model_dir, Err *e) {
    ModelConfig mc;
    if (hf_config_load(model_dir, &mc, e)) return -1;
    if (mc.n_mels != MEL_N_MELS || 2 * mc.a_max_pos > MEL_FRAMES)
        return err_set(e, "%s: audio input [%d, %d], the features are [%d, at most %d]", model_dir, mc.n_mels,
                       2 * mc.a_max_pos, MEL_N_MELS, MEL_FRAMES);
    o->audio_frames = 2 * mc.a_max_pos;
    return 0;
}

DataOptions prep_data_options(const Config *cfg) {
    DataOptions o = data_options_default();
    o.audio_dir = cfg->data.audio_dir[0] ? cfg->data.audio_dir : NULL;
    o.max_bad = cfg->data.max_bad_records;
    o.format = cfg->data.format == CFG_FORMAT_MMAU ? DATA_FORMAT_MMAU : DATA_FORMAT_R1AQA;
    return o;
}

// The id of a special token the pipeline cannot work without.
static int special_id(const Tokenizer *tok, const char *token, const char *path, int32_t *id, Err *e) {
    *id = tokenizer_token_id(tok, token);
    if (*id < 0) return err_set(e, "tokenizer %s has no %s token (not a Qwen2-Audio tokenizer?)", path, token);
    return 0;
}

int prep_context_init(PrepContext *ctx, const char *tokenizer_path, const PrepOptions *opt, Err *e) {
    memset(ctx, 0, sizeof *ctx);
    if (!(opt->max_audio_s > 0 && opt->max_audio_s <= AUDIO_MAX_SAMPLES / (double)AUDIO_SAMPLE_RATE))
        return err_set(e, "max_audio_s %g not in (0, 30]", opt->max_audio_s);
    const int frames = opt->audio_frames ? opt->audio_frames : MEL_FRAMES;
    if (frames < 2 || frames > MEL_FRAMES || frames % 2)
        return err_set(e, "audio window of %d mel frames not even in [2, %d]", frames, MEL_FRAMES);
    ctx->tok = tokenizer_load(tokenizer_path, e);
    if (!ctx->tok) return -1;
    if (special_id(ctx->tok, "<|im_end|>", tokenizer_path, &ctx->im_end_id, e) ||
        special_id(ctx->tok, "<|endoftext|>", tokenizer_path, &ctx->endoftext_id, e) ||
        special_id(ctx->tok, "<|AUDIO|>", tokenizer_path, &ctx->audio_id, e)) {
        tokenizer_free(ctx->tok);
        ctx->tok = NULL;
        return -1;
    }
    ctx->opt = *opt;
    ctx->max_samples = (int64_t)floor(opt->max_audio_s * AUDIO_SAMPLE_RATE);
    if (ctx->max_samples > (int64_t)frames * AUDIO_HOP) ctx->max_samples = (int64_t)frames * AUDIO_HOP;
    ctx->audio_frames = frames;
    if (frames < MEL_FRAMES) ctx->full = mallocCheck((size_t)MEL_N_MELS * MEL_FRAMES * sizeof(float));
    ctx->mel = mel_context_create();
    return 0;
}

void prep_context_free(PrepContext *ctx) {
    if (ctx->tok) tokenizer_free(ctx->tok);
    if (ctx->mel) mel_context_free(ctx->mel);
    free(ctx->full);
    memset(ctx, 0, sizeof *ctx);
}

void prep_eos_ids(const PrepContext *ctx, int eos[2]) {
    eos[0] = ctx->im_end_id;
    eos[1] = ctx->endoftext_id;
}

void prep_question_free(PreparedQuestion *p) {
    free(p->features);
    token_ids_free(&p->prompt);
    free(p->solution);
    token_ids_free(&p->solution_ids);
    memset(p, 0, sizeof *p);
}

// Audio -> features; the audio-token count must be at least one, or the prompt would hold no audio.
// A shorter window keeps the first F frames of each band: the audio was cut to F frames, so the rest
// is padding (the same values as Whisper features of a chunk_length = F / 100 s extractor, but for the
// last frame when the audio fills the window: its STFT reaches into zeros here, reflected audio there).
static int prep_audio(PrepContext *ctx, const Question *q, PreparedQuestion *out, Err *e) {
    Audio a;
    if (audio_load(q->audio_path, ctx->opt.mono, &a, e)) return -1;
    const int F = ctx->audio_frames;
    out->n_samples = a.n < ctx->max_samples ? a.n : ctx->max_samples;
    out->features = mallocCheck((size_t)MEL_N_MELS * F * sizeof(float));  // [MEL_N_MELS, F]
    int32_t mask[MEL_FRAMES];
    float *full = F < MEL_FRAMES ? ctx->full : out->features;  // [MEL_N_MELS, MEL_FRAMES]
    out->n_audio_tokens = mel_compute(ctx->mel, a.samples, out->n_samples, full, mask);
    if (full != out->features)
        for (int m = 0; m < MEL_N_MELS; m++)
            memcpy(out->features + (size_t)m * F, full + (size_t)m * MEL_FRAMES, (size_t)F * sizeof(float));
    out->valid_frames = audio_valid_frames(out->n_samples);
    audio_free(&a);
    if (out->n_audio_tokens < 1)
        return err_set(e, "%s: %lld samples at 16 kHz are too short for one audio token", q->audio_path,
                       (long long)out->n_samples);
    return 0;
}

static int prep_text(PrepContext *ctx, const Question *q, PreparedQuestion *out, Err *e) {
    char *text = prompt_for_question(q, ctx->opt.style);
    int rc = processor_encode_aqa_prompt(ctx->tok, text, out->n_audio_tokens, &out->prompt, e);
    free(text);
    if (rc) return err_prefix(e, "prompt");
    out->solution = prompt_solution(q);
    if (tokenizer_encode(ctx->tok, out->solution, strlen(out->solution), &out->solution_ids, e))
        return err_prefix(e, "solution");
    token_ids_push(&out->solution_ids, ctx->im_end_id);
    return 0;
}

int prep_question(PrepContext *ctx, const Question *q, PreparedQuestion *out, Err *e) {
    memset(out, 0, sizeof *out);
    out->index = q->index;
    if (prep_audio(ctx, q, out, e) || prep_text(ctx, q, out, e)) {
        prep_question_free(out);
        return err_prefix(e, "question %s (line %d)", q->id, q->line);
    }
    return 0;
}
