// Tests of common/reward: the reward functions against a table of edge cases whose expected values
// were computed with the Python reference (re + str.strip, the MMAU string_match), the UTF-8 repair,
// and the wire protocol (answers, every error path, client encode/decode, address parsing).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "test.h"
#include "reward/protocol.h"
#include "reward/reward.h"
#include "util/rng.h"

#include <time.h>

typedef struct {
    const char *completion, *solution;
    RewardMode mode;
    int accuracy, format;
} ScoreCase;

// Expected values from Python: re.search(r'<answer>(.*?)</answer>', .).group(1).strip() else .strip()
// for accuracy; re.fullmatch(pattern, ., re.DOTALL) for (think-)format.
static const ScoreCase SCORE_CASES[] = {
    {"<answer>Dog</answer>", "<answer>Dog</answer>", REWARD_MODE_ANSWER, 1, 1},  // exact match
    {"<answer>Dog\n</answer>", "Dog", REWARD_MODE_ANSWER, 0, 1},  // newline inside the tag: no accuracy match, DOTALL format
    {"<answer>a</answer><answer>b</answer>", "a", REWARD_MODE_ANSWER, 1, 1},  // several tags: first wins; fullmatch spans both
    {"<answer>a</answer><answer>b</answer>", "b", REWARD_MODE_ANSWER, 0, 1},  // several tags: the second is not used
    {"  <answer>a</answer>  ", "a", REWARD_MODE_ANSWER, 1, 0},  // whitespace around the tag: format fails
    {"<answer>  a\t</answer>", "a", REWARD_MODE_ANSWER, 1, 1},  // whitespace inside the tag is stripped
    {"a", "a", REWARD_MODE_ANSWER, 1, 0},  // missing tag: whole completion
    {" a \n", "<answer>a</answer>", REWARD_MODE_ANSWER, 1, 0},  // missing tag, stripped
    {"<answer></answer>", "", REWARD_MODE_ANSWER, 1, 1},  // empty answer equals empty solution
    {"<answer></answer>", "a", REWARD_MODE_ANSWER, 0, 1},  // empty answer
    {"The answer is <answer>a</answer>.", "a", REWARD_MODE_ANSWER, 1, 0},  // text around the tag
    {"<answer>猫</answer>", "<answer>猫</answer>", REWARD_MODE_ANSWER, 1, 1},  // unicode answer
    {"<answer>\xe3\x80\x80猫\xc2\xa0</answer>", "猫", REWARD_MODE_ANSWER, 1, 1},  // unicode whitespace stripped
    {"<answer>\x1c" "a\x1f\xc2\x85</answer>", "a", REWARD_MODE_ANSWER, 1, 1},  // \x1c-\x1f and \x85 are Python whitespace
    {"<answer>a\xe2\x80\x8b</answer>", "a", REWARD_MODE_ANSWER, 0, 1},  // zero-width space is not whitespace
    {"<answer>dog</answer>", "Dog", REWARD_MODE_ANSWER, 0, 1},  // case-sensitive
    {"<answer>a", "a", REWARD_MODE_ANSWER, 0, 0},  // unclosed tag
    {"<answer>x\ny</answer><answer>b</answer>", "b", REWARD_MODE_ANSWER, 1, 1},  // first tag spans a newline: the next one matches
    {"<answer><answer>a</answer></answer>", "a", REWARD_MODE_ANSWER, 0, 1},  // nested tags
    {"<Answer>a</Answer>", "a", REWARD_MODE_ANSWER, 0, 0},  // tags are case-sensitive
    {"<answer>a</answer>\n", "a", REWARD_MODE_ANSWER, 1, 0},  // trailing newline breaks the full match
    {"<answer>a\n</answer>", "<answer>a\n</answer>", REWARD_MODE_ANSWER, 1, 1},  // newline in both: whole texts compared
    {"<answer>a\r</answer>", "a", REWARD_MODE_ANSWER, 1, 1},  // carriage return is matched by . and stripped
    {"<answer>a</answer>", "  a  ", REWARD_MODE_ANSWER, 1, 1},  // bare solution stripped
    {"<answer>Ä</answer>", "ä", REWARD_MODE_ANSWER, 0, 1},  // no case folding
    {"<think>x</think><answer>a</answer>", "a", REWARD_MODE_THINK, 1, 1},  // think then answer
    {"<think>x</think>\n\n <answer>a</answer>", "a", REWARD_MODE_THINK, 1, 1},  // whitespace between blocks
    {"<think>x</think>\xe3\x80\x80\x1c<answer>a</answer>", "a", REWARD_MODE_THINK, 1, 1},  // unicode whitespace between blocks
    {"<think>x</think>\xe2\x80\x8b<answer>a</answer>", "a", REWARD_MODE_THINK, 1, 0},  // zero-width space between blocks
    {"<answer>a</answer><think>x</think>", "a", REWARD_MODE_THINK, 1, 0},  // answer before think
    {"<answer>a</answer>", "a", REWARD_MODE_THINK, 1, 0},  // think block missing
    {"<think>x</think> so <answer>a</answer>", "a", REWARD_MODE_THINK, 1, 0},  // text between blocks
    {"<think>line1\nline2</think><answer>a</answer>", "a", REWARD_MODE_THINK, 1, 1},  // multi-line think
    {"ok <think>x</think><answer>a</answer>", "a", REWARD_MODE_THINK, 1, 0},  // text before think
    {"<think></think><answer></answer>", "", REWARD_MODE_THINK, 1, 1},  // empty blocks
    {"<think>x</think><answer>a</answer>", "a", REWARD_MODE_ANSWER, 1, 0},  // think block in answer mode
    {"<think>a</think><think>b</think><answer>c</answer>", "c", REWARD_MODE_THINK, 1, 1},  // two think blocks
    {"<think>x<answer>a</answer>", "a", REWARD_MODE_THINK, 1, 0},  // think not closed
    {"<think>x</think><answer>a</answer> ", "a", REWARD_MODE_THINK, 1, 0},  // trailing space
};

static void test_score_table(void) {
    RewardOptions opt;
    reward_options_default(&opt);
    for (size_t i = 0; i < sizeof SCORE_CASES / sizeof SCORE_CASES[0]; i++) {
        const ScoreCase *c = &SCORE_CASES[i];
        RewardResult r;
        opt.mode = c->mode;
        reward_score(&opt, c->completion, c->solution, &r);
        CHECKF(r.accuracy == c->accuracy && r.format == c->format,
               "case %zu: completion \"%s\" solution \"%s\": accuracy %g format %g, expected %d %d", i,
               c->completion, c->solution, r.accuracy, r.format, c->accuracy, c->format);
        CHECK(r.total == r.accuracy + r.format);
        CHECK(r.mmau_correct == -1);
    }
}

typedef struct {
    const char *completion, *solution;
    int exact, numeric;
} NumericCase;

static const NumericCase NUMERIC_CASES[] = {
    {"<answer>2.0</answer>", "2", 0, 1},
    {"<answer> 1e3 </answer>", "<answer>1000</answer>", 0, 1},
    {"<answer>2</answer>", "two", 0, 0},
    {"<answer>2.0x</answer>", "2", 0, 0},
    {"<answer></answer>", "0", 0, 0},
    {"<answer>-0</answer>", "0", 0, 1},
    {"<answer>0.1</answer>", "0.10", 0, 1},
    {"<answer>0x10</answer>", "16", 0, 0},
    {"<answer>inf</answer>", "Infinity", 0, 1},
};

static void test_numeric_equivalence(void) {
    RewardOptions opt;
    reward_options_default(&opt);
    for (size_t i = 0; i < sizeof NUMERIC_CASES / sizeof NUMERIC_CASES[0]; i++) {
        const NumericCase *c = &NUMERIC_CASES[i];
        RewardResult r;
        opt.numeric_equivalence = 0;
        reward_score(&opt, c->completion, c->solution, &r);
        CHECKF(r.accuracy == c->exact, "case %zu exact: %g", i, r.accuracy);
        opt.numeric_equivalence = 1;
        reward_score(&opt, c->completion, c->solution, &r);
        CHECKF(r.accuracy == c->numeric, "case %zu numeric: %g", i, r.accuracy);
    }
}

typedef struct {
    const char *prediction, *answer;
    const char *choices[4];
    int n_choices;
    int correct;
} MmauCase;

// Expected values from the official MMAU string_match (set(re.findall(r'\b\w+\b', s.lower()))).
static const MmauCase MMAU_CASES[] = {
    {"Dog", "Dog", {"Dog", "Cat"}, 2, 1},
    {"The dog barks", "Dog", {"Dog", "Cat"}, 2, 1},
    {"dog or cat", "Dog", {"Dog", "Cat"}, 2, 0},
    {"", "Dog", {"Dog", "Cat"}, 2, 0},
    {"!!!", "Dog", {"Dog"}, 1, 0},
    {"Man speaking", "Man", {"Man", "Woman", "Man speaking"}, 3, 0},
    {"electric guitar.", "Electric guitar", {"Electric guitar", "Acoustic guitar"}, 2, 1},
    {"guitar", "Electric guitar", {"Electric guitar", "Acoustic guitar"}, 2, 0},
    {"DOG", "dog", {"Dog", "dog ", "Cat"}, 3, 1},
    {"Ä", "ä", {"ä", "ö"}, 2, 1},
    {"İstanbul", "istanbul", {}, 0, 0},
    {"ΟΔΟΣ", "οδοσ", {}, 0, 0},
    {"οδος", "ΟΔΟΣ", {}, 0, 1},
    {"option_2", "option_2", {"option_2", "option_3"}, 2, 1},
    {"option 2", "option_2", {}, 0, 0},
    {"don't know", "t", {}, 0, 1},
    {"x", "?", {"?", "b"}, 2, 1},
    {"b", "?", {"?", "b"}, 2, 0},
    {"3 dogs", "3", {"3", "4"}, 2, 1},
    {"猫です", "猫です", {"猫です", "犬"}, 2, 1},
};

static void test_mmau_table(void) {
    for (size_t i = 0; i < sizeof MMAU_CASES / sizeof MMAU_CASES[0]; i++) {
        const MmauCase *c = &MMAU_CASES[i];
        int got = mmau_is_correct(c->prediction, c->answer, c->choices, c->n_choices);
        CHECKF(got == c->correct, "case %zu: prediction \"%s\" answer \"%s\": %d, expected %d", i,
               c->prediction, c->answer, got, c->correct);
    }
}

// On the real MMAU test-mini items: the answer text itself is judged correct, and every other choice
// with a different token set is judged incorrect (it either misses an answer token or adds a token
// only a wrong choice has).
static void test_mmau_real_items(void) {
    json_error_t jerr;
    json_t *items = json_load_file(SHARED_PATH("data/mmau/mmau-test-mini.json"), 0, &jerr);
    CHECKF(json_array_size(items) == 1000, "mmau-test-mini.json: %s", items ? "not 1000 items" : jerr.text);
    int right = 0, wrong = 0, n_wrong = 0;
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i), *ch = json_object_get(it, "choices");
        const char *answer = json_string_value(json_object_get(it, "answer"));
        const char *choices[16];
        int n = (int)json_array_size(ch);
        if (!answer || n > 16) continue;
        for (int k = 0; k < n; k++) choices[k] = json_string_value(json_array_get(ch, k));
        right += mmau_is_correct(answer, answer, choices, n);
        for (int k = 0; k < n; k++) {
            // The same token set as the answer (each holds the other's tokens): not a wrong choice.
            if (mmau_is_correct(choices[k], answer, NULL, 0) && mmau_is_correct(answer, choices[k], NULL, 0)) continue;
            n_wrong++;
            wrong += !mmau_is_correct(choices[k], answer, choices, n);
        }
    }
    CHECK_INT(right, 1000);
    CHECK_INT(wrong, n_wrong);
    CHECK(n_wrong > 2000);
    json_decref(items);
}

static void test_weights_and_modes(void) {
    RewardOptions opt;
    reward_options_default(&opt);
    CHECK(opt.mode == REWARD_MODE_ANSWER && opt.accuracy_weight == 1 && opt.format_weight == 1);
    opt.accuracy_weight = 0.5;
    opt.format_weight = 2;
    RewardResult r;
    reward_score(&opt, "<answer>a</answer>", "a", &r);
    CHECK_NEAR(r.total, 2.5, 0);
    reward_score(&opt, "<answer>b</answer>", "a", &r);
    CHECK_NEAR(r.total, 2.0, 0);
    RewardMode m;
    CHECK(reward_mode_parse("think", &m) == 0 && m == REWARD_MODE_THINK);
    CHECK(reward_mode_parse("answer", &m) == 0 && m == REWARD_MODE_ANSWER);
    CHECK(reward_mode_parse("Think", &m) == -1);
    CHECK(reward_mode_parse("", &m) == -1);
    CHECK_STR(reward_mode_name(REWARD_MODE_THINK), "think");
}

static void test_extract_and_strip(void) {
    char *s = reward_extract_answer("x <answer> Dog barking </answer> <answer>b</answer>");
    CHECK_STR(s, "Dog barking");
    free(s);
    s = reward_extract_answer("\xe3\x80\x80 no tags \x1c");
    CHECK_STR(s, "no tags");
    free(s);
    s = reward_extract_answer("  \n ");
    CHECK_STR(s, "");
    free(s);
    size_t a;
    CHECK_INT(reward_py_strip(" \xc2\x85x\xc2\xa0", 6, &a), 1);
    CHECK_INT(a, 3);
    CHECK(reward_is_py_space(0x1c) && reward_is_py_space(0x3000) && !reward_is_py_space(0x200b));
    CHECK(!reward_is_py_space(0x180e));  // Mongolian vowel separator: not whitespace since Unicode 6.3
}

static void test_utf8_repair(void) {
    // Python: bytes.decode("utf-8", errors="replace").
    static const struct { const char *in, *out; } CASES[] = {
        {"a\xff", "a\xef\xbf\xbd"},
        {"\xe2\x82", "\xef\xbf\xbd"},
        {"\xe2\x82" "a", "\xef\xbf\xbd" "a"},
        {"\xf0\x9f\x98", "\xef\xbf\xbd"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe0\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x9f\x98\x80 ok", "\xf0\x9f\x98\x80 ok"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char *s = reward_utf8_sanitize(CASES[i].in, strlen(CASES[i].in));
        CHECKF(strcmp(s, CASES[i].out) == 0, "case %zu", i);
        free(s);
    }
    // A completion cut inside a character is scored as its repaired text.
    RewardOptions opt;
    reward_options_default(&opt);
    RewardResult r;
    reward_score(&opt, "<answer>a\xe2\x82</answer>", "a\xef\xbf\xbd", &r);
    CHECK(r.accuracy == 1 && r.format == 1);
    CHECK(mmau_is_correct("dog\xff", "dog", NULL, 0) == 1);
}

// The Python patterns spelled in PCRE2 (an independent oracle for the hand-written linear matchers):
// `.` without DOTALL is [^\n]; \s is Python's whitespace set; fullmatch is \A...\z.
#define PY_SPACE_CLASS "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}]"
static const char *const ORACLE_SRC[3] = {
    "<answer>([^\\n]*?)</answer>",
    "\\A<answer>.*?</answer>\\z",
    "\\A<think>.*?</think>" PY_SPACE_CLASS "*<answer>.*?</answer>\\z",
};

static void test_matchers_against_regex_oracle(void) {
    pcre2_code *re[3];
    for (int i = 0; i < 3; i++) {
        int code;
        PCRE2_SIZE off;
        re[i] = pcre2_compile((PCRE2_SPTR)ORACLE_SRC[i], PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | (i ? PCRE2_DOTALL : 0), &code, &off, NULL);
        CHECK(re[i] != NULL);
    }
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    static const char *const PIECES[] = {"<answer>", "</answer>", "<think>", "</think>", "\n", " ", "\xe3\x80\x80",
                                         "\x1c", "a", "b", "<", "/", "answer>", "\xe2\x80\x8b"};
    const int n_pieces = sizeof PIECES / sizeof PIECES[0];
    Rng rng;
    rng_init(&rng, 1234, 0);
    RewardOptions opt;
    reward_options_default(&opt);
    int mismatches = 0;
    for (int t = 0; t < 20000; t++) {
        char s[256] = "";
        int n = (int)rng_below(&rng, 14);
        for (int i = 0; i < n; i++) strcat(s, PIECES[rng_below(&rng, (uint64_t)n_pieces)]);
        size_t len = strlen(s);
        // accuracy extraction: first group stripped, else the whole text stripped.
        char want[256];
        size_t a, m;
        if (pcre2_match(re[0], (PCRE2_SPTR)s, len, 0, 0, md, NULL) > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            m = reward_py_strip(s + ov[2], ov[3] - ov[2], &a);
            a += ov[2];
        } else {
            m = reward_py_strip(s, len, &a);
        }
        memcpy(want, s + a, m);
        want[m] = 0;
        char *got = reward_extract_answer(s);
        RewardResult ra, rt;
        opt.mode = REWARD_MODE_ANSWER;
        reward_score(&opt, s, want, &ra);
        opt.mode = REWARD_MODE_THINK;
        reward_score(&opt, s, want, &rt);
        int fa = pcre2_match(re[1], (PCRE2_SPTR)s, len, 0, 0, md, NULL) > 0;
        int ft = pcre2_match(re[2], (PCRE2_SPTR)s, len, 0, 0, md, NULL) > 0;
        if (strcmp(got, want) != 0 || ra.accuracy != 1 || ra.format != fa || rt.format != ft) {
            if (mismatches++ < 5)
                CHECKF(0, "\"%s\": extract \"%s\" (oracle \"%s\"), format %g (%d), think %g (%d)", s, got, want,
                       ra.format, fa, rt.format, ft);
        }
        free(got);
    }
    CHECK_INT(mismatches, 0);
    pcre2_match_data_free(md);
    for (int i = 0; i < 3; i++) pcre2_code_free(re[i]);
}

// Adversarial megabyte inputs (quadratic for a backtracking regex) are scored in linear time.
static void test_adversarial_inputs_are_fast(void) {
    size_t reps = 125000;
    char *s = mallocCheck(8 * reps + 64);
    strcpy(s, "<think>");
    for (size_t i = 0; i < reps; i++) memcpy(s + 7 + 8 * i, i % 2 ? "</think>" : "<answer>", 8);
    s[7 + 8 * reps] = 0;
    RewardOptions opt;
    reward_options_default(&opt);
    RewardResult r;
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    opt.mode = REWARD_MODE_THINK;
    reward_score(&opt, s, "a", &r);
    CHECK(r.accuracy == 0 && r.format == 0);
    opt.mode = REWARD_MODE_ANSWER;
    reward_score(&opt, s + 7, "a", &r);
    CHECK(r.accuracy == 0 && r.format == 0);
    CHECK(mmau_is_correct(s, "answer", NULL, 0) == 1);
    double dt = (double)clock() / CLOCKS_PER_SEC - t0;
    CHECKF(dt < 1.0, "%.2f s of CPU for 1 MB inputs", dt);
    free(s);
}

// Answers one line and returns its compact JSON (static buffer).
static const char *answer(const RewardProtoOptions *opt, const char *line, RewardLineInfo *info) {
    static char buf[4096];
    json_t *r = reward_proto_answer(opt, line, strlen(line), NULL, NULL, info);
    size_t len;
    char *s = reward_proto_dump(r, &len);
    json_decref(r);
    CHECK(len > 0 && s[len - 1] == '\n');
    s[len - 1] = 0;
    snprintf(buf, sizeof buf, "%s", s);
    free(s);
    return buf;
}

static void test_protocol_answers(void) {
    RewardProtoOptions opt;
    reward_proto_options_default(&opt);
    RewardLineInfo info;
    CHECK_STR(answer(&opt, "{\"id\": 7, \"completion\": \"<answer>a</answer>\", \"solution\": \"<answer>a</answer>\"}", &info),
              "{\"id\":7,\"rewards\":{\"accuracy\":1.0,\"format\":1.0},\"total\":2.0}");
    CHECK(info.n_items == 1 && info.n_errors[REWARD_ERR_PARSE] + info.n_errors[REWARD_ERR_TYPE] == 0);
    CHECK_STR(answer(&opt, "{\"id\": \"q\", \"completion\": \"<think>t</think> <answer>a</answer>\", \"solution\": \"b\", \"mode\": \"think\"}", NULL),
              "{\"id\":\"q\",\"rewards\":{\"accuracy\":0.0,\"format\":1.0},\"total\":1.0}");
    CHECK_STR(answer(&opt, "{\"id\": 1, \"completion\": \"It is a <answer>dog</answer>\", \"solution\": \"dog\", "
                           "\"answer\": \"Dog\", \"choices\": [\"Dog\", \"Cat\"]}", NULL),
              "{\"id\":1,\"rewards\":{\"accuracy\":1.0,\"format\":0.0},\"total\":1.0,\"prediction\":\"dog\",\"mmau_correct\":true}");
    // A batch answers in order; a bad item gets its own error and the rest are scored.
    CHECK_STR(answer(&opt, "{\"id\": [1], \"items\": [{\"id\": 1, \"completion\": \"a\", \"solution\": \"a\"}, 3, "
                           "{\"id\": 2, \"completion\": \"a\", \"solution\": \"a\", \"mode\": \"x\"}, "
                           "{\"id\": 3, \"completion\": \"a\", \"solution\": \"a\", \"items\": []}]}", &info),
              "{\"id\":[1],\"items\":[{\"id\":1,\"rewards\":{\"accuracy\":1.0,\"format\":0.0},\"total\":1.0},"
              "{\"id\":null,\"error\":\"items[1]: must be a JSON object, not a number\"},"
              "{\"id\":2,\"error\":\"items[2]: unknown mode \\\"x\\\" (expected \\\"answer\\\" or \\\"think\\\")\"},"
              "{\"id\":3,\"error\":\"items[3]: a batch item cannot hold \\\"items\\\"\"}]}");
    CHECK(info.n_items == 1 && info.n_errors[REWARD_ERR_TYPE] == 2 && info.n_errors[REWARD_ERR_MODE] == 1);
    CHECK_STR(answer(&opt, "{\"id\": 5, \"items\": []}", NULL), "{\"id\":5,\"items\":[]}");
    CHECK_STR(answer(&opt, "{\"completion\": \"a\", \"solution\": \"a\"}", NULL),
              "{\"id\":null,\"rewards\":{\"accuracy\":1.0,\"format\":0.0},\"total\":1.0}");
}

static void test_protocol_errors(void) {
    RewardProtoOptions opt;
    reward_proto_options_default(&opt);
    opt.max_batch_items = 2;
    static const struct {
        const char *line, *response;
        RewardErrKind kind;
    } CASES[] = {
        {"{\"id\": 1, \"completion\": \"a\"", "{\"id\":null,\"error\":\"malformed JSON at column 27: '}' expected near end of file\"}", REWARD_ERR_PARSE},
        {"[1, 2]", "{\"id\":null,\"error\":\"request must be a JSON object, not an array\"}", REWARD_ERR_PARSE},
        {"{\"id\": 1, \"completion\": \"a\"} x", "{\"id\":null,\"error\":\"malformed JSON at column 30: end of file expected near 'x'\"}", REWARD_ERR_PARSE},
        {"{\"id\": 2, \"completion\": 5, \"solution\": \"a\"}", "{\"id\":2,\"error\":\"request: \\\"completion\\\" must be a string, not a number\"}", REWARD_ERR_TYPE},
        {"{\"id\": 3, \"completion\": \"a\"}", "{\"id\":3,\"error\":\"request: missing \\\"solution\\\"\"}", REWARD_ERR_TYPE},
        {"{\"id\": 4, \"completion\": \"a\", \"solution\": \"a\", \"mode\": 1}", "{\"id\":4,\"error\":\"request: \\\"mode\\\" must be a string, not a number\"}", REWARD_ERR_TYPE},
        {"{\"id\": 5, \"completion\": \"a\", \"solution\": \"a\", \"mode\": \"reason\"}", "{\"id\":5,\"error\":\"request: unknown mode \\\"reason\\\" (expected \\\"answer\\\" or \\\"think\\\")\"}", REWARD_ERR_MODE},
        {"{\"id\": 6, \"completion\": \"a\", \"solution\": \"a\", \"answer\": \"a\", \"choices\": \"a\"}", "{\"id\":6,\"error\":\"request: \\\"choices\\\" must be an array of strings, not a string\"}", REWARD_ERR_TYPE},
        {"{\"id\": 7, \"completion\": \"a\", \"solution\": \"a\", \"answer\": \"a\", \"choices\": [\"a\", null]}", "{\"id\":7,\"error\":\"request: \\\"choices\\\"[1] must be a string, not null\"}", REWARD_ERR_TYPE},
        {"{\"id\": 8, \"completion\": \"a\", \"solution\": \"a\", \"answer\": false}", "{\"id\":8,\"error\":\"request: \\\"answer\\\" must be a string, not a boolean\"}", REWARD_ERR_TYPE},
        {"{\"id\": 9, \"items\": {}}", "{\"id\":9,\"error\":\"\\\"items\\\" must be an array of requests, not an object\"}", REWARD_ERR_TYPE},
        {"{\"id\": 10, \"items\": [{}, {}, {}]}", "{\"id\":10,\"error\":\"batch of 3 items exceeds the limit of 2\"}", REWARD_ERR_LIMIT},
        {"{\"id\": 11, \"stats\": true}", "{\"id\":11,\"error\":\"stats are not available here\"}", REWARD_ERR_TYPE},
        {"{\"id\": 12, \"stats\": 1}", "{\"id\":12,\"error\":\"\\\"stats\\\" must be true\"}", REWARD_ERR_TYPE},
        {"{\"id\": 13, \"completion\": \"\\u0000\", \"solution\": \"a\"}", NULL, REWARD_ERR_PARSE},
        {"{\"id\": 14, \"completion\": \"\xff\", \"solution\": \"a\"}", NULL, REWARD_ERR_PARSE},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        RewardLineInfo info;
        const char *got = answer(&opt, CASES[i].line, &info);
        if (CASES[i].response) CHECKF(strcmp(got, CASES[i].response) == 0, "case %zu: %s", i, got);
        else CHECKF(strstr(got, "\"error\":") != NULL, "case %zu: %s", i, got);
        CHECKF(info.n_errors[CASES[i].kind] == 1 && info.n_items == 0, "case %zu: kind %d", i, CASES[i].kind);
    }
}

static json_t *stats_fn(void *ctx) { return json_pack("{s:i}", "lines", *(int *)ctx); }

static void test_protocol_stats_and_client_side(void) {
    RewardProtoOptions opt;
    reward_proto_options_default(&opt);
    int lines = 42;
    RewardLineInfo info;
    json_t *r = reward_proto_answer(&opt, "{\"id\":1,\"stats\":true}", 21, stats_fn, &lines, &info);
    CHECK(info.is_stats && json_integer_value(json_object_get(json_object_get(r, "stats"), "lines")) == 42);
    json_decref(r);

    // Client encoding -> server answer -> client decoding; invalid UTF-8 is repaired, not rejected.
    const char *choices[] = {"Dog", "Cat\xff"};
    RewardRequest rq = {.completion = "<think>x</think><answer>Dog</answer>\xe2\x82", .solution = "<answer>Dog</answer>",
                        .mode = REWARD_MODE_THINK, .answer = "Dog", .choices = choices, .n_choices = 2};
    json_t *req = reward_proto_request(99, &rq);
    size_t len;
    char *line = reward_proto_dump(req, &len);
    json_decref(req);
    r = reward_proto_answer(&opt, line, len - 1, NULL, NULL, NULL);
    free(line);
    CHECK(json_integer_value(json_object_get(r, "id")) == 99);
    RewardResult res;
    Err e;
    CHECK(reward_proto_result(r, &res, &e) == 0);
    CHECK(res.accuracy == 1 && res.format == 0 && res.total == 1 && res.mmau_correct == 1);
    json_decref(r);

    r = json_pack("{s:i,s:s}", "id", 1, "error", "line exceeds 16 bytes");
    CHECK(reward_proto_result(r, &res, &e) == -1);
    CHECK_STR(e.msg, "reward service: line exceeds 16 bytes");
    json_decref(r);
    r = json_pack("{s:i,s:{s:f}}", "id", 1, "rewards", "accuracy", 1.0);
    CHECK(reward_proto_result(r, &res, &e) == -1);
    CHECK(strstr(e.msg, "malformed response") != NULL);
    json_decref(r);
    // Rewards are 0 or 1: anything else is not a reward service (tests/fuzz/fuzz_reward_client).
    r = json_pack("{s:i,s:{s:f,s:f},s:f}", "id", 1, "rewards", "accuracy", 5.0, "format", 1.0, "total", 6.0);
    CHECK(reward_proto_result(r, &res, &e) == -1);
    CHECKF(strstr(e.msg, "rewards must be 0 or 1") != NULL, "%s", e.msg);
    json_decref(r);
    // A parse error quoting invalid UTF-8 of the request still carries its (repaired) message
    // (tests/fuzz/fuzz_reward_server: the answer was {"id":null} without "error").
    const char bad[] = "{\"completion\": \"\\u00e\xc7\xa3\"}";
    r = reward_proto_answer(&opt, bad, sizeof bad - 1, NULL, NULL, NULL);
    CHECKF(json_is_string(json_object_get(r, "error")) && strstr(json_string_value(json_object_get(r, "error")), "malformed JSON"),
           "no error in the answer to a line with invalid UTF-8");
    json_decref(r);
}

static void test_host_port(void) {
    char host[64];
    int port;
    Err e;
    CHECK(reward_parse_host_port("127.0.0.1:7700", host, sizeof host, &port, &e) == 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_INT(port, 7700);
    CHECK(reward_parse_host_port("[::1]:0", host, sizeof host, &port, &e) == 0);
    CHECK_STR(host, "::1");
    CHECK_INT(port, 0);
    CHECK(reward_parse_host_port("node-3:9", host, sizeof host, &port, &e) == 0 && port == 9);
    static const char *BAD[] = {"localhost", ":80", "h:", "h:65536", "h:-1", "h:8x", "::1:80", "[::1]80", "[::1"};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        CHECKF(reward_parse_host_port(BAD[i], host, sizeof host, &port, &e) == -1, "\"%s\" accepted", BAD[i]);
        CHECK(strstr(e.msg, BAD[i]) != NULL);
    }
    CHECK(reward_parse_host_port("averyveryverylonghostname:1", host, 8, &port, &e) == -1);
}

int main(void) {
    RUN(test_score_table);
    RUN(test_numeric_equivalence);
    RUN(test_mmau_table);
    RUN(test_mmau_real_items);
    RUN(test_matchers_against_regex_oracle);
    RUN(test_adversarial_inputs_are_fast);
    RUN(test_weights_and_modes);
    RUN(test_extract_and_strip);
    RUN(test_utf8_repair);
    RUN(test_protocol_answers);
    RUN(test_protocol_errors);
    RUN(test_protocol_stats_and_client_side);
    RUN(test_host_port);
    return test_summary("reward");
}
