// mmau_version.c: telling the original MMAU test-mini from MMAU-v05.15.25 by its items.
#include "eval/mmau_version.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/crc32.h"
#include "eval/mmau_version_table.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

// The first 8 hex digits of a UUID-style id; -1 when it does not start with them.
static int64_t id_prefix(const char *id) {
    if (!id || strlen(id) < 8) return -1;
    uint32_t x = 0;
    for (int i = 0; i < 8; i++) {
        char c = id[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        x = x << 4 | (uint32_t)d;
    }
    return x;
}

static int in_list(const uint32_t *list, size_t n, uint32_t x) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == x) return 1;
    return 0;
}

void mmau_version_add(MmauVersionEvidence *v, const char *id, const char *answer) {
    v->items++;
    int64_t p = id_prefix(id);
    if (p < 0) return;
    uint32_t x = (uint32_t)p;
    v->original_ids += in_list(mmau_original_only_ids, COUNT(mmau_original_only_ids), x);
    v->revised_ids += in_list(mmau_revised_only_ids, COUNT(mmau_revised_only_ids), x);
    if (!answer) return;
    for (size_t i = 0; i < COUNT(mmau_changed_answers); i++) {
        if (mmau_changed_answers[i].id != x) continue;
        uint32_t c = crc32_update(0, answer, strlen(answer));
        v->original_answers += c == mmau_changed_answers[i].original;
        v->revised_answers += c == mmau_changed_answers[i].revised;
        return;
    }
}

MmauVersion mmau_version_decide(const MmauVersionEvidence *v) {
    if (v->revised_ids > 0 || v->revised_answers > v->original_answers) return MMAU_VERSION_REVISED;
    if (v->original_ids > 0 || v->original_answers > 0) return MMAU_VERSION_ORIGINAL;
    return MMAU_VERSION_UNKNOWN;
}

const char *mmau_version_name(MmauVersion version) {
    switch (version) {
    case MMAU_VERSION_ORIGINAL: return "original test-mini (R1-AQA reports 64.50 on it)";
    case MMAU_VERSION_REVISED: return "MMAU-v05.15.25 (revised test-mini; not comparable with the original)";
    default: return "unknown (no item of either test-mini version's distinguishing sets)";
    }
}

void mmau_version_print(const MmauVersionEvidence *v, FILE *f) {
    fprintf(f,
            "MMAU version: %s [evidence over %d items: %d/%zu replaced items of the original, %d/%zu of the "
            "revision; %d original and %d revised answers of the %zu changed ones]\n",
            mmau_version_name(mmau_version_decide(v)), v->items, v->original_ids, COUNT(mmau_original_only_ids),
            v->revised_ids, COUNT(mmau_revised_only_ids), v->original_answers, v->revised_answers,
            COUNT(mmau_changed_answers));
}
