// config_check: loads a run configuration the way every binary does (--config FILE, --set k=v ...),
// validates it and prints the effective config (every key) as JSON on stdout. --help-config lists keys.
// --learners N also checks the job shape as the learners do (config_check_world).
// Usage: config_check [--config FILE] [--set section.key=value ...] [--learners N] [--help-config]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int main(int argc, char **argv) {
    Config *cfg = mallocCheck(sizeof *cfg);
    Err e;
    int rc = config_from_args(cfg, &argc, argv, &e);
    if (rc == 0 && argc == 3 && strcmp(argv[1], "--learners") == 0) {
        char *end;
        long n = strtol(argv[2], &end, 10);
        if (*end || end == argv[2] || n < 1 || n > 1 << 20) rc = err_set(&e, "--learners %s: not a count", argv[2]);
        else rc = config_check_world(cfg, (int)n, &e);
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
