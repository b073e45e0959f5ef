// check.h: fail-fast wrappers for system calls (stdio, malloc) and the Err type used for bad input.
// System errors (out of memory, a write that fails) end the process with file:line; bad external input
// (a data line, an audio file, a config key) is reported through Err so the caller can skip or stop.
#pragma once
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

// The message of a recoverable error: what and where ("data.jsonl:12: answer 5 out of range [0, 4)").
typedef struct {
    char msg[1024];
} Err;

// Formats into e (when non-NULL) and returns -1, so `return err_set(e, ...)` reads naturally.
int err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prepends "prefix: " to an existing message (adds the outer context: file, key, line).
int err_prefix(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Prints "fatal: file:line: message" and exits 1 (MPI jobs: every rank's exit ends mpirun).
void fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define fatal(...) fatal_at(__FILE__, __LINE__, __VA_ARGS__)

void *malloc_check(size_t size, const char *file, int line);
void *calloc_check(size_t n, size_t size, const char *file, int line);
void *realloc_check(void *p, size_t size, const char *file, int line);
char *strdup_check(const char *s, const char *file, int line);
FILE *fopen_check(const char *path, const char *mode, const char *file, int line);
void fread_check(void *ptr, size_t size, size_t n, FILE *f, const char *file, int line);
void fwrite_check(const void *ptr, size_t size, size_t n, FILE *f, const char *file, int line);
void fclose_check(FILE *f, const char *file, int line);
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)
#define callocCheck(n, size) calloc_check(n, size, __FILE__, __LINE__)
#define reallocCheck(p, size) realloc_check(p, size, __FILE__, __LINE__)
#define strdupCheck(s) strdup_check(s, __FILE__, __LINE__)
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)
#define freadCheck(ptr, size, n, f) fread_check(ptr, size, n, f, __FILE__, __LINE__)
#define fwriteCheck(ptr, size, n, f) fwrite_check(ptr, size, n, f, __FILE__, __LINE__)
#define fcloseCheck(f) fclose_check(f, __FILE__, __LINE__)
