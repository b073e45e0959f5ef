// Loopback tests of reward-server (started as a child on an OS-chosen port) driven with raw sockets,
// and of the reward-score filter. Usage: test_reward_server REWARD_SERVER REWARD_SCORE.
// Covers: 16 concurrent pipelining clients (every request answered exactly once, in order, correctly),
// malformed / wrong-type / unknown-mode / oversized lines, blank and CRLF lines, clients vanishing
// mid-line, a client that never reads (dropped, others unaffected), stats, and SIGTERM (stops
// accepting, answers what it has received, exits 0).
#include <pthread.h>

#include "reward/reward.h"
#include "server_proc.h"
#include "test.h"

static const char *server_bin, *score_bin;
static ServerProc srv;  // shared by the tests that do not stop it

#define N_CLIENTS 16
#define N_REQUESTS 200

// Request k of client c: accuracy 1 iff k % 3 == 0, format 1 iff k % 2 == 0; every 10th is a batch of
// the same item twice plus a think-mode item. Writes the line and its exact expected response.
static void make_request(int c, int k, char *line, size_t cap, char *expect, size_t ecap) {
    int id = c * 100000 + k;
    char completion[64], solution[48], item[200], resp[160];
    snprintf(completion, sizeof completion, k % 2 == 0 ? "<answer>ans %d</answer>" : "So: <answer>ans %d</answer>", k);
    snprintf(solution, sizeof solution, "<answer>ans %d</answer>", k % 3 == 0 ? k : k + 1);
    int acc = k % 3 == 0, fmt = k % 2 == 0;
    snprintf(item, sizeof item, "{\"id\":%d,\"completion\":\"%s\",\"solution\":\"%s\"}", id, completion, solution);
    snprintf(resp, sizeof resp, "{\"id\":%d,\"rewards\":{\"accuracy\":%d.0,\"format\":%d.0},\"total\":%d.0}", id, acc,
             fmt, acc + fmt);
    if (k % 10 != 5) {
        snprintf(line, cap, "%s\n", item);
        snprintf(expect, ecap, "%s", resp);
        return;
    }
    snprintf(line, cap,
             "{\"id\":\"b%d\",\"items\":[%s,%s,{\"completion\":\"<think>x</think> <answer>y</answer>\","
             "\"solution\":\"y\",\"mode\":\"think\"}]}\n",
             id, item, item);
    snprintf(expect, ecap,
             "{\"id\":\"b%d\",\"items\":[%s,%s,{\"id\":null,\"rewards\":{\"accuracy\":1.0,\"format\":1.0},\"total\":2.0}]}",
             id, resp, resp);
}

typedef struct {
    int c;
    int answered, correct;
} ClientRun;

static void *client_thread(void *arg) {
    ClientRun *run = arg;
    int fd = tcp_connect(srv.port, 0);
    if (fd < 0) return NULL;
    char (*expect)[512] = mallocCheck(N_REQUESTS * sizeof *expect);
    char *all = mallocCheck(N_REQUESTS * 1024);
    size_t len = 0;
    for (int k = 0; k < N_REQUESTS; k++) {
        make_request(run->c, k, all + len, 1024, expect[k], sizeof expect[k]);
        len += strlen(all + len);
    }
    // Send in uneven pieces so lines straddle reads on the server side.
    for (size_t off = 0; off < len;) {
        size_t piece = 1 + (off * 7919 + (size_t)run->c) % 3000;
        if (piece > len - off) piece = len - off;
        if (send_all(fd, all + off, piece) != 0) break;
        off += piece;
    }
    LineReader lr;
    lr_init(&lr, fd);
    for (int k = 0; k < N_REQUESTS; k++) {
        char *line = lr_line(&lr, 10.0, NULL);
        if (!line) break;
        run->answered++;
        run->correct += strcmp(line, expect[k]) == 0;
        free(line);
    }
    // Nothing more: each request was answered exactly once.
    shutdown(fd, SHUT_WR);
    int eof = 0;
    char *extra = lr_line(&lr, 5.0, &eof);
    if (extra || !eof) run->answered = -1;
    free(extra);
    lr_free(&lr);
    close(fd);
    free(expect);
    free(all);
    return NULL;
}

static void test_concurrent_clients(void) {
    long long items0 = stats_int(srv.port, "items");
    pthread_t th[N_CLIENTS];
    ClientRun runs[N_CLIENTS];
    double t0 = sp_now();
    for (int c = 0; c < N_CLIENTS; c++) {
        runs[c] = (ClientRun){.c = c};
        pthread_create(&th[c], NULL, client_thread, &runs[c]);
    }
    for (int c = 0; c < N_CLIENTS; c++) {
        pthread_join(th[c], NULL);
        CHECKF(runs[c].answered == N_REQUESTS && runs[c].correct == N_REQUESTS,
               "client %d: %d answered, %d correct of %d", c, runs[c].answered, runs[c].correct, N_REQUESTS);
    }
    fprintf(stderr, "     %d clients x %d requests in %.2f s\n", N_CLIENTS, N_REQUESTS, sp_now() - t0);
    // Batches (every 10th request) hold 3 items.
    CHECK_INT(stats_int(srv.port, "items") - items0, N_CLIENTS * (N_REQUESTS + 2 * (N_REQUESTS / 10)));
}

// Sends text on a fresh connection and checks the response lines in order (then no more).
static void exchange(const char *text, const char *const *expect, int n) {
    int fd = tcp_connect(srv.port, 0);
    CHECK(fd >= 0);
    CHECK(send_str(fd, text) == 0);
    shutdown(fd, SHUT_WR);  // half-close: the server still answers what it received
    LineReader lr;
    lr_init(&lr, fd);
    for (int i = 0; i < n; i++) {
        char *line = lr_line(&lr, 5.0, NULL);
        CHECKF(line && strstr(line, expect[i]) != NULL, "response %d: \"%s\", expected to contain \"%s\"", i,
               line ? line : "(none)", expect[i]);
        free(line);
    }
    int eof = 0;
    char *extra = lr_line(&lr, 5.0, &eof);
    CHECKF(!extra && eof, "unexpected extra response \"%s\"", extra ? extra : "(timeout)");
    free(extra);
    lr_free(&lr);
    close(fd);
}

static void test_bad_lines(void) {
    long long lines0 = stats_int(srv.port, "lines");
    json_t *st0 = stats_fetch(srv.port);
    const char *text =
        "{\"id\": 1, \"completion\": \"a\", \"solution\": \"a\"\n"             // malformed JSON
        "\n\r\n"                                                              // blank lines: ignored
        "{\"id\": 2, \"completion\": [\"a\"], \"solution\": \"a\"}\n"          // wrong type
        "{\"id\": 3, \"completion\": \"a\", \"solution\": \"a\", \"mode\": \"chat\"}\n"  // unknown mode
        "\"just a string\"\n"                                                  // not an object
        "{\"id\": 4, \"completion\": \"<answer>a</answer>\", \"solution\": \"a\"}\r\n"  // CRLF
        "{\"id\": 5, \"items\": 7}\n";
    const char *expect[] = {"{\"id\":null,\"error\":\"malformed JSON at column 44",
                            "{\"id\":2,\"error\":\"request: \\\"completion\\\" must be a string, not an array\"}",
                            "{\"id\":3,\"error\":\"request: unknown mode \\\"chat\\\"",
                            "{\"id\":null,\"error\":\"request must be a JSON object, not a string\"}",
                            "{\"id\":4,\"rewards\":{\"accuracy\":1.0,\"format\":1.0},\"total\":2.0}",
                            "{\"id\":5,\"error\":\"\\\"items\\\" must be an array"};
    exchange(text, expect, 6);
    json_t *st1 = stats_fetch(srv.port);
    json_t *k0 = json_object_get(st0, "errors_by_kind"), *k1 = json_object_get(st1, "errors_by_kind");
    CHECK_INT(json_integer_value(json_object_get(k1, "parse")) - json_integer_value(json_object_get(k0, "parse")), 2);
    CHECK_INT(json_integer_value(json_object_get(k1, "type")) - json_integer_value(json_object_get(k0, "type")), 2);
    CHECK_INT(json_integer_value(json_object_get(k1, "mode")) - json_integer_value(json_object_get(k0, "mode")), 1);
    CHECK_INT(stats_int(srv.port, "lines") - lines0, 6 + 3);  // + the stats requests: lines0, st0, st1
    json_decref(st0);
    json_decref(st1);
}

static void test_oversized_line(void) {
    // The server runs with --max-line-bytes 200000: a 300000-byte line, sent in pieces, gets one error
    // and is skipped up to its newline; the request after it (same write) is answered.
    size_t big = 300000;
    char *text = mallocCheck(big + 200);
    memset(text, 'x', big);
    strcpy(text + big, "\n{\"id\": 9, \"completion\": \"<answer>b</answer>\", \"solution\": \"a\"}\n");
    long long limit0 = -1;
    json_t *st = stats_fetch(srv.port);
    limit0 = json_integer_value(json_object_get(json_object_get(st, "errors_by_kind"), "limit"));
    json_decref(st);
    const char *expect[] = {"{\"id\":null,\"error\":\"line exceeds 200000 bytes\"}",
                            "{\"id\":9,\"rewards\":{\"accuracy\":0.0,\"format\":1.0},\"total\":1.0}"};
    exchange(text, expect, 2);
    // An oversized line that is just under the limit is fine; exactly one byte over is not.
    memset(text, ' ', 200000);
    memcpy(text, "{\"id\":10,\"completion\":\"a\",\"solution\":\"a\"}", 41);
    strcpy(text + 200000, "\n");
    const char *expect_ok[] = {"{\"id\":10,\"rewards\":{\"accuracy\":1.0,\"format\":0.0},\"total\":1.0}"};
    exchange(text, expect_ok, 1);
    memset(text, ' ', 200001);
    memcpy(text, "{\"id\":11,\"completion\":\"a\",\"solution\":\"a\"}", 41);
    strcpy(text + 200001, "\n");
    const char *expect_big[] = {"line exceeds 200000 bytes"};
    exchange(text, expect_big, 1);
    st = stats_fetch(srv.port);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(st, "errors_by_kind"), "limit")) - limit0, 2);
    json_decref(st);
    free(text);
}

static void test_disconnects(void) {
    long long items0 = stats_int(srv.port, "items");
    // Vanish mid-line, vanish after complete requests without reading, reset mid-line.
    int fd = tcp_connect(srv.port, 0);
    CHECK(send_str(fd, "{\"id\": 1, \"completion\": \"<answer>a</answ") == 0);
    close(fd);
    fd = tcp_connect(srv.port, 0);
    for (int i = 0; i < 50; i++) send_str(fd, "{\"id\": 2, \"completion\": \"a\", \"solution\": \"a\"}\n");
    close(fd);
    fd = tcp_connect(srv.port, 0);
    send_str(fd, "{\"id\": 3, \"compl");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};  // close with RST
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    // The server is unaffected: a new client is answered, and the dead connections are gone.
    const char *expect[] = {"{\"id\":4,\"rewards\":{\"accuracy\":1.0,\"format\":1.0},\"total\":2.0}"};
    exchange("{\"id\": 4, \"completion\": \"<answer>a</answer>\", \"solution\": \"a\"}\n", expect, 1);
    long long conns = -1;
    for (int i = 0; i < 200 && (conns = stats_int(srv.port, "connections")) != 1; i++) sp_sleep(0.01);
    CHECK_INT(conns, 1);  // only the stats connection itself
    // The partial lines were never scored. Of the 50 complete ones, those read before the client's
    // close turned into a reset were; id 4 was.
    long long items = stats_int(srv.port, "items") - items0;
    CHECKF(items >= 1 && items <= 51, "%lld items scored", items);
}

static void test_slow_reader_dropped(void) {
    // A client that sends requests with 100 kB answers and never reads is dropped once its unsent
    // output passes --max-queued-bytes (262144); meanwhile another client is served promptly.
    long long dropped0 = stats_int(srv.port, "connections_dropped");
    size_t n = 100000;
    char *line = mallocCheck(n + 200);
    int k = snprintf(line, n + 200, "{\"id\":1,\"solution\":\"a\",\"answer\":\"a\",\"completion\":\"");
    memset(line + k, 'z', n);
    strcpy(line + k + n, "\"}\n");
    int slow = tcp_connect(srv.port, 4096);
    CHECK(slow >= 0);
    int sent = 0;
    double t0 = sp_now();
    for (int i = 0; i < 100 && sp_now() - t0 < 10; i++) {
        if (send_all(slow, line, strlen(line)) != 0) break;  // fails once the server drops us
        sent++;
        if (i % 10 == 9) {
            double t1 = sp_now();
            const char *expect[] = {"\"total\":2.0"};
            exchange("{\"id\":5,\"completion\":\"<answer>a</answer>\",\"solution\":\"a\"}\n", expect, 1);
            CHECKF(sp_now() - t1 < 2.0, "other client waited %.2f s", sp_now() - t1);
        }
    }
    long long dropped = dropped0;
    for (int i = 0; i < 500 && dropped == dropped0; i++) {
        dropped = stats_int(srv.port, "connections_dropped");
        if (dropped == dropped0) sp_sleep(0.01);
    }
    CHECKF(dropped == dropped0 + 1, "dropped %lld -> %lld after %d requests", dropped0, dropped, sent);
    close(slow);
    free(line);
}

static void test_stats(void) {
    json_t *st = stats_fetch(srv.port);
    CHECK(st != NULL);
    json_t *lat = json_object_get(st, "latency_ms");
    double p50 = json_real_value(json_object_get(lat, "p50")), p90 = json_real_value(json_object_get(lat, "p90"));
    double p99 = json_real_value(json_object_get(lat, "p99")), mx = json_real_value(json_object_get(lat, "max"));
    CHECKF(p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= mx, "p50 %g p90 %g p99 %g max %g", p50, p90, p99, mx);
    CHECK(json_integer_value(json_object_get(lat, "samples")) > 0);
    CHECK(json_integer_value(json_object_get(st, "errors")) > 0);
    CHECK(json_integer_value(json_object_get(st, "connections_total")) > N_CLIENTS);
    CHECK(json_integer_value(json_object_get(st, "stats_requests")) > 0);
    json_decref(st);
    // A stats request with a wrong value is an error with the id.
    const char *expect[] = {"{\"id\":\"s\",\"error\":\"\\\"stats\\\" must be true\"}"};
    exchange("{\"id\":\"s\",\"stats\":\"yes\"}\n", expect, 1);
}

static void test_sigterm_graceful(void) {
    ServerProc s2;
    const char *args[] = {"--max-line-bytes", "200000", NULL};
    CHECK(server_start(&s2, server_bin, 0, args) == 0);
    // Client A: 60 requests with 100 kB answers, not read yet (more than the kernel buffers hold, so
    // they queue in the server).
    size_t n = 100000;
    char *line = mallocCheck(n + 200);
    int k = snprintf(line, n + 200, "{\"id\":7,\"solution\":\"a\",\"answer\":\"a\",\"completion\":\"");
    memset(line + k, 'q', n);
    strcpy(line + k + n, "\"}\n");
    int a = tcp_connect(s2.port, 4096);
    for (int i = 0; i < 60; i++) CHECK(send_all(a, line, strlen(line)) == 0);
    long long items = 0;
    for (int i = 0; i < 500 && (items = stats_int(s2.port, "items")) < 60; i++) sp_sleep(0.01);
    CHECK_INT(items, 60);
    // Client B: connected and served once, then sends a request immediately before the signal.
    int b = tcp_connect(s2.port, 0);
    LineReader lrb;
    lr_init(&lrb, b);
    send_str(b, "{\"id\":1,\"completion\":\"a\",\"solution\":\"a\"}\n");
    char *r = lr_line(&lrb, 5.0, NULL);
    CHECK(r && strstr(r, "\"id\":1,"));
    free(r);
    send_str(b, "{\"id\":2,\"completion\":\"a\",\"solution\":\"b\"}\n{\"id\":3,\"comp");
    kill(s2.pid, SIGTERM);
    // No new connections once stopping (A still has unread answers, so the server is alive).
    sp_sleep(0.2);
    int c = tcp_connect(s2.port, 0);
    CHECK(c < 0);
    if (c >= 0) close(c);
    CHECK(server_wait(&s2, 0.01) == -1);
    r = lr_line(&lrb, 5.0, NULL);
    CHECK(r && strcmp(r, "{\"id\":2,\"rewards\":{\"accuracy\":0.0,\"format\":0.0},\"total\":0.0}") == 0);
    free(r);
    int eof = 0;
    r = lr_line(&lrb, 5.0, &eof);  // the partial line is not answered; the server closes
    CHECK(!r && eof);
    free(r);
    // A reads all 60 answers, then EOF; then the server exits 0.
    LineReader lra;
    lr_init(&lra, a);
    int got = 0;
    for (int i = 0; i < 60; i++) {
        r = lr_line(&lra, 5.0, NULL);
        got += r && strstr(r, "\"mmau_correct\":false") && strlen(r) > n;
        free(r);
    }
    CHECK_INT(got, 60);
    r = lr_line(&lra, 5.0, &eof);
    CHECK(!r && eof);
    free(r);
    CHECK_INT(server_wait(&s2, 5.0), 0);
    lr_free(&lra);
    lr_free(&lrb);
    close(a);
    close(b);
    free(line);
}

static void test_drain_timeout(void) {
    // A client that never reads cannot hold the shutdown beyond --drain-timeout.
    ServerProc s3;
    const char *args[] = {"--drain-timeout", "0.3", NULL};
    CHECK(server_start(&s3, server_bin, 0, args) == 0);
    int a = tcp_connect(s3.port, 4096);
    char *line = mallocCheck(20000 + 200);
    int k = snprintf(line, 20200, "{\"id\":7,\"solution\":\"a\",\"answer\":\"a\",\"completion\":\"");
    memset(line + k, 'q', 20000);
    strcpy(line + k + 20000, "\"}\n");
    for (int i = 0; i < 300; i++) send_all(a, line, strlen(line));  // ~6 MB of answers, never read
    double t0 = sp_now();
    CHECK_INT(server_stop(&s3, SIGTERM, 5.0), 0);
    CHECKF(sp_now() - t0 < 3.0, "stop took %.2f s", sp_now() - t0);
    close(a);
    free(line);
}

static void test_max_connections(void) {
    ServerProc s;
    const char *args[] = {"--max-connections", "2", NULL};
    CHECK(server_start(&s, server_bin, 0, args) == 0);
    int a = tcp_connect(s.port, 0), b = tcp_connect(s.port, 0), c = tcp_connect(s.port, 0);
    LineReader lr;
    lr_init(&lr, c);
    int eof = 0;
    char *line = lr_line(&lr, 5.0, NULL);
    CHECK(line && strcmp(line, "{\"id\":null,\"error\":\"too many connections (limit 2)\",\"retry\":true}") == 0);
    free(line);
    line = lr_line(&lr, 5.0, &eof);
    CHECK(!line && eof);
    free(line);
    lr_free(&lr);
    close(c);
    // The admitted ones are served; once one leaves, a newcomer is admitted.
    LineReader la;
    lr_init(&la, a);
    send_str(a, "{\"id\":1,\"completion\":\"a\",\"solution\":\"a\"}\n");
    line = lr_line(&la, 5.0, NULL);
    CHECK(line && strstr(line, "\"total\":1.0"));
    free(line);
    lr_free(&la);
    close(b);
    long long conns = -1;
    for (int i = 0; i < 200 && (conns = stats_int(s.port, "connections")) != 2; i++) sp_sleep(0.01);
    CHECK_INT(conns, 2);  // a and the stats connection
    close(a);
    CHECK_INT(server_stop(&s, SIGTERM, 5.0), 0);
}

static void test_bad_flags(void) {
    static const char *const BAD[][3] = {{"--max-line-bytes", "0", NULL}, {"--listen", "nowhere", NULL},
                                         {"--accuracy-weight", "-1", NULL}, {"--bogus", NULL, NULL},
                                         {"--max-connections", "x", NULL}};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        ServerProc s;
        CHECKF(server_start(&s, server_bin, 0, BAD[i]) == -1, "flag %s accepted", BAD[i][0]);
    }
}

// The run config's reward.* keys reach the server; flags still override the address.
static void test_config_file(void) {
    const char *cfg = TMP_PATH("reward_server_cfg.json");
    FILE *f = fopenCheck(cfg, "w");
    fputs("{\"reward\": {\"format_weight\": 0.5, \"numeric_equivalence\": true}}\n", f);
    fcloseCheck(f);
    const char *args[] = {"--config", cfg, NULL};
    ServerProc s;
    if (!CHECK(server_start(&s, server_bin, 0, args) == 0)) return;
    int fd = tcp_connect(s.port, 0);
    CHECK(fd >= 0);
    send_str(fd, "{\"id\": 7, \"completion\": \"<answer>2.0</answer>\", \"solution\": \"<answer>2</answer>\"}\n");
    LineReader lr;
    lr_init(&lr, fd);
    int eof = 0;
    char *line = lr_line(&lr, 5.0, &eof);
    json_t *j = line ? json_loads(line, 0, NULL) : NULL;
    CHECKF(j && json_real_value(json_object_get(j, "total")) == 1.5, "response: %s", line ? line : "(none)");
    json_decref(j);
    free(line);
    lr_free(&lr);
    close(fd);
    CHECK_INT(server_stop(&s, SIGTERM, 5.0), 0);
    const char *bad[] = {"--set", "reward.bogus=1", NULL};
    CHECK(server_start(&s, server_bin, 0, bad) == -1);
}

static char *run_capture(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char *out = mallocCheck(1 << 16);
    size_t n = fread(out, 1, (1 << 16) - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) out[0] = '!';
    return out;
}

static void test_reward_score_filter(void) {
    const char *in = TMP_PATH("reward_score_in.jsonl");
    FILE *f = fopenCheck(in, "w");
    fputs("{\"id\":1,\"completion\":\"<answer>2.0</answer>\",\"solution\":\"2\"}\n", f);
    fputs("{\"id\":2,\"items\":[{\"completion\":\"<think>a</think><answer>b</answer>\",\"solution\":\"b\",\"mode\":\"think\"}]}\n", f);
    fputs("not json\n", f);
    fprintf(f, "{\"id\":3,\"completion\":\"%0200d\",\"solution\":\"a\"}\n", 0);
    fputs("{\"id\":4,\"completion\":\"a\",\"solution\":\"a\"}", f);  // no final newline
    fcloseCheck(f);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' --numeric-equivalence --format-weight 0.5 --max-line-bytes 120 < '%s'", score_bin, in);
    char *out = run_capture(cmd);
    CHECK_STR(out,
              "{\"id\":1,\"rewards\":{\"accuracy\":1.0,\"format\":1.0},\"total\":1.5}\n"
              "{\"id\":2,\"items\":[{\"id\":null,\"rewards\":{\"accuracy\":1.0,\"format\":1.0},\"total\":1.5}]}\n"
              "{\"id\":null,\"error\":\"malformed JSON at column 3: invalid token near 'not'\"}\n"
              "{\"id\":null,\"error\":\"line 4 exceeds 120 bytes\"}\n"
              "{\"id\":4,\"rewards\":{\"accuracy\":1.0,\"format\":0.0},\"total\":1.0}\n");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' --format-weight abc < /dev/null 2>/dev/null", score_bin);
    out = run_capture(cmd);
    CHECK(out && out[0] == '!');
    free(out);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_reward_server REWARD_SERVER REWARD_SCORE\n");
        return 2;
    }
    server_bin = argv[1];
    score_bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const char *args[] = {"--max-line-bytes", "200000", "--max-queued-bytes", "262144", NULL};
    if (server_start(&srv, server_bin, 0, args) != 0) {
        fprintf(stderr, "reward-server did not start\n");
        return 1;
    }
    RUN(test_concurrent_clients);
    RUN(test_bad_lines);
    RUN(test_oversized_line);
    RUN(test_disconnects);
    RUN(test_slow_reader_dropped);
    RUN(test_stats);
    CHECK_INT(server_stop(&srv, SIGTERM, 5.0), 0);
    RUN(test_sigterm_graceful);
    RUN(test_drain_timeout);
    RUN(test_max_connections);
    RUN(test_bad_flags);
    RUN(test_config_file);
    RUN(test_reward_score_filter);
    return test_summary("reward_server");
}
