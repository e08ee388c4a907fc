/* Attention of one new query per row over a key/value cache whose rows share their histories.

   Beam search re-ranks its beams at every step: beam i continues beam rows[i]'s history. A cache
   laid out one history per row must then copy each moved beam's keys and values (every layer, every
   position so far) before the next step can read them. Here nothing is copied: each position's keys
   stay where they were written, and owner[n][s] names the stored row that holds row n's key at
   position s. Re-ranking rewrites that small table of integers; this function follows it.

     y[n, h] = sum_s softmax_s(q[n, h] . K[owner[n][s], g, s] * scale + bias[h, s]) V[owner[n][s], g, s]

   over positions s < keys (and s < lengths[n] when lengths is given), with g = h / (H / G) the
   key/value head of query head h (grouped-query attention). Shapes: q and y (N, H, D); the stores
   (R, G, slots, D); owner (N, owner_stride): a row per query row, or with owner_stride 0 one stored
   row for all of row n's positions (owner[n]: cross-attention, where every beam of a source reads
   that source's keys); bias (H, keys) or NULL. Float32 throughout; the threads split the N x H
   (row, head) pairs. Returns 0, or -1 when H is not a multiple of G or keys is outside 1..slots
   (nothing is written then). */

#include <math.h>
#include <stddef.h>

int lmf_shared_history_attention(int N, int H, int G, int D, int keys, int slots, const float *q,
                                 const float *k_store, const float *v_store, const long long *owner,
                                 long long owner_stride, const long long *lengths, const float *bias,
                                 float scale, float *y, int threads) {
    if (G <= 0 || H % G != 0 || keys < 1 || keys > slots) return -1;
    const int per_group = H / G;
    const long long work = (long long)N * H * keys * D;
    #pragma omp parallel for num_threads(threads) schedule(static) if (work > 65536)
    for (int r = 0; r < N * H; r++) {
        const int n = r / H, h = r % H, g = h / per_group;
        const float *qr = q + (size_t)r * D;
        const long long *own = owner + (size_t)n * (owner_stride ? owner_stride : 1);
        const int seen = lengths && lengths[n] < keys ? (int)lengths[n] : keys;
        float w[keys];
        float top = -INFINITY, sum = 0.0f;
        for (int s = 0; s < seen; s++) {
            const float *ks = k_store + (((size_t)own[owner_stride ? s : 0] * G + g) * slots + s) * D;
            float a = 0.0f;
            #pragma omp simd reduction(+:a)
            for (int i = 0; i < D; i++) a += qr[i] * ks[i];
            w[s] = a * scale + (bias ? bias[(size_t)h * keys + s] : 0.0f);
            if (w[s] > top) top = w[s];
        }
        for (int s = 0; s < seen; s++) { w[s] = expf(w[s] - top); sum += w[s]; }
        float *yr = y + (size_t)r * D;
        for (int i = 0; i < D; i++) yr[i] = 0.0f;
        const float inv = 1.0f / sum;
        for (int s = 0; s < seen; s++) {
            const float *vs = v_store + (((size_t)own[owner_stride ? s : 0] * G + g) * slots + s) * D;
            const float p = w[s] * inv;
            #pragma omp simd
            for (int i = 0; i < D; i++) yr[i] += p * vs[i];
        }
    }
    return 0;
}
