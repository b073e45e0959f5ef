// fuzz_dataset: a data file's text (R1-AQA JSON lines or an MMAU JSON array; the format is chosen by
// the first non-blank byte, as for a real file) through dataset_parse. Invariant: every question that
// is accepted has >= 2 choices and an answer among them.
#include "data/dataset.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    DataOptions opt = data_options_default();
    opt.max_bad = 1 << 20;
    Dataset ds;
    Err e;
    if (dataset_parse(&ds, "data/fuzz.jsonl", (const char *)data, size, &opt, &e) == 0) {
        FUZZ_CHECK(ds.n > 0, "accepted an empty dataset");
        for (int64_t i = 0; i < ds.n; i++) {
            const Question *q = &ds.q[i];
            FUZZ_CHECK(q->n_choices >= 2 && q->answer >= 0 && q->answer < q->n_choices, "question %lld",
                       (long long)i);
            FUZZ_CHECK(q->answer_text == q->choices[q->answer] && q->audio_path && q->id && q->question,
                       "question %lld", (long long)i);
        }
        dataset_free(&ds);
    }
    return 0;
}
