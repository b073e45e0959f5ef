// samples.c: the per-step rollout sample files (see samples.h).
#include "samples.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fileio.h"

// One group as a JSON object.
static json_t *samples_group(const Trainer *t, const TrajGroup *g) {
    const Question *q = g->question >= 0 && g->question < t->data.n ? &t->data.q[g->question] : NULL;
    json_t *o = json_pack("{sIsIsssI}", "slot", (json_int_t)g->slot, "question", (json_int_t)g->question, "id",
                          q ? q->id : "", "version", (json_int_t)g->version);
    if (g->failed) {
        json_object_set_new(o, "failed", json_string(g->reason));
        return o;
    }
    json_t *comps = json_array();
    for (int s = 0; s < g->G; s++) {
        char *text = tokenizer_decode(t->prep.tok, g->ids + g->offset[s], g->len[s], 1);
        json_t *c = json_pack("{sssisf}", "text", text, "tokens", g->len[s], "reward", (double)g->rewards[s]);
        free(text);
        json_t *funcs = json_object();
        for (int f = 0; f < g->n_funcs; f++) {
            float r = g->func_rewards[(size_t)s * g->n_funcs + f];
            json_object_set_new(funcs, g->func_names[f], r == r ? json_real(r) : json_null());
        }
        json_object_set_new(c, "rewards", funcs);
        json_array_append_new(comps, c);
    }
    json_object_set_new(o, "completions", comps);
    return o;
}

int samples_write(const Trainer *t, int64_t step, const TrajGroup *groups, int n, Err *e) {
    char dir[CFG_PATH_CAP + 16], name[96], path[CFG_PATH_CAP + 128];
    path_join(dir, sizeof dir, t->cfg->train.run_dir, "samples");
    if (dir_make(dir, e)) return -1;
    snprintf(name, sizeof name, "step-%08lld-learner-%d.jsonl", (long long)step, t->comm->role_rank);
    char *buf = NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        json_t *o = samples_group(t, &groups[i]);
        char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (!line) fatal("samples: cannot serialise a group (out of memory)");
        size_t k = strlen(line);
        buf = reallocCheck(buf, len + k + 1);
        memcpy(buf + len, line, k);
        len += k;
        buf[len++] = '\n';
        free(line);
        json_decref(o);
    }
    int rc = file_write_atomic(path_join(path, sizeof path, dir, name), buf, len, e);
    free(buf);
    return rc;
}
