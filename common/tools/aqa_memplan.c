// aqa-memplan: print the GPU and learner host memory plan of GRPO training for a model (memplan.h) as Markdown tables.
//   aqa-memplan --model configs/model-7b.json [--learners 8] [--gpu-gib 79.65] [--prompt 846] [--audio 750]
//               [--G 8] [--completion 32] [--groups 1] [--max-new 256] [--questions 1] [--bytes 2]
//               [--nccl-gib 1] [--runtime-gib 1.5] [--colocated 0|1] [--offload 0|1]
//               [--bucket-mb 256] [--ring-slots 2] [--host-other-gib 2]
// --model takes a Hugging Face config.json or a model directory holding one.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model/hf_config.h"
#include "model/memplan.h"

static void usage(const char *msg) {
    fprintf(stderr,
            "aqa-memplan: %s\n"
            "usage: aqa-memplan --model CONFIG [--learners N] [--gpu-gib X] [--prompt N] [--audio N] [--G N]\n"
            "                   [--completion N] [--groups N] [--max-new N] [--questions N] [--bytes 2|4]\n"
            "                   [--nccl-gib X] [--runtime-gib X] [--colocated 0|1] [--offload 0|1]\n"
            "                   [--bucket-mb N] [--ring-slots N] [--host-other-gib X]\n",
            msg);
    exit(2);
}

static double parse_num(const char *flag, const char *s, int integer) {
    char *end;
    errno = 0;
    double v = integer ? (double)strtol(s, &end, 10) : strtod(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "aqa-memplan: %s: \"%s\" is not %s\n", flag, s, integer ? "an integer" : "a number");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    MemPlanOptions o = memplan_defaults();
    static const struct {
        const char *flag;
        size_t off;
    } ints[] = {{"--learners", offsetof(MemPlanOptions, learners)},
                {"--prompt", offsetof(MemPlanOptions, prompt_tokens)},
                {"--audio", offsetof(MemPlanOptions, audio_tokens)},
                {"--G", offsetof(MemPlanOptions, G)},
                {"--completion", offsetof(MemPlanOptions, completion_tokens)},
                {"--groups", offsetof(MemPlanOptions, groups)},
                {"--max-new", offsetof(MemPlanOptions, max_new_tokens)},
                {"--questions", offsetof(MemPlanOptions, questions)},
                {"--bytes", offsetof(MemPlanOptions, act_size)},
                {"--colocated", offsetof(MemPlanOptions, colocated)},
                {"--offload", offsetof(MemPlanOptions, offload)},
                {"--bucket-mb", offsetof(MemPlanOptions, bucket_mb)},
                {"--ring-slots", offsetof(MemPlanOptions, ring_slots)}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage("every option takes a value");
        const char *v = argv[++i];
        int known = 1;
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--gpu-gib") == 0) o.gpu_gib = parse_num(a, v, 0);
        else if (strcmp(a, "--nccl-gib") == 0) o.nccl_gib = parse_num(a, v, 0);
        else if (strcmp(a, "--runtime-gib") == 0) o.runtime_gib = parse_num(a, v, 0);
        else if (strcmp(a, "--host-other-gib") == 0) o.host_other_gib = parse_num(a, v, 0);
        else {
            known = 0;
            for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
                if (strcmp(a, ints[k].flag) == 0) {
                    *(int *)((char *)&o + ints[k].off) = (int)parse_num(a, v, 1);
                    known = 1;
                }
        }
        if (!known) {
            fprintf(stderr, "aqa-memplan: unknown option %s\n", a);
            usage("see the options above");
        }
    }
    if (!model) usage("--model is required");
    ModelConfig c;
    MemPlan p;
    Err e;
    if (hf_config_load(model, &c, &e)) {
        fprintf(stderr, "aqa-memplan: %s\n", e.msg);
        return 1;
    }
    if (memplan_build(&c, &o, &p, &e)) {
        fprintf(stderr, "aqa-memplan: %s: %s\n", model, e.msg);
        return 1;
    }
    memplan_print(stdout, &o, &p);
    return 0;
}
