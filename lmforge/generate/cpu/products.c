/* The matrix products of the compiled decode step: float32, int8 and int4 weights against up to
   MAX_ROWS input rows (products.h says what each function computes).

   An integer weight is read as such and turned to a float inside the dot product, so a step streams 1
   or 1/2 byte per weight instead of 4. */

#include <stdlib.h>

#include "products.h"

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

#if defined(HAVE_VEC) && defined(__AVX512BF16__) && defined(__AVX512VL__)
/* int4 weights on a CPU with bfloat16 dot products (AVX512-BF16): the input row is rounded once to
   bfloat16 (8 significant bits, to nearest even) and the weights stay exact. A nibble u becomes a
   bfloat16 without a lookup: 0x4300 is 128.0, whose last mantissa bit is worth 1, so 0x4300 | u is
   128 + u exactly. One instruction multiplies 16 pairs of those by x and adds them into float32 sums,
   and per group
       sum_k (u_k - z) x_k = sum_k (128 + u_k) x_k - (128 + z) sum_k x_k.
   Read 16 bits at a time, a group's bytes give four nibbles a lane (bits 0-3, 4-7, 8-11, 12-15 of lane l:
   weights 2l, half + 2l, 2l + 1, half + 2l + 1 of its 64), so x is laid out in that order once per
   product, and no byte is shuffled. That takes half the instructions of turning nibbles into float32;
   it serves groups of 64 or a multiple, other groups take the float32 path, and the same path serves
   every number of rows, so a row's sums never depend on the rows decoded beside it. */
#define HAVE_BF16 1
int lmf_bf16_path(const Weight *W) { return W->q4 && W->group % 64 == 0; }

/* x (K floats) as bfloat16 into xb, four vectors of 16 per 32 bytes of weights in the order above, and
   each group's sum of bf16(x) */
void lmf_to_bf16(const Weight *W, const float *x, int K, void *buffer, float *xsum) {
    __m256bh *xb = buffer;
    const int g = W->group, half = g / 2;
    for (int i = 0; i < K / g; i++) {
        const float *xg = x + (size_t)i * g;
        __m256bh *out = xb + (size_t)i * g / 16;
        for (int k = 0; k < half; k += 32) {
            float t[64];
            for (int l = 0; l < 16; l++) {
                t[l] = xg[k + 2 * l]; t[16 + l] = xg[half + k + 2 * l];
                t[32 + l] = xg[k + 2 * l + 1]; t[48 + l] = xg[half + k + 2 * l + 1];
            }
            __m512bh lo = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(t + 16), _mm512_loadu_ps(t));
            __m512bh hi = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(t + 48), _mm512_loadu_ps(t + 32));
            _mm512_storeu_si512(out + k / 8, (__m512i)lo);
            _mm512_storeu_si512(out + k / 8 + 2, (__m512i)hi);
        }
        const unsigned short *h = (const unsigned short *)out;
        float a = 0.0f;
        for (int k = 0; k < g; k++) { union { unsigned u; float f; } v = {(unsigned)h[k] << 16}; a += v.f; }
        xsum[i] = a;
    }
}

/* W[o + j] . x for j < nb <= 4 rows; xb, xsum from to_bf16. Inlined for nb = 4, so that the four rows'
   sums live in registers. */
static inline __attribute__((always_inline)) void qdot4_bf16(const Weight *W, int o, int nb, const __m256bh *xb, const float *xsum, int K, float *r) {
    const int g = W->group, G = K / g;
    const size_t row = (size_t)K / 2;
    const __m256i nibble = _mm256_set1_epi16(15), base = _mm256_set1_epi16(0x4300);
    __m256 t[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int i = 0; i < G; i++) {
        const unsigned char *p = W->q4 + ((size_t)o * K + (size_t)i * g) / 2;
        const __m256bh *xg = xb + (size_t)i * g / 16;
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        __m256 b[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int k = 0; k < g / 2; k += 32) {
            const __m256bh *xk = xg + k / 8;
            for (int j = 0; j < nb; j++) {  /* (v & 15) | base, as one ternary-logic instruction (0xEA) */
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + j * row + k));
                __m256i n0 = _mm256_ternarylogic_epi32(v, nibble, base, 0xEA);
                __m256i n1 = _mm256_ternarylogic_epi32(_mm256_srli_epi16(v, 4), nibble, base, 0xEA);
                __m256i n2 = _mm256_ternarylogic_epi32(_mm256_srli_epi16(v, 8), nibble, base, 0xEA);
                __m256i n3 = _mm256_or_si256(_mm256_srli_epi16(v, 12), base);
                a[j] = _mm256_dpbf16_ps(a[j], (__m256bh)n0, xk[0]);
                a[j] = _mm256_dpbf16_ps(a[j], (__m256bh)n1, xk[1]);
                b[j] = _mm256_dpbf16_ps(b[j], (__m256bh)n2, xk[2]);
                b[j] = _mm256_dpbf16_ps(b[j], (__m256bh)n3, xk[3]);
            }
        }
        for (int j = 0; j < nb; j++) t[j] = _mm256_fmadd_ps(_mm256_add_ps(a[j], b[j]), _mm256_set1_ps(W->scale[(size_t)(o + j) * G + i]), t[j]);
    }
    for (int j = 0; j < nb; j++) {
        const float *sc = W->scale + (size_t)(o + j) * G, *zp = W->zero ? W->zero + (size_t)(o + j) * G : NULL;
        float c = 0.0f;  /* sum_g s_g (128 + z_g) (sum_k bf16(x)_k) */
        for (int i = 0; i < G; i++) c += sc[i] * (128.0f + (zp ? zp[i] : 8.0f)) * xsum[i];
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(t[j]), _mm256_extractf128_ps(t[j], 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        r[j] = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h))) - c;
    }
}
#else
int lmf_bf16_path(const Weight *W) { (void)W; return 0; }
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

void lmf_block_dots(const Weight *Wt, int o0, int nb, const float *in, int in_stride, int N, int K,
                    const float *xsum, float *rowbuf, const void *xb, const float *xbsum, float *acc) {
    const float *w;
#ifdef HAVE_BF16
    if (xb && lmf_bf16_path(Wt)) {  /* every row through the bfloat16 products: xb, xbsum from to_bf16 */
        for (int n = 0; n < N; n++) {
            float r[4];
            const __m256bh *x = (const __m256bh *)xb + (size_t)n * K / 16;
            const float *sums = xbsum + (size_t)n * (K / Wt->group);
            if (nb == 4) qdot4_bf16(Wt, o0, 4, x, sums, K, r); else qdot4_bf16(Wt, o0, nb, x, sums, K, r);
            for (int j = 0; j < nb; j++) acc[n * 4 + j] = r[j];
        }
        return;
    }
#else
    (void)xb; (void)xbsum;
#endif
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

/* What this build does beyond float32: 1 when int4 products take bfloat16 inputs (bf16_path). */
int lmf_features(void) {
#ifdef HAVE_BF16
    return 1;
#else
    return 0;
#endif
}
