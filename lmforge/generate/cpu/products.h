/* The matrix products of the compiled decode step (products.c), for decode_step.c.

   A weight (O, K) is row-major, as nn.Linear keeps it, in float32 or as integers with a scale per group
   of g inputs (lmforge/nn/quantized.py): int8 w = s q, or int4 w = s (u - z), two to a byte. */

#ifndef LMF_PRODUCTS_H
#define LMF_PRODUCTS_H

#include <stddef.h>

enum { MAX_ROWS = 16 };  /* rows per step; the caller splits larger batches */
enum { MAX_GROUPS = 1024 };  /* int4 groups per row (the caller checks) */

typedef struct {                 /* one weight matrix (O, K): f, or q8, or q4 is set */
    const float *f;              /* float32 (O, K) */
    const signed char *q8;       /* int8 (O, K) */
    const unsigned char *q4;     /* int4 (O, K/2): byte i of a group holds u[i] | u[i + g/2] << 4 */
    const float *scale, *zero;   /* (O, K/g); zero NULL: 0 for int8, 8 for int4 (symmetric) */
    int group;                   /* g */
} Weight;

/* Whether W's products take the input rows as bfloat16 (int4 in groups of a multiple of 64, on a CPU
   with AVX512-BF16); then lmf_to_bf16 prepares each input row once per product. */
int lmf_bf16_path(const Weight *W);

/* x (K floats) as W's bfloat16 layout into xb (K values, 2 bytes each, 64-byte aligned), and each
   group's sum of bf16(x) into xsum (K / g floats). */
void lmf_to_bf16(const Weight *W, const float *x, int K, void *xb, float *xsum);

/* acc[n * 4 + j] = W[o0 + j] . in[n] for j < nb <= 4 outputs and n < N <= MAX_ROWS rows. xsum: int4's
   group sums of the input row (one row, float32 path); rowbuf: room for 4 rows of K floats (several
   rows, or NULL); xb, xbsum: the N rows from lmf_to_bf16 (bfloat16 path, or NULL). */
void lmf_block_dots(const Weight *W, int o0, int nb, const float *in, int in_stride, int N, int K,
                    const float *xsum, float *rowbuf, const void *xb, const float *xbsum, float *acc);

#endif
