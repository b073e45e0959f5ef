// procmem.c: see procmem.h.
#include "util/procmem.h"

#include <stdio.h>
#include <string.h>

#include "util/check.h"

double procmem_peak_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");  // absent off Linux: no figure
    if (!f) return -1;
    char line[256];
    double kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            if (sscanf(line + 6, "%lf", &kib) != 1) kib = -1;
            break;
        }
    fcloseCheck(f);
    return kib < 0 ? -1 : kib * 1024;
}
