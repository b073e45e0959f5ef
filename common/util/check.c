#include "util/check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int err_set(Err *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int err_prefix(Err *e, const char *fmt, ...) {
    if (!e) return -1;
    char prefix[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%.500s: %.500s", prefix, old);
    return -1;
}

void fatal_at(const char *file, int line, const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "fatal: %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    // _exit, not exit: the error may be the one a library's exit handler trips over again (HDF5 closing
    // its files on a full disk crashed inside H5_term_library). Our buffered streams are flushed first, so
    // no log line is lost; files that must be complete are made durable by their writers, never at exit.
    fflush(NULL);
    _exit(1);
}

void *malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) fatal_at(file, line, "out of memory allocating %zu bytes", size);
    return p;
}

void *calloc_check(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fatal_at(file, line, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *realloc_check(void *p, size_t size, const char *file, int line) {
    void *q = realloc(p, size ? size : 1);
    if (!q) fatal_at(file, line, "out of memory reallocating to %zu bytes", size);
    return q;
}

char *strdup_check(const char *s, const char *file, int line) {
    char *p = strdup(s);
    if (!p) fatal_at(file, line, "out of memory duplicating a string");
    return p;
}

FILE *fopen_check(const char *path, const char *mode, const char *file, int line) {
    FILE *f = fopen(path, mode);
    if (!f) fatal_at(file, line, "cannot open %s (mode %s): %s", path, mode, strerror(errno));
    return f;
}

void fread_check(void *ptr, size_t size, size_t n, FILE *f, const char *file, int line) {
    size_t got = fread(ptr, size, n, f);
    if (got != n)
        fatal_at(file, line, "short read: %zu of %zu items (%s)", got, n,
                 feof(f) ? "end of file" : strerror(errno));
}

void fwrite_check(const void *ptr, size_t size, size_t n, FILE *f, const char *file, int line) {
    if (fwrite(ptr, size, n, f) != n) fatal_at(file, line, "write failed: %s", strerror(errno));
}

void fclose_check(FILE *f, const char *file, int line) {
    if (fclose(f) != 0) fatal_at(file, line, "close failed: %s", strerror(errno));
}
