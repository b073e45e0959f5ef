// aqa-synth: writes a synthetic audio-question data set (see common/data/synth.h).
//   aqa-synth --out DIR --n N --seed S [--test-frac F] [--max-seconds T] [--families F1,F2,...]
// DIR gets audio/*.wav, train.jsonl, test.jsonl (R1-AQA lines) and test-mmau.json (MMAU form), then
// a summary (questions per family, answer index and difficulty, per split) is printed.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth.h"
#include "util/log.h"

static void usage(void) {
    fprintf(stderr, "usage: aqa-synth --out DIR --n N --seed S [--test-frac F (default 0.1)]\n"
                    "                 [--max-seconds T (longest clip, default %g, at least %g)]\n"
                    "                 [--families F1,F2,... (of beeps,pitch,louder,sweep,tone_noise; default all)]\n",
            SYNTH_MAX_CLIP_S, SYNTH_MIN_MAX_CLIP_S);
    exit(2);
}

// Parses a whole-string number; exits with a message naming the option otherwise.
static double parse_num(const char *opt, const char *s, int integer) {
    char *end;
    errno = 0;
    double v = integer ? (double)strtoll(s, &end, 10) : strtod(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "aqa-synth: %s: not %s: \"%s\"\n", opt, integer ? "an integer" : "a number", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    log_init("aqa-synth", -1);
    SynthOptions opt = {.out_dir = NULL, .n = -1, .seed = 0, .test_frac = 0.1, .max_clip_s = SYNTH_MAX_CLIP_S};
    int have_seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(a, "--out") == 0) opt.out_dir = v;
        else if (strcmp(a, "--n") == 0) opt.n = (int64_t)parse_num(a, v, 1);
        else if (strcmp(a, "--seed") == 0) opt.seed = (uint64_t)parse_num(a, v, 1), have_seed = 1;
        else if (strcmp(a, "--test-frac") == 0) opt.test_frac = parse_num(a, v, 0);
        else if (strcmp(a, "--max-seconds") == 0) opt.max_clip_s = parse_num(a, v, 0);
        else if (strcmp(a, "--families") == 0) {
            Err e;
            if (synth_families_parse(v, &opt.families, &e)) {
                fprintf(stderr, "aqa-synth: --families: %s\n", e.msg);
                exit(2);
            }
        }
        else usage();
    }
    if (!opt.out_dir || opt.n < 0 || !have_seed) usage();
    SynthSummary sum;
    Err e;
    if (synth_generate(&opt, &sum, &e)) {
        log_error("%s", e.msg);
        return 1;
    }
    synth_summary_print(&sum, stdout);
    log_info("wrote %lld questions to %s in %.2f s", (long long)opt.n, opt.out_dir, log_elapsed());
    return 0;
}
