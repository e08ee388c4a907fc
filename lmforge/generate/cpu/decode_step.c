/* One decode step of a pre-norm GPT (GPT-2 or Llama shape) for N rows, in float32, as one function.

   A decode step reads every weight once and does little else, so its speed is how fast the weights
   stream from memory, plus whatever runs between the matrix products. This file does the whole step
   in one parallel region: the threads split each product's output rows between them and meet at a
   barrier before the next part (norm -> QKV -> RoPE + cache write -> attention -> output projection
   -> norm -> feed-forward -> ...), so nothing between two products costs more than a barrier.

   The formulas are the ones lmforge/nn states in its docstrings:
     LayerNorm(x) = (x - mean x) / sqrt(var x + eps) * w + b        RMSNorm(x) = x / sqrt(mean x^2 + eps) * w
     rope(x) = x * cos + rotate_half(x) * sin                        (pairs x_i, x_{i+D/2})
     Attention(q, K, V) = softmax(q K^T / sqrt(D)) V                  over the row's real keys only
     FFN(x) = act(x W1 + b1) W2 + b2,  or  (SiLU(x Wg) * (x Wu)) Wd  (SwiGLU)
   Weights are row-major (out, in), as nn.Linear keeps them, in float32 or as integers with a scale per
   group of g inputs (lmforge/nn/quantized.py): int8 w = s q, or int4 w = s (u - z), two to a byte.
   The products are products.c's. The KV cache is lmforge's (N, G, S, D). */

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

enum { NORM_LAYER = 0, NORM_RMS = 1 };
enum { ACT_GELU = 0, ACT_GELU_TANH = 1, ACT_RELU = 2, ACT_SWIGLU = 3 };
enum { POS_NONE = 0, POS_TABLE = 1, POS_ROPE = 2 };
enum { OUT_STORE = 0, OUT_ADD = 1, OUT_ACT = 2 };
#include "products.h"

typedef struct {
    const float *norm1_w, *norm1_b;
    Weight qkv; const float *qkv_b;
    Weight proj; const float *proj_b;
    const float *norm2_w, *norm2_b;
    Weight fc; const float *fc_b;
    Weight up; const float *up_b;
    Weight out; const float *out_b;
} Layer;

typedef struct {
    int n_layer, d_model, n_head, n_kv_head, head_dim, d_ff, vocab, norm, act, position;
    float eps;
    const float *tok_emb;               /* (V, C) */
    const float *pos_table;             /* (context, C): learned or sinusoidal positions */
    const float *rope_cos, *rope_sin;   /* (context, D) */
    const float *norm_w, *norm_b;
    Weight head;
    const Layer *layers;
} Model;

static float activate(int act, float v) {
    switch (act) {
    case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACT_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    default: return v / (1.0f + expf(-v));  /* SiLU, the gate of SwiGLU */
    }
}

static void normalize(const Model *m, const float *x, const float *w, const float *b, float *y) {
    int c = m->d_model;
    float mean = 0.0f, var = 0.0f;
    if (m->norm == NORM_LAYER) {
        for (int i = 0; i < c; i++) mean += x[i];
        mean /= c;
    }
    for (int i = 0; i < c; i++) var += (x[i] - mean) * (x[i] - mean);
    float inv = 1.0f / sqrtf(var / c + m->eps);
    for (int i = 0; i < c; i++) y[i] = (x[i] - mean) * inv * w[i] + (b ? b[i] : 0.0f);
}

/* out[n][o] (=, +=, or act of) W[o] . in[n] + bias[o] for n < N rows (N <= MAX_ROWS), o < O outputs.
   The threads split the outputs in blocks of four; each block of W is read from memory once and
   reused from cache for every row. With W2 (SwiGLU), out = SiLU(W.in + bias) * (W2.in + bias2).
   An int4 weight first needs each input row's group sums (or its bfloat16 copy); every thread works out
   its own. */
static void matvec(const Weight *W, const float *bias, const Weight *W2, const float *bias2, int act, int mode,
                   const float *in, int in_stride, float *out, int out_stride, int N, int O, int K) {
    float xsum[W->q4 && N == 1 ? K / W->group : 1];  /* at most MAX_GROUPS */
    const int bf16 = lmf_bf16_path(W) && (!W2 || (lmf_bf16_path(W2) && W2->group == W->group));
    float *rowbuf = !W->f && N > 1 && !bf16 ? malloc(sizeof(float) * 4 * (size_t)K) : NULL;
    void *xb = NULL;  /* N rows of K bfloat16, then N rows of K / group sums */
    float *xbsum = NULL;
    if (bf16 && (xb = aligned_alloc(64, (size_t)N * K * 2 + sizeof(float) * (size_t)N * K))) {
        xbsum = (float *)((char *)xb + (size_t)N * K * 2);
        for (int n = 0; n < N; n++)
            lmf_to_bf16(W, in + (size_t)n * in_stride, K, (char *)xb + (size_t)n * K * 2, xbsum + (size_t)n * (K / W->group));
    }
    if (W->q4 && N == 1 && !xb)
        for (int i = 0, g = W->group; i < K / g; i++) {
            float a = 0.0f;
            for (int k = 0; k < g; k++) a += in[(size_t)i * g + k];
            xsum[i] = a;
        }
    #pragma omp for schedule(static)
    for (int o0 = 0; o0 < O; o0 += 4) {
        int nb = O - o0 < 4 ? O - o0 : 4;
        float acc[MAX_ROWS * 4], acc2[MAX_ROWS * 4];
        lmf_block_dots(W, o0, nb, in, in_stride, N, K, xsum, rowbuf, xb, xbsum, acc);
        if (W2) lmf_block_dots(W2, o0, nb, in, in_stride, N, K, xsum, rowbuf, xb, xbsum, acc2);
        for (int n = 0; n < N; n++) {
            float *y = out + (size_t)n * out_stride + o0;
            for (int j = 0; j < nb; j++) {
                float v = acc[n * 4 + j] + (bias ? bias[o0 + j] : 0.0f);
                if (W2) v = activate(ACT_SWIGLU, v) * (acc2[n * 4 + j] + (bias2 ? bias2[o0 + j] : 0.0f));
                else if (mode == OUT_ACT) v = activate(act, v);
                if (mode == OUT_ADD) y[j] += v; else y[j] = v;
            }
        }
    }
    free(rowbuf);
    free(xb);
}

static void rope(float *x, const float *cos, const float *sin, int d) {
    int half = d / 2;
    for (int i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

/* work holds N * (2C + H D + (H + 2G) D + 2 d_ff + H S) floats. Returns 0; -1 when N > MAX_ROWS, -2 for a
   token outside the vocabulary (nothing is written then). */
int lmf_decode_step(const Model *m, int N, const long long *tokens, const int *npad, int pos,
                    float *const *k_cache, float *const *v_cache, int S, float *logits, float *work,
                    int threads) {
    const int C = m->d_model, H = m->n_head, G = m->n_kv_head, D = m->head_dim, F = m->d_ff;
    const int QKV = (H + 2 * G) * D, HD = H * D;
    float *x = work, *h = x + (size_t)N * C, *att = h + (size_t)N * C, *qkv = att + (size_t)N * HD;
    float *ff = qkv + (size_t)N * QKV, *scores = ff + (size_t)N * 2 * F;
    const float scale = 1.0f / sqrtf((float)D);
    if (N > MAX_ROWS) return -1;
    for (int n = 0; n < N; n++) if (tokens[n] < 0 || tokens[n] >= m->vocab) return -2;

    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {  /* x = E[token] (+ P[position]); a row's position skips its padding */
            const float *e = m->tok_emb + (size_t)tokens[n] * C;
            const float *p = m->position == POS_TABLE ? m->pos_table + (size_t)(pos - npad[n]) * C : NULL;
            for (int i = 0; i < C; i++) x[(size_t)n * C + i] = e[i] + (p ? p[i] : 0.0f);
        }
        for (int l = 0; l < m->n_layer; l++) {
            const Layer *L = &m->layers[l];
            #pragma omp for schedule(static)
            for (int n = 0; n < N; n++) normalize(m, x + (size_t)n * C, L->norm1_w, L->norm1_b, h + (size_t)n * C);
            matvec(&L->qkv, L->qkv_b, NULL, NULL, 0, OUT_STORE, h, C, qkv, QKV, N, QKV, C);
            #pragma omp for schedule(static)
            for (int r = 0; r < N * G; r++) {  /* RoPE on q and k, then this token's k, v into the cache */
                int n = r / G, g = r % G, p = pos - npad[n];
                float *q = qkv + (size_t)n * QKV, *k = q + (size_t)(H + g) * D, *v = q + (size_t)(H + G + g) * D;
                if (m->position == POS_ROPE) {
                    const float *cs = m->rope_cos + (size_t)p * D, *sn = m->rope_sin + (size_t)p * D;
                    for (int j = 0; j < H / G; j++) rope(q + (size_t)(g * (H / G) + j) * D, cs, sn, D);
                    rope(k, cs, sn, D);
                }
                float *kc = k_cache[l] + (((size_t)n * G + g) * S + pos) * D;
                float *vc = v_cache[l] + (((size_t)n * G + g) * S + pos) * D;
                for (int i = 0; i < D; i++) { kc[i] = k[i]; vc[i] = v[i]; }
            }
            #pragma omp for schedule(static)
            for (int r = 0; r < N * H; r++) {  /* softmax(q K^T / sqrt(D)) V over keys npad[n] .. pos */
                int n = r / H, hh = r % H, g = hh / (H / G), s0 = npad[n];
                const float *q = qkv + (size_t)n * QKV + (size_t)hh * D;
                const float *K = k_cache[l] + ((size_t)n * G + g) * S * D, *V = v_cache[l] + ((size_t)n * G + g) * S * D;
                float *w = scores + (size_t)r * S, *y = att + (size_t)n * HD + (size_t)hh * D, top = -INFINITY, sum = 0.0f;
                for (int s = s0; s <= pos; s++) {
                    const float *ks = K + (size_t)s * D;
                    float a = 0.0f;
                    #pragma omp simd reduction(+:a)
                    for (int i = 0; i < D; i++) a += q[i] * ks[i];
                    w[s] = a * scale;
                    if (w[s] > top) top = w[s];
                }
                for (int s = s0; s <= pos; s++) { w[s] = expf(w[s] - top); sum += w[s]; }
                for (int i = 0; i < D; i++) y[i] = 0.0f;
                for (int s = s0; s <= pos; s++) {
                    const float *vs = V + (size_t)s * D;
                    float p = w[s] / sum;
                    #pragma omp simd
                    for (int i = 0; i < D; i++) y[i] += p * vs[i];
                }
            }
            matvec(&L->proj, L->proj_b, NULL, NULL, 0, OUT_ADD, att, HD, x, C, N, C, HD);
            #pragma omp for schedule(static)
            for (int n = 0; n < N; n++) normalize(m, x + (size_t)n * C, L->norm2_w, L->norm2_b, h + (size_t)n * C);
            if (m->act == ACT_SWIGLU)
                matvec(&L->fc, L->fc_b, &L->up, L->up_b, ACT_SWIGLU, OUT_STORE, h, C, ff, F, N, F, C);
            else
                matvec(&L->fc, L->fc_b, NULL, NULL, m->act, OUT_ACT, h, C, ff, F, N, F, C);
            matvec(&L->out, L->out_b, NULL, NULL, 0, OUT_ADD, ff, F, x, C, N, C, F);
        }
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) normalize(m, x + (size_t)n * C, m->norm_w, m->norm_b, h + (size_t)n * C);
        matvec(&m->head, NULL, NULL, NULL, 0, OUT_STORE, h, C, logits, m->vocab, N, m->vocab, C);
    }
    return 0;
}

/* y (N, O) = in (N, K) W^T (+ bias) for N <= MAX_ROWS rows: one product with the step's kernels, for
   decoding in PyTorch with integer weights (generate/fast_linear.py). Returns 0, or -1 for N > MAX_ROWS. */
int lmf_linear(const Weight *W, const float *bias, int N, const float *in, float *out, int O, int K, int threads) {
    if (N > MAX_ROWS) return -1;
    #pragma omp parallel num_threads(threads)
    matvec(W, bias, NULL, NULL, 0, OUT_STORE, in, K, out, O, N, O, K);
    return 0;
}

/* The layout of the structs above, for the loader to compare with its ctypes mirrors before the first
   step (a mismatch would have the step read one field as another): for Weight, Layer and Model in turn,
   its sizeof, then the offset of each of its fields in order. Writes at most
   n values to out and returns how many there are. */
int lmf_layout(long long *out, int n) {
    const long long v[] = {
        sizeof(Weight), offsetof(Weight, f), offsetof(Weight, q8), offsetof(Weight, q4), offsetof(Weight, scale),
        offsetof(Weight, zero), offsetof(Weight, group),
        sizeof(Layer), offsetof(Layer, norm1_w), offsetof(Layer, norm1_b), offsetof(Layer, qkv),
        offsetof(Layer, qkv_b), offsetof(Layer, proj), offsetof(Layer, proj_b), offsetof(Layer, norm2_w),
        offsetof(Layer, norm2_b), offsetof(Layer, fc), offsetof(Layer, fc_b), offsetof(Layer, up),
        offsetof(Layer, up_b), offsetof(Layer, out), offsetof(Layer, out_b),
        sizeof(Model), offsetof(Model, n_layer), offsetof(Model, d_model), offsetof(Model, n_head),
        offsetof(Model, n_kv_head), offsetof(Model, head_dim), offsetof(Model, d_ff), offsetof(Model, vocab),
        offsetof(Model, norm), offsetof(Model, act), offsetof(Model, position), offsetof(Model, eps),
        offsetof(Model, tok_emb), offsetof(Model, pos_table), offsetof(Model, rope_cos), offsetof(Model, rope_sin),
        offsetof(Model, norm_w), offsetof(Model, norm_b), offsetof(Model, head), offsetof(Model, layers),
    };
    const int count = (int)(sizeof v / sizeof v[0]);
    for (int i = 0; i < count && i < n; i++) out[i] = v[i];
    return count;
}
