// reward-server: the reward service (see README.md for the protocol).
// Usage: reward-server [--config FILE] [--set reward.KEY=V]... [--listen HOST:PORT] [flags...]; `--help`
// lists the flags. The run's config supplies the reward.* settings; flags given after it override them.
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config/config.h"
#include "server.h"
#include "util/log.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: reward-server [--config FILE] [--set reward.KEY=VALUE]... [flags]\n"
            "  --config FILE           run config: reward.server, reward.*_weight, reward.numeric_equivalence,\n"
            "                          reward.max_line_bytes (flags below override it)\n"
            "  --listen HOST:PORT      address to serve (default reward.server, 127.0.0.1:7700; port 0: any\n"
            "                          free port)\n"
            "  --max-queued-bytes N    unsent output per client before it is dropped (default 16777216)\n"
            "  --max-connections N     concurrent clients (default 1024)\n"
            "  --drain-timeout S       after SIGTERM, seconds to wait for slow readers (default 5)\n"
            "  --port-file PATH        write the bound port to PATH once listening\n"
            "  --log-level L           debug | info | warn | error (default info)\n"
            "%s",
            REWARD_CLI_SCORING_HELP);
}

static int parse_args(int argc, char **argv, RewardServerOptions *opt, Err *e) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = reward_cli_scoring_flag(argc, argv, &i, &opt->proto, &opt->max_line_bytes, e);
        if (r < 0) return -1;
        if (r > 0) continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) return err_set(e, "unknown flag or missing value: %s", a);
        const char *v = argv[++i];
        size_t n;
        LogLevel level;
        if (strcmp(a, "--listen") == 0) {
            if (strlen(v) >= sizeof opt->listen) return err_set(e, "--listen: address too long");
            snprintf(opt->listen, sizeof opt->listen, "%s", v);
        } else if (strcmp(a, "--max-queued-bytes") == 0) {
            if (reward_cli_size(a, v, &opt->max_queued_bytes, e) != 0) return -1;
        } else if (strcmp(a, "--max-connections") == 0) {
            if (reward_cli_size(a, v, &n, e) != 0) return -1;
            if (n > INT_MAX) return err_set(e, "--max-connections: %zu is too large", n);
            opt->max_connections = (int)n;
        } else if (strcmp(a, "--drain-timeout") == 0) {
            if (reward_cli_double(a, v, &opt->drain_timeout_s, e) != 0) return -1;
        } else if (strcmp(a, "--port-file") == 0) {
            if (strlen(v) >= sizeof opt->port_file) return err_set(e, "--port-file: path too long");
            snprintf(opt->port_file, sizeof opt->port_file, "%s", v);
        } else if (strcmp(a, "--log-level") == 0) {
            if (log_level_parse(v, &level) != 0) return err_set(e, "--log-level: unknown level \"%s\"", v);
            log_set_level(level);
        } else {
            return err_set(e, "unknown flag: %s", a);
        }
    }
    return 0;
}

static void options_from_config(RewardServerOptions *opt, const Config *cfg) {
    snprintf(opt->listen, sizeof opt->listen, "%s", cfg->reward.server);
    opt->max_line_bytes = (size_t)cfg->reward.max_line_bytes;
    opt->proto.scoring.accuracy_weight = cfg->reward.accuracy_weight;
    opt->proto.scoring.format_weight = cfg->reward.format_weight;
    opt->proto.scoring.numeric_equivalence = cfg->reward.numeric_equivalence;
}

int main(int argc, char **argv) {
    log_init("reward", -1);
    signal(SIGPIPE, SIG_IGN);  // a vanished client shows up as a write error, not a signal
    RewardServerOptions opt;
    reward_server_options_default(&opt);
    Err e;
    Config cfg;
    int rc = config_from_args(&cfg, &argc, argv, &e);
    if (rc == CONFIG_ARGS_HELP) return 0;
    if (rc == 0) options_from_config(&opt, &cfg);
    if (rc != 0 || parse_args(argc, argv, &opt, &e) != 0 || reward_server_run(&opt, &e) != 0) {
        fprintf(stderr, "reward-server: %s\n", e.msg);
        if (strstr(e.msg, "flag")) usage(stderr);
        return 1;
    }
    return 0;
}
