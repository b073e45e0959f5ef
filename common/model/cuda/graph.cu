// graph.cu: CUDA graphs of a repeated op sequence (ops.h graph_*; a decode step is captured once and
// replayed with new host inputs).
// How a pass captures and replays: see Graph in ops_cuda_internal.h.
#include <string.h>

#include "model/cuda/ops_cuda_internal.h"

void graph_forbid(Cuda *c, const char *what) {
    if (c->gr) fatal("cuda: %s inside a graph pass (graph passes may not read back, synchronise or allocate)", what);
}

void *graph_dev_alloc(Graph *g, size_t bytes) {
    void *p;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    g->devs = (void **)reallocCheck(g->devs, (size_t)(g->n_devs + 1) * sizeof(void *));
    g->devs[g->n_devs++] = p;
    return p;
}

void graph_stage(Cuda *c, void *dst, const void *src, size_t bytes) {
    Graph *g = c->gr;
    if (g->replay) {
        if (g->i_st >= g->n_st || g->st[g->i_st].dst != dst || g->st[g->i_st].bytes != bytes) {
            g->bad = 1;
            return;
        }
        memcpy(g->st[g->i_st++].host, src, bytes);
        return;
    }
    const size_t need = (bytes + 15) & ~(size_t)15;
    if (!g->n_pins || g->pin_used + need > g->pin_cap) {
        g->pin_cap = need > (size_t)GRAPH_PIN_BLOCK ? need : (size_t)GRAPH_PIN_BLOCK;
        g->pins = (void **)reallocCheck(g->pins, (size_t)(g->n_pins + 1) * sizeof(void *));
        CUDA_CHECK(cudaMallocHost(&g->pins[g->n_pins++], g->pin_cap));
        g->pin_used = 0;
    }
    void *h = (char *)g->pins[g->n_pins - 1] + g->pin_used;
    g->pin_used += need;
    memcpy(h, src, bytes);
    if (g->n_st == g->cap_st) {
        g->cap_st = g->cap_st ? 2 * g->cap_st : 16;
        g->st = (GraphStage *)reallocCheck(g->st, (size_t)g->cap_st * sizeof(GraphStage));
    }
    g->st[g->n_st++] = (GraphStage){h, bytes, dst};
    CUDA_CHECK(cudaMemcpyAsync(dst, h, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void graph_clear(Graph *g) {
    CUDA_CHECK(cudaEventSynchronize(g->done));  // a launch in flight still uses the buffers
    if (g->exec) CUDA_CHECK(cudaGraphExecDestroy(g->exec));
    g->exec = NULL;
    for (int i = 0; i < g->n_pins; i++) CUDA_CHECK(cudaFreeHost(g->pins[i]));
    for (int i = 0; i < g->n_devs; i++) CUDA_CHECK(cudaFree(g->devs[i]));
    for (int i = 0; i < g->n_plans; i++) free(g->plans[i].segs);
    free(g->pins), free(g->devs), free(g->st), free(g->plans);
    g->pins = NULL, g->devs = NULL, g->st = NULL, g->plans = NULL;
    g->n_pins = g->n_devs = g->n_st = g->cap_st = g->n_plans = 0;
    g->pin_used = g->pin_cap = 0;
}

void *cu_graph_create(Ops *o) {
    (void)o;
    Graph *g = (Graph *)callocCheck(1, sizeof(Graph));
    CUDA_CHECK(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming));
    return g;
}

void cu_graph_begin(Ops *o, void *gp) {
    Cuda *c = impl(o);
    Graph *g = (Graph *)gp;
    if (c->gr) fatal("cuda: graph_begin inside another graph pass");
    c->gr = g;
    g->replay = g->exec != NULL, g->bad = 0, g->pass_key = 1469598103934665603ull, g->i_st = 0, g->i_plan = 0;
    if (g->replay)
        CUDA_CHECK(cudaEventSynchronize(g->done));  // the last replay may still read the pinned inputs
    else
        CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed));
}

int cu_graph_end(Ops *o, void *gp, int run) {
    Cuda *c = impl(o);
    Graph *g = (Graph *)gp;
    if (c->gr != g) fatal("cuda: graph_end without its graph_begin");
    c->gr = NULL;
    if (!g->replay) {
        cudaGraph_t graph;
        CUDA_CHECK(cudaStreamEndCapture(c->stream, &graph));
        if (run) {
            CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
            g->key = g->pass_key;
        }
        CUDA_CHECK(cudaGraphDestroy(graph));
        if (!run) {
            graph_clear(g);
            return 0;
        }
    } else if (!run) {
        return 0;
    } else if (g->bad || g->i_st != g->n_st || g->i_plan != g->n_plans || g->pass_key != g->key) {
        graph_clear(g);  // another op sequence: the caller's next pass captures it
        return 1;
    }
    CUDA_CHECK(cudaGraphLaunch(g->exec, c->stream));
    CUDA_CHECK(cudaEventRecord(g->done, c->stream));
    return 0;
}

void cu_graph_free(Ops *o, void *gp) {
    Graph *g = (Graph *)gp;
    if (!g) return;
    if (impl(o)->gr == g) fatal("cuda: graph_free during its pass");
    CUDA_CHECK(cudaStreamSynchronize(impl(o)->stream));
    graph_clear(g);
    CUDA_CHECK(cudaEventDestroy(g->done));
    free(g);
}
