// avqa.h: AVQA's train_qa.json and its videos -> R1-AQA training data.
// train_qa.json is one JSON array of questions {"id", "video_name" ("<YouTube id>_<start, 6 digits>",
// the VGGSound clip name), "video_id", "question_text", "multi_choice", "answer" (0-based),
// "question_relation", "question_type"}; many questions share a clip. Every clip is found under the
// media folder (searched recursively, by file name without extension: the video_name itself or the
// R1-AQA audio name below; videos mp4/mkv/webm/avi/mov or audio wav/flac/mp3/m4a/ogg/opus), decoded by
// FFmpeg to 16 kHz mono and written as OUT/wav/<YouTube id>_<start without leading zeros>.wav (16-bit
// PCM, R1-AQA's naming), in parallel. Resumable: a wav already there is finished (it is written under a
// temporary name and renamed, so a partial one never has the final name) and is not decoded again.
// Then OUT/train.jsonl: one line per question whose audio exists, the AVQA object with every field in
// its order plus "dataset_name": "AVQA" and "audio_path" (absolute). Questions whose clip is missing or
// undecodable, and malformed records, are left out, counted and listed in OUT/excluded.tsv
// ("what<TAB>questions<TAB>reason").
#pragma once
#include <stdint.h>

#include "util/check.h"

typedef struct {
    const char *qa_path;    // train_qa.json
    const char *media_dir;  // the clips
    const char *out_dir;    // created if missing
    int threads;
} AvqaOptions;

typedef struct {
    int64_t questions;     // records in train_qa.json
    int64_t written;       // lines in train.jsonl
    int64_t bad_records;   // malformed records (left out)
    int64_t clips;         // distinct clips of the well-formed records
    int64_t converted;     // decoded by this run
    int64_t already;       // finished by an earlier run
    int64_t missing;       // no source file
    int64_t undecodable;   // source present but not decodable
} AvqaStats;

// Runs the whole preparation. Returns -1 with e set when train_qa.json cannot be read or is not an array
// of objects, the output cannot be written, or no question is left.
int avqa_prepare(const AvqaOptions *o, AvqaStats *st, Err *e);
// The R1-AQA wav name (no extension) of a VGGSound clip name: "-HG3Omg_89c_000030" -> "-HG3Omg_89c_30";
// a name without a numeric "_start" suffix is kept as it is. Returns out.
char *avqa_audio_name(const char *video_name, char *out, size_t cap);
