// jsonout.h: JSON text output for hand-formatted files (the effective config, metrics lines).
// Jansson prints reals with 17 digits (0.04 -> 0.040000000000000001); these helpers print the shortest
// decimal that reads back to the same double, so files stay readable and still round-trip exactly.
#pragma once
#include <stddef.h>

// Shortest round-trip decimal of a finite x, always with a '.' or exponent so it reads back as a real
// ("1.0", "0.04", "1e-06"); non-finite x gives "null" (JSON has no NaN or infinity). Returns out.
char *jsonout_double(char *out, size_t cap, double x);
// Appends s as a quoted JSON string (escapes '"', '\\' and control characters) to the growing
// buffer *buf of length *len and capacity *cap.
void jsonout_string(char **buf, size_t *len, size_t *cap, const char *s);
// Appends printf-formatted text to the same kind of growing buffer.
void jsonout_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
