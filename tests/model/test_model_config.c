// The parameter table of the 7B shape must reproduce the published counts (qwen2-audio.md section 1).
#include "test.h"
#include "model/model_config.h"

static void test_7b_counts(void) {
    ModelConfig c = model_config_qwen2_audio_7b();
    ParamTable t;
    param_table_build(&t, &c);
    size_t audio = 0, proj = 0, llm = 0;
    for (int i = 0; i < t.n; i++) {
        const ParamSpec *s = &t.specs[i];
        if (strncmp(s->name, "audio_tower.", 12) == 0) audio += s->numel;
        else if (strncmp(s->name, "multi_modal_projector.", 22) == 0) proj += s->numel;
        else llm += s->numel;
    }
    CHECK_INT(audio, 636968960);
    CHECK_INT(proj, 5246976);
    CHECK_INT(llm, 7754878976LL);
    CHECK_INT(t.numel, 8397094912LL);
    CHECK_INT(t.n, 876);
    CHECK_INT(t.specs[t.embed].numel, 639107072);
    CHECK(t.specs[t.embed_pos].trainable == 0);
    CHECK(param_find(&t, "language_model.lm_head.weight") == t.lm_head);
    CHECK(param_find(&t, "audio_tower.layers.31.fc2.bias") == t.alayer[31].fc2_b);
    CHECK(param_find(&t, "audio_tower.layers.0.self_attn.k_proj.bias") == -1);
    // offsets tile the buffer exactly
    size_t off = 0;
    int tiled = 1;
    for (int i = 0; i < t.n; i++) {
        tiled &= t.specs[i].offset == off;
        off += t.specs[i].numel;
    }
    CHECK(tiled && off == t.numel);
    param_table_free(&t);
}

int main(void) {
    RUN(test_7b_counts);
    return test_summary("test_model_config");
}
