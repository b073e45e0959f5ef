// config_check: loads a run configuration the way every binary does (--config FILE, --set k=v ...),
// validates it and prints the effective config (every key) as JSON on stdout. --help-config lists keys.
// Usage: config_check [--config FILE] [--set section.key=value ...] [--help-config]
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"

int main(int argc, char **argv) {
    Config *cfg = mallocCheck(sizeof *cfg);
    Err e;
    int rc = config_from_args(cfg, &argc, argv, &e);
    if (rc == 0 && argc > 1) rc = err_set(&e, "unexpected argument %s", argv[1]);
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
