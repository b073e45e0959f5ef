// config_check: loads a run configuration the way every binary does (--config FILE, --set k=v ...),
// validates it and prints the effective config (every key) as JSON on stdout. --help-config lists keys.
// --learners N [--rollouts R] also checks the job shape as the ranks do (config_check_world; R defaults
// to N).
// Usage: config_check [--config FILE] [--set section.key=value ...] [--learners N [--rollouts R]]
//                     [--help-config]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

// The rank count argv[i + 1] of option argv[i] into *n.
static int count_arg(char **argv, int i, int *n, Err *e) {
    char *end;
    long v = strtol(argv[i + 1], &end, 10);
    if (*end || end == argv[i + 1] || v < 0 || v > 1 << 20) return err_set(e, "%s %s: not a count", argv[i], argv[i + 1]);
    *n = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    Config *cfg = mallocCheck(sizeof *cfg);
    Err e;
    int rc = config_from_args(cfg, &argc, argv, &e);
    if (rc == 0 && (argc == 3 || argc == 5) && strcmp(argv[1], "--learners") == 0) {
        int learners, rollouts;
        rc = count_arg(argv, 1, &learners, &e);
        if (rc == 0 && argc == 5)
            rc = strcmp(argv[3], "--rollouts") ? err_set(&e, "unexpected argument %s", argv[3])
                                               : count_arg(argv, 3, &rollouts, &e);
        else rollouts = learners;
        if (rc == 0) rc = config_check_world(cfg, learners, rollouts, &e);
    } else if (rc == 0 && argc > 1) {
        rc = err_set(&e, "unexpected argument %s", argv[1]);
    }
    if (rc == 0) {
        char *text = config_to_json(cfg);
        fputs(text, stdout);
        free(text);
    } else if (rc != CONFIG_ARGS_HELP) {
        fprintf(stderr, "config_check: %s\n", e.msg);
    }
    free(cfg);
    return rc < 0 ? 1 : 0;
}
