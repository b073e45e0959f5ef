#include "reward/protocol.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const REWARD_ERR_NAMES[REWARD_N_ERR] = {"parse", "type", "mode", "limit"};

void reward_proto_options_default(RewardProtoOptions *opt) {
    reward_options_default(&opt->scoring);
    opt->max_batch_items = 4096;
}

// A JSON string of s, repaired to valid UTF-8 first (json_string returns NULL on invalid UTF-8).
static json_t *str_value(const char *s) {
    char *ok = reward_utf8_sanitize(s, strlen(s));
    json_t *v = json_string(ok);
    free(ok);
    if (!v) fatal("out of memory encoding a JSON string");
    return v;
}

json_t *reward_proto_error(json_t *id, const char *msg) {
    json_t *r = json_object();
    json_object_set(r, "id", id ? id : json_null());
    // msg may quote the request's bytes (jansson's "near '...'" is the raw token): repaired, so the
    // error is never lost.
    json_object_set_new(r, "error", str_value(msg));
    return r;
}

char *reward_proto_dump(json_t *obj, size_t *len) {
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) fatal("out of memory encoding a JSON response");
    size_t n = strlen(s);
    s = reallocCheck(s, n + 2);
    s[n] = '\n';
    s[n + 1] = 0;
    *len = n + 1;
    return s;
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

// Reads optional string field key of obj into *out (NULL when absent). Returns -1 with a message on a
// wrong type, or when required and absent.
static int field_string(json_t *obj, const char *key, int required, const char **out, Err *e) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v) return required ? err_set(e, "missing \"%s\"", key) : 0;
    if (!json_is_string(v)) return err_set(e, "\"%s\" must be a string, not %s", key, json_kind(v));
    *out = json_string_value(v);
    return 0;
}

// Scores one request object; returns its response (with "id" echoed) or an item error.
static json_t *answer_item(const RewardProtoOptions *opt, json_t *req, const char *where,
                           RewardLineInfo *info) {
    Err e;
    json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
    if (!json_is_object(req)) {
        info->n_errors[REWARD_ERR_TYPE]++;
        err_set(&e, "%s: must be a JSON object, not %s", where, json_kind(req));
        return reward_proto_error(NULL, e.msg);
    }
    const char *completion, *solution, *mode_s, *answer;
    RewardErrKind kind = REWARD_ERR_TYPE;
    RewardOptions scoring = opt->scoring;
    json_t *choices = json_object_get(req, "choices");
    if (field_string(req, "completion", 1, &completion, &e) || field_string(req, "solution", 1, &solution, &e) ||
        field_string(req, "mode", 0, &mode_s, &e) || field_string(req, "answer", 0, &answer, &e))
        goto fail;
    if (json_object_get(req, "items")) {
        err_set(&e, "a batch item cannot hold \"items\"");
        goto fail;
    }
    if (mode_s && reward_mode_parse(mode_s, &scoring.mode) != 0) {
        kind = REWARD_ERR_MODE;
        err_set(&e, "unknown mode \"%.100s\" (expected \"answer\" or \"think\")", mode_s);
        goto fail;
    }
    if (choices && !json_is_array(choices)) {
        err_set(&e, "\"choices\" must be an array of strings, not %s", json_kind(choices));
        goto fail;
    }
    size_t n_choices = choices ? json_array_size(choices) : 0;
    for (size_t i = 0; i < n_choices; i++)
        if (!json_is_string(json_array_get(choices, i))) {
            err_set(&e, "\"choices\"[%zu] must be a string, not %s", i, json_kind(json_array_get(choices, i)));
            goto fail;
        }

    RewardResult r;
    reward_score(&scoring, completion, solution, &r);
    info->n_items++;
    json_t *resp = json_object(), *rewards = json_object();
    json_object_set(resp, "id", id ? id : json_null());
    json_object_set_new(rewards, "accuracy", json_real(r.accuracy));
    json_object_set_new(rewards, "format", json_real(r.format));
    json_object_set_new(resp, "rewards", rewards);
    json_object_set_new(resp, "total", json_real(r.total));
    if (answer) {
        const char **ch = mallocCheck((n_choices + 1) * sizeof *ch);
        for (size_t i = 0; i < n_choices; i++) ch[i] = json_string_value(json_array_get(choices, i));
        char *pred = reward_extract_answer(completion);
        json_object_set_new(resp, "prediction", json_string(pred));
        json_object_set_new(resp, "mmau_correct", json_boolean(mmau_is_correct(pred, answer, ch, (int)n_choices)));
        free(pred);
        free(ch);
    }
    return resp;
fail:
    info->n_errors[kind]++;
    err_prefix(&e, "%s", where[0] ? where : "request");
    return reward_proto_error(id, e.msg);
}

json_t *reward_proto_answer(const RewardProtoOptions *opt, const char *line, size_t len,
                            RewardStatsFn stats, void *stats_ctx, RewardLineInfo *info) {
    RewardLineInfo local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (!req || !json_is_object(req)) {
        char msg[400];
        if (req) snprintf(msg, sizeof msg, "request must be a JSON object, not %s", json_kind(req));
        else snprintf(msg, sizeof msg, "malformed JSON at column %d: %s", jerr.column, jerr.text);
        json_decref(req);
        info->n_errors[REWARD_ERR_PARSE]++;
        return reward_proto_error(NULL, msg);
    }
    json_t *id = json_object_get(req, "id"), *resp;
    json_t *items = json_object_get(req, "items"), *st = json_object_get(req, "stats");
    if (st) {
        info->is_stats = 1;
        json_t *body = json_is_true(st) && stats ? stats(stats_ctx) : NULL;
        if (body) {
            resp = json_object();
            json_object_set(resp, "id", id ? id : json_null());
            json_object_set_new(resp, "stats", body);
        } else {
            info->n_errors[REWARD_ERR_TYPE]++;
            resp = reward_proto_error(id, json_is_true(st) ? "stats are not available here"
                                                           : "\"stats\" must be true");
        }
    } else if (items) {
        size_t n = json_array_size(items);
        if (!json_is_array(items)) {
            info->n_errors[REWARD_ERR_TYPE]++;
            char msg[160];
            snprintf(msg, sizeof msg, "\"items\" must be an array of requests, not %s", json_kind(items));
            resp = reward_proto_error(id, msg);
        } else if (n > (size_t)opt->max_batch_items) {
            info->n_errors[REWARD_ERR_LIMIT]++;
            char msg[160];
            snprintf(msg, sizeof msg, "batch of %zu items exceeds the limit of %d", n, opt->max_batch_items);
            resp = reward_proto_error(id, msg);
        } else {
            json_t *out = json_array();
            for (size_t i = 0; i < n; i++) {
                char where[48];
                snprintf(where, sizeof where, "items[%zu]", i);
                json_array_append_new(out, answer_item(opt, json_array_get(items, i), where, info));
            }
            resp = json_object();
            json_object_set(resp, "id", id ? id : json_null());
            json_object_set_new(resp, "items", out);
        }
    } else {
        resp = answer_item(opt, req, "", info);
    }
    json_decref(req);
    return resp;
}

json_t *reward_proto_request(long long id, const RewardRequest *rq) {
    json_t *r = json_object();
    json_object_set_new(r, "id", json_integer(id));
    json_object_set_new(r, "completion", str_value(rq->completion));
    json_object_set_new(r, "solution", str_value(rq->solution));
    json_object_set_new(r, "mode", json_string(reward_mode_name(rq->mode)));
    if (rq->answer) {
        json_object_set_new(r, "answer", str_value(rq->answer));
        json_t *ch = json_array();
        for (int i = 0; i < rq->n_choices; i++) json_array_append_new(ch, str_value(rq->choices[i]));
        json_object_set_new(r, "choices", ch);
    }
    return r;
}

int reward_proto_result(json_t *resp, RewardResult *out, Err *e) {
    json_t *err = json_object_get(resp, "error");
    if (err) return err_set(e, "reward service: %s", json_is_string(err) ? json_string_value(err) : "error");
    json_t *rewards = json_object_get(resp, "rewards"), *mm = json_object_get(resp, "mmau_correct");
    json_t *acc = json_object_get(rewards, "accuracy"), *fmt = json_object_get(rewards, "format");
    json_t *total = json_object_get(resp, "total");
    if (!json_is_number(acc) || !json_is_number(fmt) || !json_is_number(total) || (mm && !json_is_boolean(mm)))
        return err_set(e, "reward service: malformed response (expected rewards.accuracy, rewards.format, total)");
    out->accuracy = json_number_value(acc);
    out->format = json_number_value(fmt);
    out->total = json_number_value(total);
    out->mmau_correct = mm ? json_is_true(mm) : -1;
    // Both rewards are 0 or 1 (reward.h): anything else is not our reward service, and training on it
    // would be silently wrong.
    if ((out->accuracy != 0 && out->accuracy != 1) || (out->format != 0 && out->format != 1) || !isfinite(out->total))
        return err_set(e, "reward service: malformed response (accuracy %g, format %g, total %g: rewards must be 0 or 1)",
                       out->accuracy, out->format, out->total);
    return 0;
}

int reward_parse_host_port(const char *s, char *host, size_t cap, int *port, Err *e) {
    const char *colon, *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return err_set(e, "address \"%s\": expected [IPv6]:PORT", s);
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon) return err_set(e, "address \"%s\": expected HOST:PORT", s);
        hl = (size_t)(colon - s);
    }
    if (hl == 0) return err_set(e, "address \"%s\": empty host", s);
    if (hl >= cap) return err_set(e, "address \"%s\": host too long", s);
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == 0 || *end || errno || p < 0 || p > 65535)
        return err_set(e, "address \"%s\": port must be an integer in [0, 65535]", s);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}
