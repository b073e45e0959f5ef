// Load benchmark of reward-server on loopback: 8 concurrent clients, each phase a fixed time.
//   single: each client sends one request and waits for its answer (closed loop);
//   batch:  the same with 16-item batch requests;
//   client: each client scores 256-item batches through the rollout client library (pipelined).
// Prints requests (items) per second and p50/p99 latency per round trip.
// Usage: bench_reward REWARD_SERVER [SECONDS_PER_PHASE (default 3)]
#include <pthread.h>

#include "reward/client.h"
#include "server_proc.h"

#define N_CLIENTS 8
#define BATCH 16
#define CLIENT_BATCH 256
#define MAX_SAMPLES (1 << 20)

typedef enum { PHASE_SINGLE, PHASE_BATCH, PHASE_CLIENT } Phase;

typedef struct {
    int port;
    Phase phase;
    double seconds;
    int id;
    double *lat_ms;  // [MAX_SAMPLES] per round trip
    long n_lat, items, errors;
} Worker;

static const char *COMPLETION = "<answer>Sound of a dog barking</answer>";
static const char *SOLUTION = "<answer>Sound of a dog barking</answer>";

static void record(Worker *w, double t0, int items) {
    if (w->n_lat < MAX_SAMPLES) w->lat_ms[w->n_lat++] = (sp_now() - t0) * 1e3;
    w->items += items;
}

// Raw-socket closed loop: one request (or one batch) in flight.
static void run_socket(Worker *w) {
    int fd = tcp_connect(w->port, 0);
    if (fd < 0) {
        w->errors++;
        return;
    }
    char item[256], line[8192];
    LineReader lr;
    lr_init(&lr, fd);
    double end = sp_now() + w->seconds;
    for (long k = 0; sp_now() < end; k++) {
        snprintf(item, sizeof item, "{\"id\":%ld,\"completion\":\"%s\",\"solution\":\"%s\"}", k, COMPLETION, SOLUTION);
        int n = 1;
        if (w->phase == PHASE_SINGLE) {
            snprintf(line, sizeof line, "%s\n", item);
        } else {
            n = BATCH;
            size_t len = (size_t)snprintf(line, sizeof line, "{\"id\":%ld,\"items\":[", k);
            for (int i = 0; i < BATCH; i++) len += (size_t)snprintf(line + len, sizeof line - len, "%s%s", i ? "," : "", item);
            snprintf(line + len, sizeof line - len, "]}\n");
        }
        double t0 = sp_now();
        char *resp = send_str(fd, line) == 0 ? lr_line(&lr, 10.0, NULL) : NULL;
        if (!resp || !strstr(resp, "\"total\":2.0")) {
            w->errors++;
            free(resp);
            break;
        }
        free(resp);
        record(w, t0, n);
    }
    lr_free(&lr);
    close(fd);
}

// Through the client library, as rollout calls it.
static void run_client(Worker *w) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", w->port);
    Err e;
    RewardClient *c = reward_client_open(addr, NULL, &e);
    if (!c) {
        w->errors++;
        return;
    }
    RewardRequest rq[CLIENT_BATCH];
    RewardResult out[CLIENT_BATCH];
    for (int i = 0; i < CLIENT_BATCH; i++)
        rq[i] = (RewardRequest){.completion = COMPLETION, .solution = SOLUTION, .mode = REWARD_MODE_ANSWER};
    double end = sp_now() + w->seconds;
    while (sp_now() < end) {
        double t0 = sp_now();
        if (reward_client_score_batch(c, rq, CLIENT_BATCH, out, &e) != 0 || out[CLIENT_BATCH - 1].total != 2.0) {
            w->errors++;
            break;
        }
        record(w, t0, CLIENT_BATCH);
    }
    reward_client_close(c);
}

static void *worker_main(void *arg) {
    Worker *w = arg;
    if (w->phase == PHASE_CLIENT) run_client(w);
    else run_socket(w);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_phase(int port, Phase phase, double seconds, const char *name, const char *unit) {
    Worker w[N_CLIENTS];
    pthread_t th[N_CLIENTS];
    double t0 = sp_now();
    for (int i = 0; i < N_CLIENTS; i++) {
        w[i] = (Worker){.port = port, .phase = phase, .seconds = seconds, .id = i};
        w[i].lat_ms = mallocCheck(MAX_SAMPLES * sizeof(double));
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    long n = 0, items = 0, errors = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        n += w[i].n_lat;
        items += w[i].items;
        errors += w[i].errors;
    }
    double wall = sp_now() - t0;
    double *all = mallocCheck((size_t)(n ? n : 1) * sizeof *all);
    long k = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        memcpy(all + k, w[i].lat_ms, (size_t)w[i].n_lat * sizeof *all);
        k += w[i].n_lat;
        free(w[i].lat_ms);
    }
    qsort(all, (size_t)n, sizeof *all, cmp_double);
    double p50 = n ? all[(n - 1) / 2] : 0, p99 = n ? all[(long)(0.99 * (double)(n - 1))] : 0;
    printf("%-40s %10.0f items/s %9.0f %s/s   p50 %7.3f ms   p99 %7.3f ms   (%ld round trips, %ld errors)\n", name,
           (double)items / wall, (double)n / wall, unit, p50, p99, n, errors);
    free(all);
    return errors ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: bench_reward REWARD_SERVER [SECONDS_PER_PHASE]\n");
        return 2;
    }
    double seconds = argc == 3 ? atof(argv[2]) : 3.0;
    if (!(seconds > 0 && seconds <= 60)) {
        fprintf(stderr, "bench_reward: seconds must be in (0, 60], got \"%s\"\n", argv[2]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    ServerProc s;
    if (server_start(&s, argv[1], 0, NULL) != 0) {
        fprintf(stderr, "bench_reward: reward-server did not start\n");
        return 1;
    }
    printf("reward-server on 127.0.0.1:%d, %d concurrent clients, %.1f s per phase\n", s.port, N_CLIENTS, seconds);
    int rc = run_phase(s.port, PHASE_SINGLE, seconds, "single requests (1 in flight)", "req");
    rc |= run_phase(s.port, PHASE_BATCH, seconds, "batches of 16 (1 in flight)", "batch");
    rc |= run_phase(s.port, PHASE_CLIENT, seconds, "client library, 256/call, 64 in flight", "call");
    json_t *st = stats_fetch(s.port);
    json_t *lat = json_object_get(st, "latency_ms");
    printf("server-side handling time per line: p50 %.3f ms, p99 %.3f ms\n", json_real_value(json_object_get(lat, "p50")),
           json_real_value(json_object_get(lat, "p99")));
    json_decref(st);
    if (server_stop(&s, SIGTERM, 10) != 0) rc = -1;
    return rc ? 1 : 0;
}
