// traj.c: trajectory groups (allocation, checks) and their GROUP message codec. Fields are written byte
// by byte in little-endian order (msg_codec.h) so the format does not depend on struct layout.
#include "traj.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "msg_codec.h"

// Sanity limits: a decoder never allocates from a count it has not bounded (G: CFG_MAX_GENERATIONS).
#define MSG_MAX_FUNCS 64
#define MSG_MAX_NAME 256
#define MSG_MAX_PATH 4096
#define MSG_MAX_REASON 4096

// ---- trajectory group -------------------------------------------------------------------------------

void traj_group_alloc(TrajGroup *g, int G, const int *len, int n_prompt, int n_funcs, int with_ref) {
    memset(g, 0, sizeof *g);
    g->G = G;
    g->n_prompt = n_prompt;
    g->n_funcs = n_funcs;
    g->prompt_ids = callocCheck((size_t)n_prompt + 1, sizeof(int32_t));
    g->func_names = callocCheck((size_t)n_funcs + 1, sizeof(char *));
    g->func_rewards = callocCheck((size_t)G * n_funcs + 1, sizeof(float));
    g->rewards = callocCheck((size_t)G + 1, sizeof(float));
    g->offset = callocCheck((size_t)G + 1, sizeof(int));
    g->len = callocCheck((size_t)G + 1, sizeof(int));
    for (int i = 0; i < G; i++) {
        g->offset[i] = g->n_tokens;
        g->len[i] = len[i];
        g->n_tokens += len[i];
    }
    size_t T = (size_t)g->n_tokens + 1;
    g->ids = callocCheck(T, sizeof(int32_t));
    g->mask = callocCheck(T, 1);
    g->sample_lp = callocCheck(T, sizeof(float));
    g->ref_lp = with_ref ? callocCheck(T, sizeof(float)) : NULL;
}

void traj_group_init_failed(TrajGroup *g, int64_t question, int64_t slot, const char *audio_path, const char *reason) {
    traj_group_alloc(g, 0, NULL, 0, 0, 0);
    g->question = question;
    g->slot = slot;
    g->failed = 1;
    g->audio_path = strdupCheck(audio_path);
    g->reason = strdupCheck(reason);
}

void traj_group_free(TrajGroup *g) {
    if (g->func_names)
        for (int i = 0; i < g->n_funcs; i++) free(g->func_names[i]);
    free(g->func_names);
    free(g->prompt_ids);
    free(g->audio_path);
    free(g->reason);
    free(g->func_rewards);
    free(g->rewards);
    free(g->offset);
    free(g->len);
    free(g->ids);
    free(g->mask);
    free(g->sample_lp);
    free(g->ref_lp);
    memset(g, 0, sizeof *g);
}

// A failed group carries its reason and nothing of the completions; a good one no reason.
static int failure_check(const TrajGroup *g, Err *e) {
    if (g->failed != 0 && g->failed != 1) return err_set(e, "failed flag %d not 0/1", g->failed);
    if (!g->failed) {
        if (g->reason) return err_set(e, "a group that did not fail carries a failure reason");
        return 0;
    }
    if (!g->reason || !g->reason[0]) return err_set(e, "failed group without a reason");
    if (strlen(g->reason) > MSG_MAX_REASON) return err_set(e, "failure reason longer than %d bytes", MSG_MAX_REASON);
    if (g->G != 0 || g->n_prompt != 0 || g->n_funcs != 0 || g->n_tokens != 0 || g->ref_lp)
        return err_set(e, "failed group holds data (G %d, n_prompt %d, n_funcs %d, n_tokens %d)", g->G, g->n_prompt,
                       g->n_funcs, g->n_tokens);
    return 0;
}

static int times_check(const TrajTimes *t, Err *e) {
    const double v[5] = {t->data, t->prefill, t->decode, t->reward, t->reference};
    static const char *const names[5] = {"data", "prefill", "decode", "reward", "reference"};
    for (int i = 0; i < 5; i++)
        if (!isfinite(v[i]) || v[i] < 0) return err_set(e, "time.%s %g is not a finite number >= 0", names[i], v[i]);
    return 0;
}

int traj_group_check(const TrajGroup *g, Err *e) {
    if (g->question < 0) return err_set(e, "question index %lld < 0", (long long)g->question);
    if (g->slot < 0) return err_set(e, "slot %lld < 0", (long long)g->slot);
    if (failure_check(g, e) || times_check(&g->time, e)) return -1;
    if (!g->failed && (g->G < 1 || g->G > CFG_MAX_GENERATIONS)) return err_set(e, "G %d not in [1, %d]", g->G, CFG_MAX_GENERATIONS);
    if (g->n_prompt < 0) return err_set(e, "n_prompt %d < 0", g->n_prompt);
    if (g->n_funcs < 0 || g->n_funcs > MSG_MAX_FUNCS) return err_set(e, "n_funcs %d not in [0, %d]", g->n_funcs, MSG_MAX_FUNCS);
    if (g->audio_samples < 0) return err_set(e, "audio_samples %lld < 0", (long long)g->audio_samples);
    if (!g->audio_path || !g->audio_path[0]) return err_set(e, "audio_path is empty");
    if (strlen(g->audio_path) > MSG_MAX_PATH) return err_set(e, "audio_path longer than %d bytes", MSG_MAX_PATH);
    for (int i = 0; i < g->n_prompt; i++)
        if (g->prompt_ids[i] < 0) return err_set(e, "prompt_ids[%d] = %d < 0", i, g->prompt_ids[i]);
    for (int f = 0; f < g->n_funcs; f++) {
        const char *name = g->func_names[f];
        if (!name || !name[0] || strlen(name) > MSG_MAX_NAME)
            return err_set(e, "func_names[%d] is empty or longer than %d bytes", f, MSG_MAX_NAME);
        for (int k = 0; k < f; k++)
            if (strcmp(g->func_names[k], name) == 0) return err_set(e, "func_names[%d] \"%s\" repeats func_names[%d]", f, name, k);
    }
    int64_t tokens = 0;
    for (int i = 0; i < g->G; i++) {
        if (g->len[i] < 0) return err_set(e, "len[%d] = %d < 0", i, g->len[i]);
        if (g->offset[i] != tokens) return err_set(e, "offset[%d] = %d, expected %lld (samples are packed)", i, g->offset[i], (long long)tokens);
        tokens += g->len[i];
        if (!isfinite(g->rewards[i])) return err_set(e, "rewards[%d] is not finite", i);
        for (int f = 0; f < g->n_funcs; f++)
            if (isinf(g->func_rewards[(size_t)i * g->n_funcs + f])) return err_set(e, "func_rewards[%d][%d] is infinite", i, f);
        int ended = 0;
        for (int t = g->offset[i]; t < g->offset[i] + g->len[i]; t++) {
            int pos = t - g->offset[i];
            if (g->ids[t] < 0) return err_set(e, "ids of sample %d position %d = %d < 0", i, pos, g->ids[t]);
            if (g->mask[t] > 1) return err_set(e, "mask of sample %d position %d = %d not 0/1", i, pos, g->mask[t]);
            if (g->mask[t] && ended) return err_set(e, "mask of sample %d: 1 at position %d after a 0 (mask must be a prefix)", i, pos);
            ended |= !g->mask[t];
            if (!isfinite(g->sample_lp[t])) return err_set(e, "sample_lp of sample %d position %d is not finite", i, pos);
            if (g->ref_lp && !isfinite(g->ref_lp[t])) return err_set(e, "ref_lp of sample %d position %d is not finite", i, pos);
        }
    }
    if (tokens != g->n_tokens) return err_set(e, "n_tokens %d, but the lengths sum to %lld", g->n_tokens, (long long)tokens);
    return 0;
}

int msg_encode_group(const TrajGroup *g, uint8_t **out, size_t *out_bytes, Err *e) {
    if (traj_group_check(g, e)) return err_prefix(e, "encode group of question %lld", (long long)g->question);
    MsgWriter w = {0};
    msg_w_reserve(&w, MSG_HEADER_BYTES);
    msg_w_u64(&w, (uint64_t)g->question);
    msg_w_u64(&w, (uint64_t)g->slot);
    msg_w_u8(&w, (uint8_t)g->failed);
    if (g->failed) msg_w_str(&w, g->reason);
    msg_w_f64(&w, g->time.data);
    msg_w_f64(&w, g->time.prefill);
    msg_w_f64(&w, g->time.decode);
    msg_w_f64(&w, g->time.reward);
    msg_w_f64(&w, g->time.reference);
    msg_w_u32(&w, (uint32_t)g->G);
    msg_w_u32(&w, (uint32_t)g->n_prompt);
    for (int i = 0; i < g->n_prompt; i++) msg_w_u32(&w, (uint32_t)g->prompt_ids[i]);
    msg_w_u64(&w, (uint64_t)g->audio_samples);
    msg_w_str(&w, g->audio_path);
    msg_w_u32(&w, (uint32_t)g->n_funcs);
    for (int f = 0; f < g->n_funcs; f++) msg_w_str(&w, g->func_names[f]);
    msg_w_u8(&w, g->ref_lp != NULL);
    for (int i = 0; i < g->G; i++) msg_w_u32(&w, (uint32_t)g->len[i]);
    for (int i = 0; i < g->G; i++) msg_w_f32(&w, g->rewards[i]);
    for (size_t i = 0; i < (size_t)g->G * g->n_funcs; i++) msg_w_f32(&w, g->func_rewards[i]);
    for (int t = 0; t < g->n_tokens; t++) msg_w_u32(&w, (uint32_t)g->ids[t]);
    memcpy(msg_w_reserve(&w, (size_t)g->n_tokens), g->mask, (size_t)g->n_tokens);
    for (int t = 0; t < g->n_tokens; t++) msg_w_f32(&w, g->sample_lp[t]);
    if (g->ref_lp)
        for (int t = 0; t < g->n_tokens; t++) msg_w_f32(&w, g->ref_lp[t]);
    msg_header_write(w.p, MSG_GROUP, g->version, w.p + MSG_HEADER_BYTES, w.n - MSG_HEADER_BYTES);
    *out = w.p;
    *out_bytes = w.n;
    return 0;
}

// Reads the payload after the header into g; the counts are bounded by the bytes that remain before
// anything is allocated from them. Strings read before g is allocated are owned here until moved.
static int group_read(MsgReader *r, TrajGroup *g) {
    uint64_t question, slot, audio_samples;
    int G, n_prompt, n_funcs = 0, n_names = 0, len[CFG_MAX_GENERATIONS];
    int32_t *prompt = NULL;
    char *path = NULL, *reason = NULL, *names[MSG_MAX_FUNCS] = {0};
    uint8_t has_ref, failed;
    TrajTimes times;
    int64_t tokens = 0;
    int rc = -1;
    if (msg_r_u64(r, &question, "question") || msg_r_u64(r, &slot, "slot") || msg_r_u8(r, &failed, "failed")) goto done;
    if (failed > 1) {
        err_set(r->e, "field failed: %u not 0/1", failed);
        goto done;
    }
    // A failed group has no samples; a good one at least one.
    if ((failed && msg_r_str(r, &reason, MSG_MAX_REASON, "reason")) || msg_r_f64(r, &times.data, "time.data") ||
        msg_r_f64(r, &times.prefill, "time.prefill") || msg_r_f64(r, &times.decode, "time.decode") || msg_r_f64(r, &times.reward, "time.reward") ||
        msg_r_f64(r, &times.reference, "time.reference") || msg_r_count(r, &G, failed ? 0 : 1, failed ? 0 : CFG_MAX_GENERATIONS, "G") ||
        msg_r_count(r, &n_prompt, 0, (int64_t)((r->n - r->pos) / 4), "n_prompt"))
        goto done;
    prompt = mallocCheck(((size_t)n_prompt + 1) * sizeof(int32_t));
    if (msg_r_i32s(r, prompt, n_prompt, "prompt_ids") || msg_r_u64(r, &audio_samples, "audio_samples") ||
        msg_r_str(r, &path, MSG_MAX_PATH, "audio_path") || msg_r_count(r, &n_funcs, 0, MSG_MAX_FUNCS, "n_funcs"))
        goto done;
    for (; n_names < n_funcs; n_names++)
        if (msg_r_str(r, &names[n_names], MSG_MAX_NAME, "func_names")) goto done;
    if (msg_r_u8(r, &has_ref, "has_ref")) goto done;
    if (has_ref > 1) {
        err_set(r->e, "field has_ref: %u not 0/1", has_ref);
        goto done;
    }
    for (int i = 0; i < G; i++) {
        if (msg_r_count(r, &len[i], 0, INT32_MAX, "len")) goto done;
        tokens += len[i];
    }
    // What must remain: rewards 4 * G * (1 + n_funcs) bytes, then 9 bytes a token (id, mask,
    // sample_lp), 13 with ref_lp.
    size_t left = r->n - r->pos, rewards_bytes = (size_t)G * 4 * (1 + (size_t)n_funcs);
    if (tokens > INT32_MAX || (uint64_t)tokens > left / 9 || rewards_bytes + (size_t)tokens * (9 + 4 * has_ref) != left) {
        err_set(r->e, "field len: %lld tokens over %d samples do not match the %zu payload bytes left", (long long)tokens, G, left);
        goto done;
    }
    traj_group_alloc(g, G, len, n_prompt, n_funcs, has_ref);
    g->question = (int64_t)question;
    g->slot = (int64_t)slot;
    g->failed = failed;
    g->reason = reason;
    reason = NULL;
    g->time = times;
    g->audio_samples = (int64_t)audio_samples;
    memcpy(g->prompt_ids, prompt, (size_t)n_prompt * sizeof(int32_t));
    g->audio_path = path;
    path = NULL;
    memcpy(g->func_names, names, (size_t)n_funcs * sizeof(char *));
    memset(names, 0, sizeof names);  // moved into g
    const uint8_t *mask = NULL;
    if (msg_r_f32s(r, g->rewards, (size_t)G, "rewards") || msg_r_f32s(r, g->func_rewards, (size_t)G * n_funcs, "func_rewards") ||
        msg_r_i32s(r, g->ids, g->n_tokens, "ids") || !(mask = msg_r_take(r, (size_t)g->n_tokens, "mask")))
        goto done;
    memcpy(g->mask, mask, (size_t)g->n_tokens);
    if (msg_r_f32s(r, g->sample_lp, (size_t)g->n_tokens, "sample_lp") ||
        (has_ref && msg_r_f32s(r, g->ref_lp, (size_t)g->n_tokens, "ref_lp")))
        goto done;
    rc = 0;
done:
    // names[n_names] may hold a string msg_r_str allocated before rejecting it.
    for (int f = 0; f <= n_names && f < MSG_MAX_FUNCS; f++) free(names[f]);
    free(prompt);
    free(path);
    free(reason);
    return rc;
}

int msg_decode_group(const uint8_t *buf, size_t n, TrajGroup *g, Err *e) {
    memset(g, 0, sizeof *g);
    MsgHeader h;
    if (msg_header_read(buf, n, MSG_GROUP, &h, e)) return err_prefix(e, "group message");
    MsgReader r = {.p = buf + MSG_HEADER_BYTES, .n = n - MSG_HEADER_BYTES, .e = e};
    if (group_read(&r, g) || traj_group_check(g, e)) {
        traj_group_free(g);
        return err_prefix(e, "group message");
    }
    g->version = h.version;
    return 0;
}
