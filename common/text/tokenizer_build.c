#include "text/tokenizer_build.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "text/tokenizer.h"
#include "util/fileio.h"

const char *const QWEN2_AUDIO_ADDED[QWEN2_AUDIO_N_ADDED] = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
};

static json_t *added_token_json(int k, int with_id) {
    json_t *t = json_object();
    if (with_id) json_object_set_new(t, "id", json_integer(QWEN2_AUDIO_FIRST_ADDED + k));
    json_object_set_new(t, "content", json_string(QWEN2_AUDIO_ADDED[k]));
    json_object_set_new(t, "single_word", json_false());
    json_object_set_new(t, "lstrip", json_false());
    json_object_set_new(t, "rstrip", json_false());
    json_object_set_new(t, "normalized", json_false());
    json_object_set_new(t, "special", json_true());
    return t;
}

static int write_json(json_t *j, const char *dir, const char *name, size_t flags, Err *e) {
    char path[4096];
    path_join(path, sizeof path, dir, name);
    char *s = json_dumps(j, flags);
    if (!s) fatal("json_dumps(%s): out of memory", path);
    int rc = file_write_atomic(path, s, strlen(s), e);
    free(s);
    return rc;
}

static json_t *config_json(void) {
    json_t *c = json_object();
    json_object_set_new(c, "add_bos_token", json_false());
    json_object_set_new(c, "add_prefix_space", json_false());
    json_t *dec = json_object();
    for (int k = 0; k < QWEN2_AUDIO_N_ADDED; k++) {
        char id[16];
        snprintf(id, sizeof id, "%d", QWEN2_AUDIO_FIRST_ADDED + k);
        json_object_set_new(dec, id, added_token_json(k, 0));
    }
    json_object_set_new(c, "added_tokens_decoder", dec);
    json_t *extra = json_array();
    for (int k = 1; k < QWEN2_AUDIO_N_ADDED; k++) json_array_append_new(extra, json_string(QWEN2_AUDIO_ADDED[k]));
    json_object_set_new(c, "additional_special_tokens", extra);
    json_object_set_new(c, "bos_token", json_null());
    json_object_set_new(c, "chat_template", json_string(CHAT_TEMPLATE_QWEN2_AUDIO));
    json_object_set_new(c, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(c, "eos_token", json_string("<|im_end|>"));
    json_object_set_new(c, "errors", json_string("replace"));
    json_object_set_new(c, "model_max_length", json_integer(32768));
    json_object_set_new(c, "pad_token", json_string("<|endoftext|>"));
    json_object_set_new(c, "split_special_tokens", json_false());
    json_object_set_new(c, "tokenizer_class", json_string("Qwen2Tokenizer"));
    json_object_set_new(c, "unk_token", json_null());
    return c;
}

static int write_merges_txt(json_t *merges, const char *dir, Err *e) {
    char path[4096];
    path_join(path, sizeof path, dir, "merges.txt");
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    fputs("#version: 0.2\n", af.f);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        if (json_is_string(m)) {
            fprintf(af.f, "%s\n", json_string_value(m));
        } else {
            fprintf(af.f, "%s %s\n", json_string_value(json_array_get(m, 0)),
                    json_string_value(json_array_get(m, 1)));
        }
    }
    return atomic_commit(&af, e);
}

// Loads the written tokenizer.json back and checks the added-token ids (tests load vocab.json +
// merges.txt too).
static int verify(const char *dir, Err *e) {
    char path[4096];
    path_join(path, sizeof path, dir, "tokenizer.json");
    Tokenizer *tok = tokenizer_load(path, e);
    if (!tok) return err_prefix(e, "checking the written tokenizer");
    int bad = -1;
    for (int k = 0; k < QWEN2_AUDIO_N_ADDED && bad < 0; k++)
        if (tokenizer_token_id(tok, QWEN2_AUDIO_ADDED[k]) != QWEN2_AUDIO_FIRST_ADDED + k) bad = k;
    tokenizer_free(tok);
    if (bad >= 0)
        return err_set(e, "%s: %s does not have id %d", path, QWEN2_AUDIO_ADDED[bad], QWEN2_AUDIO_FIRST_ADDED + bad);
    return 0;
}

int tokenizer_build_qwen2_audio(const char *src, const char *out_dir, Err *e) {
    json_error_t je;
    json_t *root = json_load_file(src, 0, &je);
    if (!root) return err_set(e, "%s:%d: %s", src, je.line, je.text);
    int rc = 0;
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges)) {
        rc = err_set(e, "%s: expected model.vocab (object) and model.merges (array)", src);
        goto done;
    }
    // The audio tokens take ids 151643..151648: the BPE must stop below them.
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= QWEN2_AUDIO_FIRST_ADDED) {
            rc = err_set(e, "%s: model.vocab[\"%s\"]: id must be an integer below %d", src, key,
                         QWEN2_AUDIO_FIRST_ADDED);
            goto done;
        }
    }
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        int pair = json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1));
        if (!pair && !json_is_string(m)) {
            rc = err_set(e, "%s: model.merges[%zu]: expected \"a b\" or [a, b]", src, i);
            goto done;
        }
    }
    json_t *added = json_array();
    for (int k = 0; k < QWEN2_AUDIO_N_ADDED; k++) json_array_append_new(added, added_token_json(k, 1));
    json_object_set_new(root, "added_tokens", added);
    json_t *cfg = config_json();
    rc = dir_make(out_dir, e);
    if (!rc) rc = write_json(root, out_dir, "tokenizer.json", JSON_COMPACT, e);
    if (!rc) rc = write_json(cfg, out_dir, "tokenizer_config.json", JSON_INDENT(2), e);
    if (!rc) rc = write_json(vocab, out_dir, "vocab.json", JSON_COMPACT, e);
    if (!rc) rc = write_merges_txt(merges, out_dir, e);
    json_decref(cfg);
    if (!rc) rc = verify(out_dir, e);
done:
    json_decref(root);
    return rc;
}
