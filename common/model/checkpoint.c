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

int model_load_dir(const char *dir, ModelConfig *cfg, ParamTable *t, float **params, Err *e) {
    ModelConfig c;
    if (hf_config_load(dir, &c, e)) return -1;
    StReader r;
    if (st_open(&r, dir, e)) return -1;
    ParamTable tab;
    param_table_build(&tab, &c);
    float *p = mallocCheck(tab.numel * sizeof(float));  // [numel], carved by tab's offsets
    int rc = 0;
    for (int i = 0; i < tab.n && !rc; i++) {
        const ParamSpec *s = &tab.specs[i];
        rc = st_read_f32(&r, s->name, s->ndim, s->shape, p + s->offset, e);
    }
    for (int i = 0; i < r.n && !rc; i++) {
        const char *name = r.tensors[i].name;
        // A tied checkpoint may still carry lm_head (a copy of embed_tokens); the table has no slot for it.
        if (param_find(&tab, name) >= 0 || (c.tie_embeddings && strcmp(name, "language_model.lm_head.weight") == 0))
            continue;
        rc = err_set(e, "%s: unexpected tensor '%s' (not part of the model this config.json describes)",
                     st_tensor_file(&r, &r.tensors[i]), name);
    }
    st_close(&r);
    if (rc) {
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

// Everything but the final rename, into the temporary directory tmp.
static int save_contents(const char *tmp, const ModelConfig *cfg, const ParamTable *t, const float *params,
                         SaveDtype dtype, size_t max_shard_bytes, const char *tokenizer_dir, Err *e) {
    char p[4096];
    if (dir_make(tmp, e) ||
        hf_config_save(path_join(p, sizeof p, tmp, "config.json"), cfg, dtype == SAVE_BF16 ? "bfloat16" : "float32",
                       e) ||
        hf_aux_configs_save(tmp, cfg, e))
        return -1;
    StWriteTensor *ts = callocCheck((size_t)t->n, sizeof(StWriteTensor));
    for (int i = 0; i < t->n; i++) {
        const ParamSpec *s = &t->specs[i];
        ts[i] = (StWriteTensor){.name = s->name, .ndim = s->ndim, .data = params + s->offset};
        memcpy(ts[i].shape, s->shape, sizeof s->shape);
    }
    int shards = st_write_sharded(tmp, ts, t->n, dtype == SAVE_BF16 ? ST_BF16 : ST_F32, max_shard_bytes, e);
    free(ts);
    if (shards < 0) return -1;
    if (tokenizer_dir && copy_tokenizer(tokenizer_dir, tmp, e)) return -1;
    char marker[256];
    int n = snprintf(marker, sizeof marker, "{\"tensors\": %d, \"shards\": %d}\n", t->n, shards);
    if (file_write_atomic(path_join(p, sizeof p, tmp, CHECKPOINT_MARKER), marker, (size_t)n, e)) return -1;
    fsync_dir(tmp);
    return 0;
}

int model_save_dir(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params,
                   SaveDtype dtype, size_t max_shard_bytes, const char *tokenizer_dir, Err *e) {
    char tmp[4200], old[4200], parent[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) *slash = 0;
    else snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
    remove_tree(tmp);
    if (save_contents(tmp, cfg, t, params, dtype, max_shard_bytes, tokenizer_dir, e)) {
        remove_tree(tmp);
        return err_prefix(e, "saving %s", dir);
    }
    // Replacing: move the old directory aside first (rename cannot replace a non-empty directory).
    int replaced = path_exists(dir);
    if (replaced && rename(dir, old) != 0) {
        remove_tree(tmp);
        return err_set(e, "%s: cannot move the previous directory aside: %s", dir, strerror(errno));
    }
    if (rename(tmp, dir) != 0) {
        int saved = errno;
        if (replaced) rename(old, dir);
        remove_tree(tmp);
        return err_set(e, "%s: cannot rename %s into place: %s", dir, tmp, strerror(saved));
    }
    fsync_dir(parent);
    if (replaced) remove_tree(old);
    return 0;
}
