#include "model/hf_config.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/fileio.h"

// Where a key lives, for messages: "<file>: text_config.hidden_size: ...".
typedef struct {
    const char *where;
    const char *sect;  // "" (top level), "audio_config" or "text_config"
    Err *e;
} Ctx;

static int ctx_err(const Ctx *x, const char *key, const char *what) {
    return err_set(x->e, "%s: %s%s%s: %s", x->where, x->sect, *x->sect ? "." : "", key, what);
}

// Getters: an absent or null key leaves *out (the class default) untouched; a wrong type is an error.
static int get_int(const Ctx *x, json_t *o, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < INT_MIN || json_integer_value(v) > INT_MAX)
        return ctx_err(x, key, "expected an integer");
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(const Ctx *x, json_t *o, const char *key, float *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return ctx_err(x, key, "expected a number");
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(const Ctx *x, json_t *o, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return ctx_err(x, key, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

// Checks an optional string key equals one accepted value (absent/null = the default, accepted).
static int want_str(const Ctx *x, json_t *o, const char *key, const char *accepted, const char *why) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return ctx_err(x, key, "expected a string");
    if (strcmp(json_string_value(v), accepted) == 0) return 0;
    char msg[512];
    snprintf(msg, sizeof msg, "\"%s\" is not supported (%s)", json_string_value(v), why);
    return ctx_err(x, key, msg);
}

// Dropout keys must be 0: training here implements no dropout.
static int want_zero(const Ctx *x, json_t *o, const char *key) {
    float v = 0;
    if (get_float(x, o, key, &v)) return -1;
    return v == 0 ? 0 : ctx_err(x, key, "non-zero dropout is not supported");
}

// A sub-config: absent/null -> NULL (class defaults); otherwise it must be an object.
static int get_section(const Ctx *x, json_t *root, const char *key, json_t **out) {
    *out = json_object_get(root, key);
    if (*out && json_is_null(*out)) *out = NULL;
    if (*out && !json_is_object(*out)) return ctx_err(x, key, "expected a JSON object");
    return 0;
}

static int parse_audio(const Ctx *x, json_t *a, ModelConfig *c) {
    if (!a) return 0;
    if (want_str(x, a, "model_type", "qwen2_audio_encoder", "expected qwen2_audio_encoder") ||
        want_str(x, a, "activation_function", "gelu", "only exact erf GELU is implemented") ||
        get_int(x, a, "num_mel_bins", &c->n_mels) || get_int(x, a, "d_model", &c->a_dim) ||
        get_int(x, a, "encoder_layers", &c->a_layers) || get_int(x, a, "encoder_attention_heads", &c->a_heads) ||
        get_int(x, a, "encoder_ffn_dim", &c->a_ffn) || get_int(x, a, "max_source_positions", &c->a_max_pos) ||
        want_zero(x, a, "dropout") || want_zero(x, a, "attention_dropout") ||
        want_zero(x, a, "activation_dropout") || want_zero(x, a, "encoder_layerdrop"))
        return -1;
    int scale = 0;
    if (get_bool(x, a, "scale_embedding", &scale)) return -1;
    if (scale) return ctx_err(x, "scale_embedding", "true is not supported");
    // 4.4x names it init_std, 5.x initializer_range
    return get_float(x, a, "init_std", &c->init_std) || get_float(x, a, "initializer_range", &c->init_std);
}

// RoPE: 5.x rope_parameters {rope_type, rope_theta}; 4.x rope_theta (+ rope_scaling, null by default).
static int parse_rope(const Ctx *x, json_t *t, ModelConfig *c) {
    json_t *rp = json_object_get(t, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        if (!json_is_object(rp)) return ctx_err(x, "rope_parameters", "expected a JSON object");
        Ctx sub = {x->where, "text_config.rope_parameters", x->e};
        if (want_str(&sub, rp, "rope_type", "default", "only plain RoPE is implemented") ||
            want_str(&sub, rp, "type", "default", "only plain RoPE is implemented") ||
            get_float(&sub, rp, "rope_theta", &c->rope_theta))
            return -1;
    } else if (get_float(x, t, "rope_theta", &c->rope_theta)) {
        return -1;
    }
    json_t *rs = json_object_get(t, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) return ctx_err(x, "rope_scaling", "expected a JSON object or null");
        Ctx sub = {x->where, "text_config.rope_scaling", x->e};
        if (want_str(&sub, rs, "rope_type", "default", "rope scaling is not implemented") ||
            want_str(&sub, rs, "type", "default", "rope scaling is not implemented"))
            return -1;
    }
    return 0;
}

static int parse_text(const Ctx *x, json_t *t, ModelConfig *c, int *tie_set) {
    c->kv_heads = -1;  // Qwen2Config: None -> num_attention_heads
    c->head_dim = -1;  // absent -> hidden_size / num_attention_heads
    if (t) {
        if (want_str(x, t, "model_type", "qwen2", "expected qwen2") ||
            want_str(x, t, "hidden_act", "silu", "only SiLU is implemented") ||
            get_int(x, t, "vocab_size", &c->vocab) || get_int(x, t, "hidden_size", &c->dim) ||
            get_int(x, t, "intermediate_size", &c->ffn) || get_int(x, t, "num_hidden_layers", &c->layers) ||
            get_int(x, t, "num_attention_heads", &c->heads) || get_int(x, t, "num_key_value_heads", &c->kv_heads) ||
            get_int(x, t, "head_dim", &c->head_dim) || get_int(x, t, "max_position_embeddings", &c->max_pos) ||
            get_float(x, t, "rms_norm_eps", &c->rms_eps) || get_float(x, t, "initializer_range", &c->init_std) ||
            want_zero(x, t, "attention_dropout") || parse_rope(x, t, c))
            return -1;
        int sliding = 0, mrope = 0;
        if (get_bool(x, t, "use_sliding_window", &sliding) || get_bool(x, t, "use_mrope", &mrope)) return -1;
        if (sliding) return ctx_err(x, "use_sliding_window", "sliding-window attention is not supported");
        if (mrope) return ctx_err(x, "use_mrope", "multimodal RoPE is not supported");
        json_t *lt = json_object_get(t, "layer_types");
        if (lt && !json_is_null(lt)) {
            if (!json_is_array(lt)) return ctx_err(x, "layer_types", "expected an array");
            size_t i;
            json_t *v;
            json_array_foreach(lt, i, v) {
                if (!json_is_string(v) || strcmp(json_string_value(v), "full_attention") != 0)
                    return ctx_err(x, "layer_types", "only full_attention layers are supported");
            }
        }
        if (json_object_get(t, "tie_word_embeddings")) {
            if (get_bool(x, t, "tie_word_embeddings", &c->tie_embeddings)) return -1;
            *tie_set = 1;
        }
    }
    if (c->kv_heads < 0) c->kv_heads = c->heads;
    if (c->head_dim < 0 && c->heads > 0) c->head_dim = c->dim / c->heads;
    return 0;
}

// bos/eos live in text_config (hub) or at the top level; eos may be a list (the first is the model's own).
static int parse_special(const Ctx *x, json_t *o, ModelConfig *c) {
    if (!o) return 0;
    if (get_int(x, o, "bos_token_id", &c->bos_id)) return -1;
    json_t *eos = json_object_get(o, "eos_token_id");
    if (json_is_array(eos)) {
        if (json_array_size(eos) == 0 || !json_is_integer(json_array_get(eos, 0)))
            return ctx_err(x, "eos_token_id", "expected an integer or a non-empty list of integers");
        c->eos_id = (int)json_integer_value(json_array_get(eos, 0));
        return 0;
    }
    return get_int(x, o, "eos_token_id", &c->eos_id);
}

static int check_positive(const Ctx *x, const char *key, int v) {
    return v > 0 ? 0 : ctx_err(x, key, "must be positive");
}

static int validate(const char *where, const ModelConfig *c, Err *e) {
    Ctx a = {where, "audio_config", e}, t = {where, "text_config", e};
    if (check_positive(&a, "num_mel_bins", c->n_mels) || check_positive(&a, "d_model", c->a_dim) ||
        check_positive(&a, "encoder_layers", c->a_layers) ||
        check_positive(&a, "encoder_attention_heads", c->a_heads) ||
        check_positive(&a, "encoder_ffn_dim", c->a_ffn) || check_positive(&a, "max_source_positions", c->a_max_pos) ||
        check_positive(&t, "vocab_size", c->vocab) || check_positive(&t, "hidden_size", c->dim) ||
        check_positive(&t, "intermediate_size", c->ffn) || check_positive(&t, "num_hidden_layers", c->layers) ||
        check_positive(&t, "num_attention_heads", c->heads) ||
        check_positive(&t, "num_key_value_heads", c->kv_heads) || check_positive(&t, "head_dim", c->head_dim) ||
        check_positive(&t, "max_position_embeddings", c->max_pos))
        return -1;
    if (c->a_dim % c->a_heads) return ctx_err(&a, "encoder_attention_heads", "does not divide d_model");
    if (c->heads % c->kv_heads) return ctx_err(&t, "num_key_value_heads", "does not divide num_attention_heads");
    if (c->head_dim % 2) return ctx_err(&t, "head_dim", "must be even for RoPE");
    if (!(c->rms_eps > 0)) return ctx_err(&t, "rms_norm_eps", "must be positive");
    if (!(c->rope_theta > 0)) return ctx_err(&t, "rope_theta", "must be positive");
    Ctx top = {where, "", e};
    if (c->audio_token_id < 0 || c->audio_token_id >= c->vocab)
        return ctx_err(&top, "audio_token_index", "outside [0, vocab_size)");
    return 0;
}

int hf_config_parse(const char *json_text, const char *where, ModelConfig *c, Err *e) {
    json_error_t jerr;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return err_set(e, "%s:%d: not valid JSON: %s", where, jerr.line, jerr.text);
    // Class defaults: Qwen2AudioEncoderConfig, Qwen2Config (transformers), Qwen tokenizer special ids.
    ModelConfig d = {
        .n_mels = 128, .a_dim = 1280, .a_layers = 32, .a_heads = 20, .a_ffn = 5120, .a_max_pos = 1500,
        .a_ln_eps = 1e-5f, .vocab = 151936, .dim = 4096, .layers = 32, .heads = 32, .ffn = 22016,
        .max_pos = 32768, .rope_theta = 10000.0f, .rms_eps = 1e-6f, .tie_embeddings = 0,
        .audio_token_id = 151646, .bos_id = 151643, .eos_id = 151645, .init_std = 0.02f,
    };
    Ctx top = {where, "", e}, ax = {where, "audio_config", e}, tx = {where, "text_config", e};
    json_t *audio, *text;
    int tie_set = 0, tie_top = 0, id = -1, rc = -1;
    if (!json_is_object(root)) {
        err_set(e, "%s: not a JSON object", where);
        goto done;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt) || strcmp(json_string_value(mt), "qwen2_audio") != 0) {
        ctx_err(&top, "model_type", "must be \"qwen2_audio\"");
        goto done;
    }
    if (get_section(&top, root, "audio_config", &audio) || get_section(&top, root, "text_config", &text) ||
        parse_audio(&ax, audio, &d) || parse_text(&tx, text, &d, &tie_set) || parse_special(&top, root, &d) ||
        parse_special(&tx, text, &d) || get_bool(&top, root, "tie_word_embeddings", &tie_top) ||
        get_int(&top, root, "audio_token_index", &d.audio_token_id) || get_int(&top, root, "audio_token_id", &id))
        goto done;
    if (!tie_set) d.tie_embeddings = tie_top;  // the text model's own key wins
    if (id >= 0) {
        if (json_object_get(root, "audio_token_index") && id != d.audio_token_id) {
            ctx_err(&top, "audio_token_id", "differs from audio_token_index");
            goto done;
        }
        d.audio_token_id = id;
    }
    if (validate(where, &d, e)) goto done;
    *c = d;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int hf_config_load(const char *path, ModelConfig *c, Err *e) {
    char p[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) path_join(p, sizeof p, path, "config.json");
    else snprintf(p, sizeof p, "%s", path);
    char *text = file_read_all(p, NULL, e);
    if (!text) return -1;
    int rc = hf_config_parse(text, p, c, e);
    free(text);
    return rc;
}

// ---------------------------------------------------------------- writers

// The shortest decimal that reads back as the same float, so 1e-5f is written "1e-05", not 9.99999975e-06.
static json_t *json_float(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static int json_save(const char *path, json_t *root, Err *e) {
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(root);
    if (!text) fatal("json_dumps failed");
    size_t len = strlen(text);
    text = reallocCheck(text, len + 2);
    memcpy(text + len, "\n", 2);
    int rc = file_write_atomic(path, text, len + 1, e);
    free(text);
    return rc;
}

int hf_config_save(const char *path, const ModelConfig *c, const char *torch_dtype, Err *e) {
    json_t *audio = json_pack(
        "{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:b,s:f,s:f,s:f,s:f,s:o,s:o}", "model_type", "qwen2_audio_encoder",
        "num_mel_bins", c->n_mels, "d_model", c->a_dim, "encoder_layers", c->a_layers, "encoder_attention_heads",
        c->a_heads, "encoder_ffn_dim", c->a_ffn, "max_source_positions", c->a_max_pos, "activation_function",
        "gelu", "scale_embedding", 0, "dropout", 0.0, "attention_dropout", 0.0, "activation_dropout", 0.0,
        "encoder_layerdrop", 0.0, "init_std", json_float(c->init_std), "initializer_range",
        json_float(c->init_std));
    // Both RoPE spellings, so transformers 4.x (rope_theta) and 5.x (rope_parameters) read the same theta.
    json_t *rope = json_pack("{s:s,s:o}", "rope_type", "default", "rope_theta", json_float(c->rope_theta));
    json_t *text = json_pack(
        "{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:o,s:o,s:o,s:o,s:b,s:b,s:n,s:f,s:b,s:i,s:i,s:s,s:s}",
        "model_type", "qwen2", "vocab_size", c->vocab, "hidden_size", c->dim, "intermediate_size", c->ffn,
        "num_hidden_layers", c->layers, "num_attention_heads", c->heads, "num_key_value_heads", c->kv_heads,
        "head_dim", c->head_dim, "max_position_embeddings", c->max_pos, "hidden_act", "silu", "rms_norm_eps",
        json_float(c->rms_eps), "rope_theta", json_float(c->rope_theta), "rope_parameters", rope,
        "initializer_range", json_float(c->init_std), "tie_word_embeddings", c->tie_embeddings,
        "use_sliding_window", 0, "sliding_window", "attention_dropout", 0.0, "use_cache", 1, "bos_token_id",
        c->bos_id, "eos_token_id", c->eos_id, "torch_dtype", torch_dtype, "dtype", torch_dtype);
    json_t *root = json_pack("{s:[s],s:s,s:o,s:o,s:i,s:i,s:b,s:s,s:s}", "architectures",
                             "Qwen2AudioForConditionalGeneration", "model_type", "qwen2_audio", "audio_config",
                             audio, "text_config", text, "audio_token_index", c->audio_token_id, "ignore_index",
                             -100, "tie_word_embeddings", c->tie_embeddings, "torch_dtype", torch_dtype, "dtype",
                             torch_dtype);
    if (!audio || !rope || !text || !root) fatal("json_pack failed building config.json");
    return json_save(path, root, e);
}

int hf_aux_configs_save(const char *dir, const ModelConfig *c, Err *e) {
    char path[4096];
    // Sampling defaults of Qwen2-Audio-7B-Instruct's generation_config (qwen2-audio.md section 7); stop on
    // <|im_end|> and <|endoftext|>, which also pads.
    json_t *gen = json_pack("{s:i,s:i,s:[i,i],s:b,s:i,s:f,s:f,s:f}", "bos_token_id", c->bos_id, "pad_token_id",
                            c->bos_id, "eos_token_id", c->eos_id, c->bos_id, "do_sample", 1, "top_k", 20, "top_p",
                            0.5, "temperature", 0.7, "repetition_penalty", 1.1);
    if (!gen) fatal("json_pack failed building generation_config.json");
    if (json_save(path_join(path, sizeof path, dir, "generation_config.json"), gen, e)) return -1;
    const int sr = 16000, hop = 160, chunk = 30;
    json_t *pre = json_pack(
        "{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:b,s:s}", "feature_extractor_type", "WhisperFeatureExtractor",
        "feature_size", c->n_mels, "sampling_rate", sr, "hop_length", hop, "chunk_length", chunk, "n_fft", 400,
        "n_samples", chunk * sr, "nb_max_frames", chunk * sr / hop, "padding_value", 0.0, "padding_side", "right",
        "return_attention_mask", 1, "processor_class", "Qwen2AudioProcessor");
    if (!pre) fatal("json_pack failed building preprocessor_config.json");
    return json_save(path_join(path, sizeof path, dir, "preprocessor_config.json"), pre, e);
}
