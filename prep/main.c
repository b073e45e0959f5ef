// aqa-prep: data preparation for the R1-AQA recipe.
//   aqa-prep avqa --qa train_qa.json --media DIR --out DIR [--threads N]
//       AVQA questions + their videos -> 16 kHz mono wavs + R1-AQA JSONL (prep/avqa.h)
//   aqa-prep mmau --json FILE --audio DIR [--threads N]
//       every MMAU item's audio exists and decodes; counts; which test-mini version (prep/mmau_check.h)
#include <libavutil/log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avqa.h"
#include "mmau_check.h"
#include "pool.h"
#include "util/log.h"

static const char *usage =
    "usage: aqa-prep avqa --qa train_qa.json --media DIR --out DIR [--threads N]\n"
    "       aqa-prep mmau --json FILE --audio DIR [--threads N]\n";

typedef struct {
    const char *qa, *media, *out, *json, *audio;
    int threads;
} Args;

static int parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    a->threads = pool_default_threads();
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **dst = !strcmp(k, "--qa")      ? &a->qa
                           : !strcmp(k, "--media") ? &a->media
                           : !strcmp(k, "--out")   ? &a->out
                           : !strcmp(k, "--json")  ? &a->json
                           : !strcmp(k, "--audio") ? &a->audio
                                                   : NULL;
        if (!v || (!dst && strcmp(k, "--threads"))) {
            fprintf(stderr, "aqa-prep: %s: %s\n", k, v ? "unknown option" : "needs a value");
            return -1;
        }
        if (dst) {
            *dst = v;
        } else {
            char *end;
            long t = strtol(v, &end, 10);
            if (*end || t < 1 || t > 1024) {
                fprintf(stderr, "aqa-prep: --threads %s: expected 1..1024\n", v);
                return -1;
            }
            a->threads = (int)t;
        }
        i++;
    }
    return 0;
}

static int run_avqa(const Args *a) {
    if (!a->qa || !a->media || !a->out) return fprintf(stderr, "aqa-prep avqa: --qa, --media and --out are needed\n%s", usage), 2;
    AvqaOptions o = {.qa_path = a->qa, .media_dir = a->media, .out_dir = a->out, .threads = a->threads};
    AvqaStats st;
    Err e;
    int rc = avqa_prepare(&o, &st, &e);
    printf("questions: %lld in %s, %lld written to %s/train.jsonl, %lld left out (%lld malformed)\n",
           (long long)st.questions, a->qa, (long long)st.written, a->out,
           (long long)(st.questions - st.written), (long long)st.bad_records);
    printf("clips: %lld, %lld converted now, %lld already done, %lld missing, %lld undecodable (listed in "
           "%s/excluded.tsv)\n",
           (long long)st.clips, (long long)st.converted, (long long)st.already, (long long)st.missing,
           (long long)st.undecodable, a->out);
    if (rc) fprintf(stderr, "aqa-prep avqa: %s\n", e.msg);
    return rc ? 1 : 0;
}

static int run_mmau(const Args *a) {
    if (!a->json || !a->audio) return fprintf(stderr, "aqa-prep mmau: --json and --audio are needed\n%s", usage), 2;
    MmauCheck c;
    Err e;
    if (mmau_check(a->json, a->audio, a->threads, &c, &e)) {
        fprintf(stderr, "aqa-prep mmau: %s\n", e.msg);
        return 1;
    }
    mmau_check_print(&c, stdout);
    // Not ready for an evaluation: an item without audio would be scored wrong.
    return c.missing + c.undecodable + c.bad_records > 0 ? 1 : 0;
}

int main(int argc, char **argv) {
    log_init("aqa-prep", -1);
    av_log_set_level(AV_LOG_QUIET);  // FFmpeg's own messages: failures come back through Err, per file
    Args a;
    if (argc < 2 || parse_args(argc, argv, &a)) {
        fputs(usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "avqa")) return run_avqa(&a);
    if (!strcmp(argv[1], "mmau")) return run_mmau(&a);
    fprintf(stderr, "aqa-prep: unknown command '%s'\n%s", argv[1], usage);
    return 2;
}
