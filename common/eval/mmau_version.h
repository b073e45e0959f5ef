// mmau_version.h: which MMAU test-mini a file is. The benchmark exists in two versions with the same
// 1000-item layout and no version field: the original (Oct 2024 - Mar 2025; R1-AQA's 64.5) and the
// revised MMAU-v05.15.25 (May 2025: ~25% of questions and answers revised, 106 items replaced; later
// work reports 67.2 for the same method on it). Scores on the two are not comparable, so the
// evaluation says which one it scored. The evidence is the items' ids (the 106 replaced items) and the
// answers of the 210 kept items whose answer the revision changed (mmau_version_table.h).
#pragma once
#include <stdio.h>

typedef enum {
    MMAU_VERSION_UNKNOWN = 0,  // no item carries evidence (another split, a subset without markers)
    MMAU_VERSION_ORIGINAL,
    MMAU_VERSION_REVISED,  // v05.15.25 or one of its later fixes
} MmauVersion;

typedef struct {
    int original_ids, revised_ids;          // items only one version has
    int original_answers, revised_answers;  // changed items whose answer is that version's
    int items;                              // items seen
} MmauVersionEvidence;

// Adds one item (id and answer text; either may be NULL).
void mmau_version_add(MmauVersionEvidence *v, const char *id, const char *answer);
// The version the evidence points to: ORIGINAL when it has only the original's ids and more original
// than revised answers; REVISED when it has any revised id or more revised than original answers;
// UNKNOWN without evidence.
MmauVersion mmau_version_decide(const MmauVersionEvidence *v);
const char *mmau_version_name(MmauVersion version);
// One line: "MMAU version: <name> (evidence: ...)".
void mmau_version_print(const MmauVersionEvidence *v, FILE *f);
