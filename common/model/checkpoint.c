#include "model/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/hf_config.h"
#include "model/safetensors.h"
#include "util/fileio.h"

// transformers 5 prefix -> the table's (transformers 4, hub) prefix. Models saved from memory by
// transformers 5 use the module tree's own names: Qwen2AudioForConditionalGeneration.model holds the
// audio tower, the projector and the bare Qwen2 text model; lm_head sits at the top.
static const struct {
    const char *from, *to;
} ckpt_prefix_map[] = {
    {"model.language_model.", "language_model.model."},
    {"model.audio_tower.", "audio_tower."},
    {"model.multi_modal_projector.", "multi_modal_projector."},
    {"lm_head.", "language_model.lm_head."},
};

const char *checkpoint_canonical_name(const char *name, char *buf, size_t cap) {
    for (size_t i = 0; i < sizeof ckpt_prefix_map / sizeof ckpt_prefix_map[0]; i++) {
        size_t n = strlen(ckpt_prefix_map[i].from);
        if (strncmp(name, ckpt_prefix_map[i].from, n) != 0) continue;
        if (snprintf(buf, cap, "%s%s", ckpt_prefix_map[i].to, name + n) >= (int)cap) return name;
        return buf;
    }
    return name;
}

int checkpoint_open(StReader *r, const char *dir, Err *e) {
    if (st_open(r, dir, e)) return -1;
    if (st_rename(r, checkpoint_canonical_name, e)) {
        st_close(r);
        return err_prefix(e, "transformers 4 and 5 names of one tensor");
    }
    return 0;
}

int model_load_params(const char *dir, const ParamTable *t, float *params, Err *e) {
    StReader r;
    if (checkpoint_open(&r, dir, e)) return -1;
    int rc = 0;
    for (int i = 0; i < t->n && !rc; i++) {
        const ParamSpec *s = &t->specs[i];
        rc = st_read_f32(&r, s->name, s->ndim, s->shape, params + s->offset, e);
    }
    const ParamSpec *emb = &t->specs[t->embed];
    for (int i = 0; i < r.n && !rc; i++) {
        const StTensor *x = &r.tensors[i];
        if (param_find(t, x->name) >= 0) continue;
        // A tied checkpoint may still carry lm_head (a copy of embed_tokens); the table has no slot for it.
        if (t->lm_head == t->embed && strcmp(x->name, "language_model.lm_head.weight") == 0) {
            if (x->ndim != 2 || x->shape[0] != emb->shape[0] || x->shape[1] != emb->shape[1])
                rc = err_set(e, "%s: tensor '%s' does not have embed_tokens' shape [%lld, %lld]", st_tensor_file(&r, x),
                             x->name, (long long)emb->shape[0], (long long)emb->shape[1]);
            continue;
        }
        rc = err_set(e, "%s: unexpected tensor '%s' (not part of the model this config.json describes)",
                     st_tensor_file(&r, x), x->name);
    }
    st_close(&r);
    return rc;
}

int model_read_range(const StReader *r, const ParamTable *t, size_t lo, size_t n, float *out, Err *e) {
    for (int i = 0; i < t->n; i++) {
        const ParamSpec *s = &t->specs[i];
        size_t end = s->offset + s->numel;
        size_t a = lo > s->offset ? lo : s->offset, b = lo + n < end ? lo + n : end;  // the overlap [a, b)
        if (a < b && st_read_f32_range(r, s->name, s->ndim, s->shape, a - s->offset, b - a, out + (a - lo), e))
            return -1;
    }
    return 0;
}

int model_load_dir(const char *dir, ModelConfig *cfg, ParamTable *t, float **params, Err *e) {
    ModelConfig c;
    char cfg_path[4096];
    if (hf_config_load(path_join(cfg_path, sizeof cfg_path, dir, "config.json"), &c, e)) return -1;
    ParamTable tab;
    param_table_build(&tab, &c);
    float *p = mallocCheck(tab.numel * sizeof(float));  // [numel], carved by tab's offsets
    if (model_load_params(dir, &tab, p, e)) {
        free(p);
        param_table_free(&tab);
        return -1;
    }
    *cfg = c;
    *t = tab;
    *params = p;
    return 0;
}

int checkpoint_is_complete(const char *dir) {
    char p[4096];
    return path_exists(path_join(p, sizeof p, dir, CHECKPOINT_MARKER));
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

// rm -rf; a path that does not exist is fine.
static void remove_tree(const char *path) {
    if (path_exists(path) && nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fatal("%s: cannot remove: %s", path, strerror(errno));
}

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0) fatal("%s: cannot fsync directory: %s", path, strerror(errno));
    close(fd);
}

static int copy_file(const char *src, const char *dst, Err *e) {
    size_t n;
    char *buf = file_read_all(src, &n, e);
    if (!buf) return -1;
    int rc = file_write_atomic(dst, buf, n, e);
    free(buf);
    return rc;
}

static int copy_tokenizer(const char *src, const char *dst, Err *e) {
    static const char *files[] = {"tokenizer.json",          "tokenizer_config.json", "vocab.json",
                                  "merges.txt",              "special_tokens_map.json", "added_tokens.json",
                                  "chat_template.json"};
    char from[4096], to[4096];
    int have_vocab = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        path_join(from, sizeof from, src, files[i]);
        if (!path_exists(from)) continue;
        if (copy_file(from, path_join(to, sizeof to, dst, files[i]), e)) return -1;
        have_vocab |= i == 0 || i == 2;
    }
    if (!have_vocab) return err_set(e, "%s: no tokenizer.json or vocab.json to copy", src);
    return 0;
}

// A save in progress: everything is written under tmp, then renamed to dir in one step.
typedef struct {
    char dir[4096];  // final name
    char tmp[4200];  // "<dir>.tmp.<pid>"
} SaveDir;

static void save_abort(SaveDir *w) { remove_tree(w->tmp); }

static int save_begin(SaveDir *w, const char *dir, Err *e) {
    if (snprintf(w->dir, sizeof w->dir, "%s", dir) >= (int)sizeof w->dir) return err_set(e, "%s: path too long", dir);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", dir, (long)getpid());
    remove_tree(w->tmp);  // a leftover of an earlier crashed save by a process with the same pid
    if (dir_make(w->tmp, e)) return err_prefix(e, "saving %s", dir);
    return 0;
}

// The weights a save writes: fp32 host params, or (params NULL) bf16 ones read on demand.
typedef struct {
    const float *params;  // [numel]
    StReadBf16 read;
    void *ctx;
} SaveSource;

static int save_model_files(SaveDir *w, const ModelConfig *cfg, const ParamTable *t, const SaveSource *src,
                            SaveDtype dtype, size_t max_shard_bytes, const char *tokenizer_dir, Err *e) {
    char p[4096];
    const char *tmp = w->tmp;
    if (hf_config_save(path_join(p, sizeof p, tmp, "config.json"), cfg, dtype == SAVE_BF16 ? "bfloat16" : "float32",
                       e) ||
        hf_aux_configs_save(tmp, cfg, e))
        return err_prefix(e, "saving %s", w->dir);
    // Tied embeddings are also written as lm_head: transformers 5.17 does not tie Qwen2-Audio's lm_head
    // from the config and would otherwise initialise it at random (seen on the GPU machine).
    int tied = t->lm_head == t->embed, n = t->n + tied;
    StWriteTensor *ts = callocCheck((size_t)n, sizeof(StWriteTensor));
    for (int i = 0; i < t->n; i++) {
        const ParamSpec *s = &t->specs[i];
        ts[i] = (StWriteTensor){.name = s->name,
                                .ndim = s->ndim,
                                .data = src->params ? src->params + s->offset : NULL,
                                .read_bf16 = src->read,
                                .ctx = src->ctx,
                                .at = s->offset};
        memcpy(ts[i].shape, s->shape, sizeof s->shape);
    }
    if (tied) {
        ts[t->n] = ts[t->embed];
        ts[t->n].name = "language_model.lm_head.weight";
    }
    int shards = st_write_sharded(tmp, ts, n, dtype == SAVE_BF16 ? ST_BF16 : ST_F32, max_shard_bytes, e);
    free(ts);
    if (shards < 0 || (tokenizer_dir && copy_tokenizer(tokenizer_dir, tmp, e))) return err_prefix(e, "saving %s", w->dir);
    return 0;
}

static int save_commit(SaveDir *w, Err *e) {
    char p[4096], old[4200], parent[4096];
    const char *dir = w->dir;
    static const char marker[] = "complete\n";
    if (file_write_atomic(path_join(p, sizeof p, w->tmp, CHECKPOINT_MARKER), marker, sizeof marker - 1, e)) {
        save_abort(w);
        return -1;
    }
    fsync_dir(w->tmp);
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) *slash = 0;
    else snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
    // Replacing: move the old directory aside first (rename cannot replace a non-empty directory).
    int replaced = path_exists(dir);
    if (replaced && rename(dir, old) != 0) {
        int saved = errno;
        save_abort(w);
        return err_set(e, "%s: cannot move the previous directory aside: %s", dir, strerror(saved));
    }
    if (rename(w->tmp, dir) != 0) {
        int saved = errno;
        if (replaced) rename(old, dir);
        save_abort(w);
        return err_set(e, "%s: cannot rename %s into place: %s", dir, w->tmp, strerror(saved));
    }
    fsync_dir(parent);
    if (replaced) remove_tree(old);
    return 0;
}

static int save_model(const char *dir, const ModelConfig *cfg, const ParamTable *t, const SaveSource *src,
                      SaveDtype dtype, size_t max_shard_bytes, const char *tokenizer_dir, Err *e) {
    SaveDir w;
    if (save_begin(&w, dir, e)) return -1;
    if (save_model_files(&w, cfg, t, src, dtype, max_shard_bytes, tokenizer_dir, e)) {
        save_abort(&w);
        return -1;
    }
    return save_commit(&w, e);
}

int model_save_dir(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params,
                   SaveDtype dtype, size_t max_shard_bytes, const char *tokenizer_dir, Err *e) {
    const SaveSource src = {.params = params};
    return save_model(dir, cfg, t, &src, dtype, max_shard_bytes, tokenizer_dir, e);
}

int model_save_dir_bf16(const char *dir, const ModelConfig *cfg, const ParamTable *t, StReadBf16 read, void *ctx,
                        size_t max_shard_bytes, const char *tokenizer_dir, Err *e) {
    const SaveSource src = {.read = read, .ctx = ctx};
    return save_model(dir, cfg, t, &src, SAVE_BF16, max_shard_bytes, tokenizer_dir, e);
}
