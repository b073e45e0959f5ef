// model_batch.c: building ModelBatch descriptions (packed tokens, attention segments, audio clips,
// targets) on the host. The model validates a batch before running it, so these builders only grow
// arrays; layouts (plain sequences, shared-prefix groups, decode steps) are expressed as segments.
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

// Grows *arr (elements of size `sz`) to hold at least `need`.
static void grow(void **arr, int *cap, int need, size_t sz) {
    if (need <= *cap) return;
    int n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    *arr = reallocCheck(*arr, (size_t)n * sz);
    *cap = n;
}

void mbatch_init(ModelBatch *b, const ModelConfig *c) {
    memset(b, 0, sizeof *b);
    b->audio_frames = 2 * c->a_max_pos;
    b->n_mels = c->n_mels;
}

void mbatch_free(ModelBatch *b) {
    free(b->ids);
    free(b->pos);
    free(b->kv_row);
    free(b->segs);
    free(b->features);
    free(b->valid);
    free(b->tgt_row);
    free(b->tgt_id);
    memset(b, 0, sizeof *b);
}

void mbatch_clear(ModelBatch *b) { b->n_tokens = b->n_segs = b->n_audio = b->n_tgt = 0; }

void mbatch_add_token(ModelBatch *b, int id, int pos, int kv_row) {
    int cap = b->cap_tokens;
    grow((void **)&b->ids, &cap, b->n_tokens + 1, sizeof(int));
    cap = b->cap_tokens;
    grow((void **)&b->pos, &cap, b->n_tokens + 1, sizeof(int));
    grow((void **)&b->kv_row, &b->cap_tokens, b->n_tokens + 1, sizeof(int));
    b->ids[b->n_tokens] = id;
    b->pos[b->n_tokens] = pos;
    b->kv_row[b->n_tokens] = kv_row;
    b->n_tokens++;
}

void mbatch_add_seg(ModelBatch *b, AttnSeg s) {
    grow((void **)&b->segs, &b->cap_segs, b->n_segs + 1, sizeof(AttnSeg));
    b->segs[b->n_segs++] = s;
}

void mbatch_add_target(ModelBatch *b, int row, int id) {
    int cap = b->cap_tgt;
    grow((void **)&b->tgt_row, &cap, b->n_tgt + 1, sizeof(int));
    grow((void **)&b->tgt_id, &b->cap_tgt, b->n_tgt + 1, sizeof(int));
    b->tgt_row[b->n_tgt] = row;
    b->tgt_id[b->n_tgt] = id;
    b->n_tgt++;
}

// Appends n tokens at positions pos0.. (cache row = batch row) and returns the first row.
static int add_run(ModelBatch *b, const int *ids, int n, int pos0) {
    int row = b->n_tokens;
    for (int i = 0; i < n; i++) mbatch_add_token(b, ids[i], pos0 + i, row + i);
    return row;
}

int mbatch_add_seq(ModelBatch *b, const int *ids, int n, int first_target) {
    int row = add_run(b, ids, n, 0);
    mbatch_add_seg(b, (AttnSeg){.q_start = row, .q_len = n, .k_start = row, .k_len = n, .causal = 1});
    for (int i = first_target > 1 ? first_target : 1; i < n; i++) mbatch_add_target(b, row + i - 1, ids[i]);
    return row;
}

int mbatch_add_group(ModelBatch *b, const int *prefix, int P, const int *const *comp, const int *comp_len, int G,
                     int with_targets, int *comp_row) {
    int prow = mbatch_add_seq(b, prefix, P, P);
    for (int g = 0; g < G; g++) {
        int n = comp_len[g];
        int row = add_run(b, comp[g], n, P);
        mbatch_add_seg(b, (AttnSeg){.q_start = row,
                                    .q_len = n,
                                    .pre_start = prow,
                                    .pre_len = P,
                                    .k_start = row,
                                    .k_len = n,
                                    .causal = 1});
        if (comp_row) comp_row[g] = row;
        for (int j = 0; with_targets && j < n; j++)
            mbatch_add_target(b, j == 0 ? prow + P - 1 : row + j - 1, comp[g][j]);
    }
    return prow;
}

void mbatch_add_audio(ModelBatch *b, const float *features, int valid) {
    size_t per = (size_t)b->n_mels * b->audio_frames;
    int cap = b->cap_audio;
    grow((void **)&b->valid, &cap, b->n_audio + 1, sizeof(int));
    if (b->n_audio + 1 > b->cap_audio) {
        b->features = reallocCheck(b->features, (size_t)cap * per * sizeof(float));
        b->cap_audio = cap;
    }
    memcpy(b->features + (size_t)b->n_audio * per, features, per * sizeof(float));
    b->valid[b->n_audio++] = valid;
}
