// Load test of reward-server on loopback: 64 concurrent clients for a fixed time, each on its own
// connection(s) doing random rounds: pipelined single requests, batches, MMAU-rule requests and bad
// lines (all answered and checked), and disconnects: in the middle of a request line, with answers
// still to come, after reading only some of them, abortively (RST), or after a half-close. Every
// answer is checked field by field against the reward functions run in this process (reward_score,
// reward_extract_answer, mmau_is_correct), not against the protocol code the server runs.
// Checks: no wrong or missing answer, no connection dropped by the server, the server's RSS after the
// run at most RSS_GROWTH_BOUND above the RSS once all 64 clients are connected and warm, its open
// connections back to just ours, a clean exit on SIGTERM. Prints requests/s, p50/p99/max latency
// (send to answer, per line) and the RSS at start, along the run and at the end.
// Usage: test_reward_load REWARD_SERVER [SECONDS (default 10)] [CLIENTS (default 64)]
#include <pthread.h>
#include <sys/socket.h>

#include "reward/reward.h"
#include "server_proc.h"
#include "test.h"
#include "util/rng.h"

// A leak of 64 bytes per request over the ~10^5 requests of even the short CI run is 6.4 MiB; RSS of
// the warm server otherwise moves by well under 1 MiB (glibc keeps freed chunks for reuse).
#define RSS_GROWTH_BOUND_KB (8 * 1024)
#define MAX_PIPELINE 8
#define BATCH_MAX 6

typedef struct {
    int port, index;
    double end;  // stop starting rounds at this time
    Rng rng;
    long long next_id;
    // results
    long lines, items, bad_lines, rounds, disconnects, connects;
    long mismatches, failures;
    char first_problem[512];
    float *lat_ms;  // [n_lat] per answered line
    size_t n_lat, cap_lat;
} Client;

// ---- requests and what their answers must be --------------------------------------------------

static const char *const PIECES[] = {"<answer>", "</answer>", "<think>", "</think>", "dog", "Dog", " dog ",
                                     "cat", "2", "2.0", " ", "\n", "\xe3\x80\x80", "\xc3\xa9", "barking", "x"};
static const char *const SOLUTIONS[] = {"<answer>dog</answer>", "dog", "<answer>2</answer>", "cat", " Dog "};
static const char *const CHOICES[] = {"dog", "cat", "dog barking", "2"};
enum { N_PIECES = sizeof PIECES / sizeof *PIECES, N_SOL = sizeof SOLUTIONS / sizeof *SOLUTIONS, N_CHOICES = 4 };

static size_t pick(Client *c, size_t n) { return (size_t)rng_below(&c->rng, n); }

// A random scoring item: its JSON object (id set) and the expected response object.
static void make_item(Client *c, json_int_t id, json_t **req, json_t **want) {
    char completion[256] = "";
    for (size_t k = 0, n = pick(c, 9); k < n; k++) strcat(completion, PIECES[pick(c, N_PIECES)]);
    const char *solution = SOLUTIONS[pick(c, N_SOL)];
    RewardOptions opt;
    reward_options_default(&opt);
    opt.mode = pick(c, 2) ? REWARD_MODE_ANSWER : REWARD_MODE_THINK;
    RewardResult r;
    reward_score(&opt, completion, solution, &r);
    *req = json_pack("{s:I,s:s,s:s,s:s}", "id", id, "completion", completion, "solution", solution, "mode",
                     reward_mode_name(opt.mode));
    *want = json_pack("{s:I,s:{s:f,s:f},s:f}", "id", id, "rewards", "accuracy", r.accuracy, "format", r.format,
                      "total", r.total);
    if (pick(c, 3) == 0) {  // the MMAU evaluation rule
        const char *answer = CHOICES[pick(c, N_CHOICES)];
        json_object_set_new(*req, "answer", json_string(answer));
        json_object_set_new(*req, "choices", json_pack("[s,s,s,s]", CHOICES[0], CHOICES[1], CHOICES[2], CHOICES[3]));
        char *pred = reward_extract_answer(completion);
        json_object_set_new(*want, "prediction", json_string(pred));
        json_object_set_new(*want, "mmau_correct", json_boolean(mmau_is_correct(pred, answer, CHOICES, N_CHOICES)));
        free(pred);
    }
}

// One request line (malloc'd, with '\n') and its expected answer; *n_items counts scored items.
static char *make_line(Client *c, json_t **want, int *n_items) {
    json_int_t id = c->next_id++;
    json_t *req;
    *n_items = 0;
    switch (pick(c, 8)) {
    case 0: {  // a batch
        int n = 1 + (int)pick(c, BATCH_MAX);
        json_t *items = json_array(), *answers = json_array();
        for (int i = 0; i < n; i++) {
            json_t *it, *w;
            make_item(c, i, &it, &w);
            json_array_append_new(items, it);
            json_array_append_new(answers, w);
        }
        req = json_pack("{s:I,s:o}", "id", id, "items", items);
        *want = json_pack("{s:I,s:o}", "id", id, "items", answers);
        *n_items = n;
        break;
    }
    case 1: {  // bad lines: the error names the request's id when it could be read
        static const char *const BAD[] = {"{\"id\": 1, \"completion\": ", "[1, 2]", "\"text\"", "{\"solution\": \"x\"}"};
        int k = (int)pick(c, 5);
        if (k < 4) {
            *want = json_pack("{s:n}", "id");
            char *line = mallocCheck(strlen(BAD[k]) + 2);
            sprintf(line, "%s\n", BAD[k]);
            return line;
        }
        req = json_pack("{s:I,s:i,s:s}", "id", id, "completion", 5, "solution", "dog");
        *want = json_pack("{s:I}", "id", id);
        break;
    }
    default:
        make_item(c, id, &req, want);
        *n_items = 1;
    }
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    size_t n = strlen(s);
    s = reallocCheck(s, n + 2);
    memcpy(s + n, "\n", 2);
    return s;
}

static void problem(Client *c, long *counter, const char *fmt, const char *a, const char *b) {
    (*counter)++;
    if (!c->first_problem[0]) snprintf(c->first_problem, sizeof c->first_problem, fmt, a, b);
}

// Error answers carry "error" (any text) and the id; everything else must equal want exactly.
static void check_answer(Client *c, const char *line, json_t *want) {
    json_t *got = json_loads(line, 0, NULL);
    int ok;
    if (json_object_get(want, "rewards") || json_object_get(want, "items")) {
        ok = got && json_equal(got, want);
    } else {
        json_t *id = json_object_get(got, "id");
        ok = json_is_string(json_object_get(got, "error")) && id && json_equal(id, json_object_get(want, "id"));
    }
    if (!ok) {
        char *w = json_dumps(want, JSON_COMPACT);
        problem(c, &c->mismatches, "answer %.200s, expected %.200s", line, w);
        free(w);
    }
    json_decref(got);
}

// ---- one client --------------------------------------------------------------------------------

static void client_close(Client *c, int fd) {
    if (pick(c, 4) == 0) {  // abortive close: the server sees a reset
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
    c->disconnects++;
}

// One round on fd: sends k lines at once, then reads `read` answers (all of them unless the round
// disconnects early). Returns 0 to keep the connection, 1 when it was closed.
static int client_round(Client *c, int fd, LineReader *lr) {
    enum { ROUND_ALL, ROUND_CUT_LINE, ROUND_UNREAD, ROUND_HALF_CLOSE } kind;
    size_t r = pick(c, 20);
    kind = r < 13 ? ROUND_ALL : r < 16 ? ROUND_CUT_LINE : r < 18 ? ROUND_UNREAD : ROUND_HALF_CLOSE;
    int k = 1 + (int)pick(c, MAX_PIPELINE);
    json_t *want[MAX_PIPELINE];
    int items[MAX_PIPELINE];
    size_t len = 0, cap = 1 << 14;
    char *buf = mallocCheck(cap);
    for (int i = 0; i < k; i++) {
        char *line = make_line(c, &want[i], &items[i]);
        size_t n = strlen(line);
        if (len + n + 1 > cap) buf = reallocCheck(buf, cap = 2 * (len + n + 1));
        memcpy(buf + len, line, n);
        len += n;
        free(line);
    }
    if (kind == ROUND_CUT_LINE) {  // a request cut off by the disconnect (never answered)
        json_t *w;
        int ni;
        char *line = make_line(c, &w, &ni);
        size_t n = 1 + pick(c, strlen(line) - 1);  // not the '\n'
        if (len + n > cap) buf = reallocCheck(buf, cap = 2 * (len + n));
        memcpy(buf + len, line, n);
        len += n;
        free(line);
        json_decref(w);
    }
    double t0 = sp_now();
    int closed = 0, n_read = k;
    if (send_all(fd, buf, len) != 0) {
        problem(c, &c->failures, "send failed: %s%s", strerror(errno), "");
        n_read = 0;
    }
    if (kind == ROUND_CUT_LINE) n_read = 0;
    if (kind == ROUND_UNREAD) n_read = (int)pick(c, (size_t)k);
    if (kind == ROUND_HALF_CLOSE) shutdown(fd, SHUT_WR);
    for (int i = 0; i < n_read; i++) {
        char *line = lr_line(lr, 20.0, NULL);
        if (!line) {
            problem(c, &c->failures, "no answer to a request (%s)%s", errno ? strerror(errno) : "EOF", "");
            break;
        }
        double ms = (sp_now() - t0) * 1e3;
        if (c->n_lat == c->cap_lat) c->lat_ms = reallocCheck(c->lat_ms, (c->cap_lat = 2 * c->cap_lat + 1024) * sizeof(float));
        c->lat_ms[c->n_lat++] = (float)ms;
        check_answer(c, line, want[i]);
        c->lines++;
        c->items += items[i];
        c->bad_lines += items[i] == 0;
        free(line);
    }
    if (kind == ROUND_HALF_CLOSE && n_read == k) {  // everything answered, then the server closes
        int eof = 0;
        char *extra = lr_line(lr, 20.0, &eof);
        if (extra || !eof) problem(c, &c->failures, "half-closed connection: %s%s", extra ? "extra line" : "no EOF", "");
        free(extra);
    }
    for (int i = 0; i < k; i++) json_decref(want[i]);
    free(buf);
    c->rounds++;
    if (kind != ROUND_ALL || pick(c, 4) == 0) {
        client_close(c, fd);
        closed = 1;
    }
    return closed;
}

static void *client_main(void *arg) {
    Client *c = arg;
    while (sp_now() < c->end) {
        int fd = tcp_connect(c->port, 0);
        if (fd < 0) {
            problem(c, &c->failures, "connect failed: %s%s", strerror(errno), "");
            sp_sleep(0.05);
            continue;
        }
        c->connects++;
        LineReader lr;
        lr_init(&lr, fd);
        int closed = 0;
        while (!closed && sp_now() < c->end) closed = client_round(c, fd, &lr);
        if (!closed) close(fd);
        lr_free(&lr);
    }
    return NULL;
}

// ---- the run -----------------------------------------------------------------------------------

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s REWARD_SERVER [SECONDS] [CLIENTS]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 10;
    int n_clients = argc > 3 ? atoi(argv[3]) : 64;
    test_case_ = "reward_load";
    ServerProc sp;
    const char *args[] = {"--max-batch-items", "16", NULL};
    if (!CHECK(server_start(&sp, argv[1], 0, args) == 0)) return test_summary("test_reward_load");

    Client *cl = callocCheck((size_t)n_clients, sizeof *cl);
    pthread_t *th = mallocCheck((size_t)n_clients * sizeof *th);
    double t_start = sp_now(), warm = seconds * 0.15 < 2 ? seconds * 0.15 : 2;
    for (int i = 0; i < n_clients; i++) {
        cl[i].port = sp.port;
        cl[i].index = i;
        cl[i].end = t_start + seconds;
        rng_init(&cl[i].rng, 20261207, (uint64_t)i);
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0) fatal("pthread_create failed");
    }
    // RSS once every client is connected and the server's buffers and allocator are warm.
    sp_sleep(warm);
    long rss0 = rss_kb(sp.pid), rss_max = rss0;
    printf("reward-server RSS at start (after %.1f s warm-up, %d clients): %ld KiB\n", warm, n_clients, rss0);
    double report_every = seconds / 5;
    for (double next = t_start + warm + report_every; sp_now() < t_start + seconds; next += report_every) {
        while (sp_now() < next && sp_now() < t_start + seconds) sp_sleep(0.05);
        long kb = rss_kb(sp.pid);
        if (kb > rss_max) rss_max = kb;
        printf("  t=%5.1f s  RSS %ld KiB\n", sp_now() - t_start, kb);
    }
    for (int i = 0; i < n_clients; i++) pthread_join(th[i], NULL);
    double elapsed = sp_now() - t_start;

    // Every client has closed: the server must be back to the one connection of the stats request.
    long long conns = -1;
    for (double deadline = sp_now() + 5; sp_now() < deadline && conns != 1; sp_sleep(0.05))
        conns = stats_int(sp.port, "connections");
    CHECKF(conns == 1, "server still has %lld connections after every client closed", conns);
    json_t *st = stats_fetch(sp.port);
    long rss1 = rss_kb(sp.pid);

    long lines = 0, items = 0, bad = 0, rounds = 0, disc = 0, connects = 0, mism = 0, fails = 0;
    size_t n_lat = 0;
    for (int i = 0; i < n_clients; i++) {
        Client *c = &cl[i];
        lines += c->lines, items += c->items, bad += c->bad_lines, rounds += c->rounds;
        disc += c->disconnects, connects += c->connects, mism += c->mismatches, fails += c->failures;
        n_lat += c->n_lat;
        if (c->first_problem[0]) fprintf(stderr, "client %d: %s\n", i, c->first_problem);
    }
    float *lat = mallocCheck((n_lat + 1) * sizeof *lat);
    size_t at = 0;
    for (int i = 0; i < n_clients; i++) {
        if (cl[i].n_lat) memcpy(lat + at, cl[i].lat_ms, cl[i].n_lat * sizeof *lat);
        at += cl[i].n_lat;
        free(cl[i].lat_ms);
    }
    qsort(lat, n_lat, sizeof *lat, cmp_float);
    double p50 = n_lat ? lat[n_lat / 2] : NAN, p99 = n_lat ? lat[(size_t)(0.99 * (double)(n_lat - 1))] : NAN;
    double lmax = n_lat ? lat[n_lat - 1] : NAN;
    json_t *slat = json_object_get(st, "latency_ms");
    printf("%d clients, %.1f s: %ld lines answered and checked (%ld scored items, %ld error answers), "
           "%.0f lines/s; %ld rounds, %ld connections, %ld client disconnects (cut lines, unread answers, "
           "resets, half-closes)\n",
           n_clients, elapsed, lines, items, bad, (double)lines / elapsed, rounds, connects, disc);
    printf("latency per line (send -> answer, pipelined up to %d): p50 %.3f ms, p99 %.3f ms, max %.3f ms; "
           "server handling p99 %.4f ms\n",
           MAX_PIPELINE, p50, p99, lmax, json_number_value(json_object_get(slat, "p99")));
    printf("reward-server RSS: start %ld KiB, max %ld KiB, end %ld KiB (growth %+ld KiB, bound %d KiB)\n", rss0,
           rss_max, rss1, rss1 - rss0, RSS_GROWTH_BOUND_KB);

    CHECKF(mism == 0, "%ld answers differ from the reward functions", mism);
    CHECKF(fails == 0, "%ld failed requests or connections", fails);
    CHECKF(lines > 20L * n_clients * (seconds >= 1), "only %ld lines answered", lines);
    CHECKF(disc > n_clients, "only %ld disconnects", disc);
#ifdef __SANITIZE_ADDRESS__
    // Under ASan freed blocks wait in its quarantine (256 MiB), so RSS climbs without a leak; there a leak
    // fails the server's clean SIGTERM exit instead (LeakSanitizer runs at exit).
    CHECKF(rss0 > 0 && rss1 > 0, "no RSS reading (%ld, %ld KiB)", rss0, rss1);
#else
    CHECKF(rss0 > 0 && rss1 > 0 && rss1 - rss0 <= RSS_GROWTH_BOUND_KB, "RSS grew from %ld to %ld KiB", rss0, rss1);
#endif
    CHECKF(json_integer_value(json_object_get(st, "connections_dropped")) == 0, "the server dropped %lld clients",
           (long long)json_integer_value(json_object_get(st, "connections_dropped")));
    CHECKF(isfinite(p99), "no latency samples");
    json_decref(st);
    CHECK_INT(server_stop(&sp, SIGTERM, 10), 0);
    free(lat);
    free(cl);
    free(th);
    return test_summary("test_reward_load");
}
