// signals.c: see signals.h.
#include "util/signals.h"

#include <signal.h>
#include <string.h>

#include "util/check.h"

static volatile sig_atomic_t signals_stop;

static void signals_on_stop(int sig) { signals_stop = sig; }

void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = signals_on_stop;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0) fatal("sigaction(SIGTERM) failed");
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGXFSZ, &sa, NULL) != 0) fatal("sigaction(SIGXFSZ) failed");
}

int signals_stop_requested(void) { return signals_stop; }
