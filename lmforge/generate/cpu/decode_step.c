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
   An integer weight is read as such and turned to float inside the dot product, so a step streams 1
   or 1/2 byte per weight instead of 4. The KV cache is lmforge's (N, G, S, D). */

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

enum { NORM_LAYER = 0, NORM_RMS = 1 };
enum { ACT_GELU = 0, ACT_GELU_TANH = 1, ACT_RELU = 2, ACT_SWIGLU = 3 };
enum { POS_NONE = 0, POS_TABLE = 1, POS_ROPE = 2 };
enum { OUT_STORE = 0, OUT_ADD = 1, OUT_ACT = 2 };
enum { MAX_ROWS = 16 };  /* rows per step; the caller splits larger batches */
enum { MAX_GROUPS = 1024 };  /* int4 groups per row (the caller checks) */

typedef struct {                 /* one weight matrix (O, K): f, or q8, or q4 is set */
    const float *f;              /* float32 (O, K) */
    const signed char *q8;       /* int8 (O, K) */
    const unsigned char *q4;     /* int4 (O, K/2): byte i of a group holds u[i] | u[i + g/2] << 4 */
    const float *scale, *zero;   /* (O, K/g); zero NULL: 0 for int8, 8 for int4 (symmetric) */
    int group;                   /* g */
} Weight;

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

static float dot(const float *w, const float *x, int K) {
    float a = 0.0f;
    #pragma omp simd reduction(+:a)
    for (int k = 0; k < K; k++) a += w[k] * x[k];
    return a;
}

/* One weight row against four input rows: each load of w serves four sums, and four independent
   sums are in flight. (For a single input row, one row at a time streams fastest: measured.) */
static void dot_rows4(const float *w, const float *x0, const float *x1, const float *x2, const float *x3,
                      int K, float *r) {
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    #pragma omp simd reduction(+:a0, a1, a2, a3)
    for (int k = 0; k < K; k++) { a0 += w[k] * x0[k]; a1 += w[k] * x1[k]; a2 += w[k] * x2[k]; a3 += w[k] * x3[k]; }
    r[0] = a0; r[1] = a1; r[2] = a2; r[3] = a3;
}

/* Integer weights, one input row: W[o] . x = sum over groups of s_g (sum_k q_k x_k), or for int4
   s_g (sum_k u_k x_k) - s_g z_g (sum_k x_k), with each group's sum of x given in xsum. Each group's
   integers become floats in registers, are multiplied into a vector of partial sums, and that vector
   is scaled once per group; one horizontal sum ends the row. */
#if defined(__AVX512F__)
#include <immintrin.h>
enum { LANES = 16 };
typedef __m512 vec;
static inline vec v_zero(void) { return _mm512_setzero_ps(); }
static inline vec v_fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline vec v_load(const float *x) { return _mm512_loadu_ps(x); }
static inline vec v_set(float a) { return _mm512_set1_ps(a); }
static inline float v_sum(vec a) { return _mm512_reduce_add_ps(a); }
static inline vec v_i8(const signed char *q) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q))); }
static inline __m512i v_u8(const unsigned char *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline vec v_lo(__m512i b) { return _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15))); }
static inline vec v_hi(__m512i b) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)); }
#define HAVE_VEC 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
enum { LANES = 8 };
typedef __m256 vec;
static inline vec v_zero(void) { return _mm256_setzero_ps(); }
static inline vec v_fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline vec v_load(const float *x) { return _mm256_loadu_ps(x); }
static inline vec v_set(float a) { return _mm256_set1_ps(a); }
static inline float v_sum(vec a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
static inline vec v_i8(const signed char *q) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q))); }
static inline __m256i v_u8(const unsigned char *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
static inline vec v_lo(__m256i b) { return _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15))); }
static inline vec v_hi(__m256i b) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)); }
#define HAVE_VEC 1
#endif

static float qdot(const Weight *W, int o, const float *x, const float *xsum, int K) {
    const int g = W->group, G = K / g, half = g / 2;
    const float *s = W->scale + (size_t)o * G, *z = W->zero ? W->zero + (size_t)o * G : NULL;
    float tail = 0.0f, corr = 0.0f;
#ifdef HAVE_VEC
    vec total = v_zero();
#endif
    for (int i = 0; i < G; i++) {
        const float *xg = x + (size_t)i * g;
        int k = 0;
        float part = 0.0f;
        if (W->q8) {
            const signed char *q = W->q8 + (size_t)o * K + (size_t)i * g;
#ifdef HAVE_VEC
            vec acc = v_zero();
            for (; k + LANES <= g; k += LANES) acc = v_fma(v_i8(q + k), v_load(xg + k), acc);
            total = v_fma(acc, v_set(s[i]), total);
#endif
            for (; k < g; k++) part += (float)q[k] * xg[k];
        } else {
            const unsigned char *p = W->q4 + ((size_t)o * K + (size_t)i * g) / 2;
#ifdef HAVE_VEC
            vec acc = v_zero();
            for (; k + LANES <= half; k += LANES) {
                __typeof__(v_u8(p)) b = v_u8(p + k);
                acc = v_fma(v_lo(b), v_load(xg + k), acc);
                acc = v_fma(v_hi(b), v_load(xg + half + k), acc);
            }
            total = v_fma(acc, v_set(s[i]), total);
#endif
            for (; k < half; k++) part += (float)(p[k] & 15) * xg[k] + (float)(p[k] >> 4) * xg[half + k];
            corr += s[i] * (z ? z[i] : 8.0f) * xsum[i];
        }
        tail += s[i] * part;
    }
#ifdef HAVE_VEC
    tail += v_sum(total);
#endif
    return tail - corr;
}

#ifdef HAVE_VEC
/* qdot for four output rows o .. o + 3 at once: each load of x serves four rows, and four chains of
   sums are in flight. */
static void qdot4(const Weight *W, int o, const float *x, const float *xsum, int K, float *r) {
    const int g = W->group, G = K / g, half = g / 2;
    vec t0 = v_zero(), t1 = v_zero(), t2 = v_zero(), t3 = v_zero();
    float corr[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < G; i++) {
        const float *xg = x + (size_t)i * g;
        vec a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();
        if (W->q8) {
            const signed char *q = W->q8 + (size_t)o * K + (size_t)i * g;
            for (int k = 0; k < g; k += LANES) {
                vec xv = v_load(xg + k);
                a0 = v_fma(v_i8(q + k), xv, a0);
                a1 = v_fma(v_i8(q + K + k), xv, a1);
                a2 = v_fma(v_i8(q + 2 * (size_t)K + k), xv, a2);
                a3 = v_fma(v_i8(q + 3 * (size_t)K + k), xv, a3);
            }
        } else {
            const unsigned char *p = W->q4 + ((size_t)o * K + (size_t)i * g) / 2;
            const size_t row = (size_t)K / 2;
            for (int k = 0; k < half; k += LANES) {
                vec xl = v_load(xg + k), xh = v_load(xg + half + k);
                __typeof__(v_u8(p)) b0 = v_u8(p + k), b1 = v_u8(p + row + k), b2 = v_u8(p + 2 * row + k), b3 = v_u8(p + 3 * row + k);
                a0 = v_fma(v_hi(b0), xh, v_fma(v_lo(b0), xl, a0));
                a1 = v_fma(v_hi(b1), xh, v_fma(v_lo(b1), xl, a1));
                a2 = v_fma(v_hi(b2), xh, v_fma(v_lo(b2), xl, a2));
                a3 = v_fma(v_hi(b3), xh, v_fma(v_lo(b3), xl, a3));
            }
        }
        const float *s = W->scale + (size_t)o * G + i;
        t0 = v_fma(a0, v_set(s[0]), t0);
        t1 = v_fma(a1, v_set(s[G]), t1);
        t2 = v_fma(a2, v_set(s[2 * (size_t)G]), t2);
        t3 = v_fma(a3, v_set(s[3 * (size_t)G]), t3);
    }
    for (int j = 0; W->q4 && j < 4; j++) {  /* the zero points' share: sum_g s_g z_g (sum_k x_k) */
        const float *sc = W->scale + (size_t)(o + j) * G, *zp = W->zero ? W->zero + (size_t)(o + j) * G : NULL;
        float c = 0.0f;
        #pragma omp simd reduction(+:c)
        for (int i = 0; i < G; i++) c += sc[i] * (zp ? zp[i] : 8.0f) * xsum[i];
        corr[j] = c;
    }
    r[0] = v_sum(t0) - corr[0]; r[1] = v_sum(t1) - corr[1]; r[2] = v_sum(t2) - corr[2]; r[3] = v_sum(t3) - corr[3];
}
#endif

/* Rows o0 .. o0 + nb - 1 of an integer weight as float32 into buf (nb, K): s q, or s (u - z). */
static void dequantize_rows(const Weight *W, int o0, int nb, int K, float *buf) {
    const int g = W->group, G = K / g, half = g / 2;
    for (int j = 0; j < nb; j++) {
        int o = o0 + j;
        for (int i = 0; i < G; i++) {
            float sc = W->scale[(size_t)o * G + i], *y = buf + (size_t)j * K + (size_t)i * g;
            if (W->q8) {
                const signed char *q = W->q8 + (size_t)o * K + (size_t)i * g;
                #pragma omp simd
                for (int k = 0; k < g; k++) y[k] = sc * (float)q[k];
            } else {
                const unsigned char *p = W->q4 + ((size_t)o * K + (size_t)i * g) / 2;
                float zp = W->zero ? W->zero[(size_t)o * G + i] : 8.0f;
                #pragma omp simd
                for (int k = 0; k < half; k++) { y[k] = sc * ((float)(p[k] & 15) - zp); y[half + k] = sc * ((float)(p[k] >> 4) - zp); }
            }
        }
    }
}

/* acc[n * 4 + j] = W[o0 + j] . in[n] for j < nb <= 4 outputs and n < N rows; xsum: int4's group sums
   of the input row (one row), rowbuf: room for 4 rows of K floats (several rows). */
static void block_dots(const Weight *Wt, int o0, int nb, const float *in, int in_stride, int N, int K,
                       const float *xsum, float *rowbuf, float *acc) {
    const float *w;
    if (!Wt->f && N == 1) {  /* one row: the integers are used where they are read */
#ifdef HAVE_VEC
        int lanes_fit = Wt->group % (Wt->q8 ? LANES : 2 * LANES) == 0;
        if (nb == 4 && lanes_fit) {
            qdot4(Wt, o0, in, xsum, K, acc);
            return;
        }
#endif
        for (int j = 0; j < nb; j++) acc[j] = qdot(Wt, o0 + j, in, xsum, K);
        return;
    }
    if (!Wt->f && !rowbuf) {  /* no memory for the float rows (malloc failed): one row at a time */
        for (int n = 0; n < N; n++) {
            const float *x = in + (size_t)n * in_stride;
            float sums[MAX_GROUPS];
            for (int i = 0, g = Wt->group; Wt->q4 && i < K / g; i++) {
                sums[i] = 0.0f;
                for (int k = 0; k < g; k++) sums[i] += x[(size_t)i * g + k];
            }
            for (int j = 0; j < nb; j++) acc[n * 4 + j] = qdot(Wt, o0 + j, x, sums, K);
        }
        return;
    }
    if (!Wt->f) {  /* several rows: each weight row turned to float once, then read from cache for every row */
        dequantize_rows(Wt, o0, nb, K, rowbuf);
        w = rowbuf;
    } else {
        w = Wt->f + (size_t)o0 * K;
    }
    int n = 0;
    if (N >= 4) {
        float r[4];
        for (; n + 4 <= N; n += 4) {
            const float *x = in + (size_t)n * in_stride;
            for (int j = 0; j < nb; j++) {
                dot_rows4(w + (size_t)j * K, x, x + in_stride, x + 2 * (size_t)in_stride, x + 3 * (size_t)in_stride, K, r);
                for (int i = 0; i < 4; i++) acc[(n + i) * 4 + j] = r[i];
            }
        }
    }
    for (; n < N; n++) {
        const float *x = in + (size_t)n * in_stride;
        for (int j = 0; j < nb; j++) acc[n * 4 + j] = dot(w + (size_t)j * K, x, K);
    }
}

/* out[n][o] (=, +=, or act of) W[o] . in[n] + bias[o] for n < N rows (N <= MAX_ROWS), o < O outputs.
   The threads split the outputs in blocks of four; each block of W is read from memory once and
   reused from cache for every row. With W2 (SwiGLU), out = SiLU(W.in + bias) * (W2.in + bias2).
   An int4 weight first needs each input row's group sums; every thread works out its own. */
static void matvec(const Weight *W, const float *bias, const Weight *W2, const float *bias2, int act, int mode,
                   const float *in, int in_stride, float *out, int out_stride, int N, int O, int K) {
    float xsum[W->q4 && N == 1 ? K / W->group : 1];  /* at most MAX_GROUPS */
    float *rowbuf = !W->f && N > 1 ? malloc(sizeof(float) * 4 * (size_t)K) : NULL;
    if (W->q4 && N == 1)
        for (int i = 0, g = W->group; i < K / g; i++) {
            float a = 0.0f;
            for (int k = 0; k < g; k++) a += in[(size_t)i * g + k];
            xsum[i] = a;
        }
    #pragma omp for schedule(static)
    for (int o0 = 0; o0 < O; o0 += 4) {
        int nb = O - o0 < 4 ? O - o0 : 4;
        float acc[MAX_ROWS * 4], acc2[MAX_ROWS * 4];
        block_dots(W, o0, nb, in, in_stride, N, K, xsum, rowbuf, acc);
        if (W2) block_dots(W2, o0, nb, in, in_stride, N, K, xsum, rowbuf, acc2);
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
