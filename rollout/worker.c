// worker.c: see worker.h.
#include "worker.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/rng.h"

const char *const ROLLOUT_FUNC_NAMES[ROLLOUT_N_FUNCS] = {"accuracy", "format"};

// Tag of the sampling key (ASCII "ROLL"): keeps sampling apart from other streams of the run's seed.
static const uint32_t ROLLOUT_SEED_TAG = 0x524f4c4c;

SamplerParams rollout_sampler_params(const Config *cfg, const PrepContext *prep) {
    SamplerParams sp = sampler_defaults(prep->im_end_id, cfg->rollout.max_new_tokens, 0);
    sp.greedy = cfg->rollout.greedy;
    sp.temperature = (float)cfg->rollout.temperature;
    sp.top_k = cfg->rollout.top_k;
    sp.top_p = (float)cfg->rollout.top_p;
    sp.repetition_penalty = (float)cfg->rollout.repetition_penalty;
    sp.n_eos = 2;
    prep_eos_ids(prep, sp.eos);
    // A completion holding <|AUDIO|> could not be trained on: its count would not match the clip.
    sp.n_suppress = 1;
    sp.suppress[0] = prep->audio_id;
    return sp;
}

RewardOptions rollout_reward_options(const Config *cfg) {
    RewardOptions o;
    reward_options_default(&o);
    o.mode = cfg->data.prompt_mode == CFG_PROMPT_THINK ? REWARD_MODE_THINK : REWARD_MODE_ANSWER;
    o.accuracy_weight = cfg->reward.accuracy_weight;
    o.format_weight = cfg->reward.format_weight;
    o.numeric_equivalence = cfg->reward.numeric_equivalence;
    return o;
}

uint64_t rollout_step_seed(uint64_t train_seed, int64_t step) {
    return rng_u64_at(train_seed, (uint32_t)step, ROLLOUT_SEED_TAG, 0, 0);
}

// Completion tokens, the mask (1 up to and including the first EOS) and the sampling log-probs.
static void fill_completions(const RolloutWorker *w, const GenResult *r, TrajGroup *g) {
    for (int i = 0; i < g->G; i++) {
        int ended = 0;
        for (int t = 0; t < g->len[i]; t++) {
            int id = r->tokens[i * r->max_new + t], at = g->offset[i] + t;
            g->ids[at] = id;
            g->mask[at] = !ended;
            g->sample_lp[at] = r->lp[i * r->max_new + t];
            ended |= sampler_is_eos(&w->sampler, id);
        }
    }
}

// Per-function rewards and the weighted total of every completion (decoded with special tokens skipped,
// as the reference scores them). The total is computed here from reward.* so that it does not depend on
// how the service was started.
static int score_group(RolloutWorker *w, const PreparedQuestion *p, TrajGroup *g, Err *e) {
    const int G = g->G;
    char **text = mallocCheck((size_t)G * sizeof(char *));
    RewardRequest *rq = callocCheck((size_t)G, sizeof(RewardRequest));
    RewardResult *res = callocCheck((size_t)G, sizeof(RewardResult));
    for (int i = 0; i < G; i++) {
        text[i] = tokenizer_decode(w->prep->tok, g->ids + g->offset[i], g->len[i], 1);
        rq[i] = (RewardRequest){.completion = text[i], .solution = p->solution, .mode = w->reward_opt.mode};
    }
    int rc = 0;
    if (w->reward)
        rc = reward_client_score_batch(w->reward, rq, G, res, e);
    else
        for (int i = 0; i < G; i++) reward_score(&w->reward_opt, text[i], p->solution, &res[i]);
    for (int i = 0; i < G && !rc; i++) {
        g->func_rewards[i * ROLLOUT_N_FUNCS + 0] = (float)res[i].accuracy;
        g->func_rewards[i * ROLLOUT_N_FUNCS + 1] = (float)res[i].format;
        g->rewards[i] =
            (float)(w->reward_opt.accuracy_weight * res[i].accuracy + w->reward_opt.format_weight * res[i].format);
    }
    for (int i = 0; i < G; i++) free(text[i]);
    free(text);
    free(rq);
    free(res);
    return rc ? err_prefix(e, "reward service") : 0;
}

// Reference log-probs of every completion token: the prompt (with its audio) once, the G completions
// attending to it, in one forward (targets g by g: the TrajGroup's packed order).
static int reference_lp(Model *ref, const PreparedQuestion *p, const GenResult *r, TrajGroup *g, Err *e) {
    const int **comp = mallocCheck((size_t)g->G * sizeof(int *));
    for (int i = 0; i < g->G; i++) comp[i] = r->tokens + (size_t)i * r->max_new;
    ModelBatch b;
    mbatch_init(&b, &ref->cfg);
    mbatch_add_group(&b, p->prompt.ids, p->prompt.n, comp, g->len, g->G, 1, NULL);
    mbatch_add_audio(&b, p->features, p->valid_frames);
    ModelActs *a = model_acts_create(ref, b.n_tokens, 1, b.n_tgt, ACTS_INFER);
    int rc = model_forward(ref, &b, a, g->ref_lp, e);
    model_acts_free(ref, a);
    mbatch_free(&b);
    free(comp);
    return rc ? err_prefix(e, "reference model") : 0;
}

// Prepares question i into p[i]; one that cannot be prepared becomes failed group g[i] (ok[i] = 0).
static void prepare_one(RolloutWorker *w, const Question *q, int64_t slot, int64_t version, PreparedQuestion *p,
                        TrajGroup *g, int *ok) {
    double t0 = log_elapsed();
    Err bad;
    *ok = prep_question(w->prep, q, p, &bad) == 0;
    if (!*ok) {
        traj_group_init_failed(g, q->index, slot, q->audio_path, bad.msg);
        g->version = version;
    }
    g->time.data = log_elapsed() - t0;
}

// The rest of a prepared question's group after generation: completions, rewards, reference log-probs.
static int finish_group(RolloutWorker *w, const Question *q, int64_t slot, int64_t version,
                        const PreparedQuestion *p, const GenResult *r, TrajGroup *g, Err *e) {
    TrajTimes t = g->time;
    traj_group_alloc(g, w->G, r->len, p->prompt.n, ROLLOUT_N_FUNCS, w->ref != NULL);
    g->question = q->index;
    g->slot = slot;
    g->version = version;
    memcpy(g->prompt_ids, p->prompt.ids, (size_t)p->prompt.n * sizeof(int32_t));
    g->audio_samples = p->n_samples;
    g->audio_path = strdupCheck(q->audio_path);
    for (int f = 0; f < ROLLOUT_N_FUNCS; f++) g->func_names[f] = strdupCheck(ROLLOUT_FUNC_NAMES[f]);
    fill_completions(w, r, g);
    double t2 = log_elapsed();
    int rc = score_group(w, p, g, e);
    t.reward = log_elapsed() - t2;
    if (!rc && w->ref) {
        double t3 = log_elapsed();
        rc = reference_lp(w->ref, p, r, g, e);
        t.reference = log_elapsed() - t3;
    }
    g->time = t;
    return rc;
}

int rollout_questions(RolloutWorker *w, const Question *const *qs, const int64_t *slots, int n, int64_t version,
                      TrajGroup *g, Err *e) {
    PreparedQuestion *p = callocCheck((size_t)n, sizeof(PreparedQuestion));
    GenPrompt *gp = callocCheck((size_t)n, sizeof(GenPrompt));
    GenResult *r = callocCheck((size_t)n, sizeof(GenResult));
    int *ok = callocCheck((size_t)n, sizeof(int)), *at = callocCheck((size_t)n, sizeof(int));
    int n_gen = 0;
    for (int i = 0; i < n; i++) {
        memset(&g[i], 0, sizeof g[i]);
        prepare_one(w, qs[i], slots[i], version, &p[i], &g[i], &ok[i]);
        if (!ok[i]) continue;
        at[i] = n_gen;
        gp[n_gen] = (GenPrompt){.ids = p[i].prompt.ids,
                                .n_ids = p[i].prompt.n,
                                .features = p[i].features,
                                .valid_frames = p[i].valid_frames,
                                .question = (uint32_t)qs[i]->index};
        gen_result_init(&r[n_gen++], w->G, w->sampler.max_new_tokens);
    }
    // every sample's Philox key is (step seed, question index, sample, token): batching changes no draw
    int rc = n_gen ? model_generate(w->policy, gp, n_gen, w->G, &w->sampler, r, e) : 0;
    int bad = -1;  // the question whose group failed after generation
    for (int i = 0; i < n && !rc; i++) {
        if (!ok[i]) continue;
        const GenResult *ri = &r[at[i]];
        g[i].time.prefill = ri->prefill_s / n_gen;  // the batch's phases, shared by its questions
        g[i].time.decode = ri->decode_s / n_gen;
        rc = finish_group(w, qs[i], slots[i], version, &p[i], ri, &g[i], e);
        if (rc) bad = i;
    }
    if (rc) {
        for (int i = 0; i < n; i++) traj_group_free(&g[i]);
        if (bad >= 0)
            err_prefix(e, "question %s (index %lld, slot %lld)", qs[bad]->id, (long long)qs[bad]->index,
                       (long long)slots[bad]);
        else
            err_prefix(e, "questions %s.. (%d in one batch)", qs[0]->id, n);
    }
    for (int i = 0; i < n_gen; i++) gen_result_free(&r[i]);
    for (int i = 0; i < n; i++)
        if (ok[i]) prep_question_free(&p[i]);
    free(p), free(gp), free(r), free(ok), free(at);
    return rc ? -1 : 0;
}

int rollout_question(RolloutWorker *w, const Question *q, int64_t slot, int64_t version, TrajGroup *g, Err *e) {
    return rollout_questions(w, &q, &slot, 1, version, g, e);
}
