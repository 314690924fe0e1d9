/* CPU kernels for bf16 transformer inference (AVX-512; fp32 arithmetic, bf16 in and out).

   Built on first use by ``models/runtime/native/__init__.py`` with the system C compiler and
   ``-march=native``; without AVX-512 every entry point reports itself unavailable and callers keep
   their torch path.

   tl_attention_bf16: multi-head softmax attention for a batch of windows: qkv [B, T, 3, H, hd] bf16
   in (the query already scaled by 1/sqrt(hd)), out [B, T, H*hd] bf16, ready for the output
   projection. A pass takes two blocks of 16 queries of a head and keeps their queries and output
   accumulators in registers: scores against every key and their maximum, then exp(score - max) by
   a polynomial and `scalef`, the row sums and the weighted sum of values, in a second pass over the
   keys. The softmax is exact (max subtracted) and in fp32.

   tl_layernorm_bf16: LayerNorm over the last axis of [N, D] bf16 rows, fp32 statistics, fp32
   weight and bias. */
#include <stdint.h>
#include <stdlib.h>

#if defined(__AVX512F__)
#include <immintrin.h>

int tl_available(void) { return 1; }

static inline __m512 exp_neg(__m512 x) {  /* exp(x) for x <= 0: 2^n * p(f), rel. error < 3e-6; NaN stays NaN */
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);  /* exp(-104) is 0 in fp32; -inf -> 0; NaN (2nd operand) kept */
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);  /* in [-0.5, 0.5] */
    __m512 p = _mm512_set1_ps(1.3333558146e-3f);  /* Taylor series of 2^f to degree 5 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108665e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650696e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718056e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);  /* 2^n * p: 0 once n is below the smallest subnormal */
}

static inline __m512 load_bf16(const uint16_t *p) {  /* 16 bf16 -> 16 fp32 */
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

static inline uint16_t to_bf16(float f) {  /* round to nearest even; NaN stays NaN */
    union { float f; uint32_t u; } b = {f};
    if ((b.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b.u >> 16) | 0x40u);
    return (uint16_t)((b.u + 0x7fffu + ((b.u >> 16) & 1u)) >> 16);
}

#define HD 8  /* head width this kernel handles; the caller checks */
#define NB 2  /* query blocks of 16 per pass */

/* One window. qt [D][Tp] fp32 queries (transposed, Tp = T rounded up to 16 * NB), kv [T][2D] fp32 keys
   and values, sc [T][16 * NB] scratch. */
static void attend_window(const uint16_t *restrict qkv, uint16_t *restrict out, float *restrict qt,
                          float *restrict kv, float *restrict sc, int T, int H) {
    const int D = H * HD, Tp = (T + 16 * NB - 1) / (16 * NB) * (16 * NB);
    for (int i = 0; i < T; i++) {
        const uint16_t *row = qkv + (size_t)i * 3 * D;
        for (int c = 0; c < D; c++) {
            union { uint32_t u; float f; } b = {(uint32_t)row[c] << 16};
            qt[c * Tp + i] = b.f;
        }
        for (int c = 0; c + 16 <= 2 * D; c += 16) _mm512_storeu_ps(kv + (size_t)i * 2 * D + c, load_bf16(row + D + c));
    }
    for (int i = T; i < Tp; i++)
        for (int c = 0; c < D; c++) qt[c * Tp + i] = 0.0f;
    float o[HD][16];
    for (int h = 0; h < H; h++) {
        for (int i0 = 0; i0 < T; i0 += 16 * NB) {
            /* NB blocks of 16 queries at once: every broadcast key or value feeds NB FMAs */
            __m512 q[NB][HD], mx[NB];
            for (int b = 0; b < NB; b++) {
                mx[b] = _mm512_set1_ps(-3.0e38f);
                for (int d = 0; d < HD; d++) q[b][d] = _mm512_loadu_ps(qt + (h * HD + d) * Tp + i0 + 16 * b);
            }
            for (int j = 0; j < T; j++) {
                const float *k = kv + (size_t)j * 2 * D + h * HD;
                __m512 s[NB];
                for (int b = 0; b < NB; b++) s[b] = _mm512_mul_ps(_mm512_set1_ps(k[0]), q[b][0]);
                for (int d = 1; d < HD; d++) {
                    const __m512 kd = _mm512_set1_ps(k[d]);
                    for (int b = 0; b < NB; b++) s[b] = _mm512_fmadd_ps(kd, q[b][d], s[b]);
                }
                for (int b = 0; b < NB; b++) {
                    _mm512_storeu_ps(sc + (j * NB + b) * 16, s[b]);
                    mx[b] = _mm512_max_ps(mx[b], s[b]);
                }
            }
            __m512 acc[NB][HD], sum[NB];
            for (int b = 0; b < NB; b++) {
                sum[b] = _mm512_setzero_ps();
                for (int d = 0; d < HD; d++) acc[b][d] = _mm512_setzero_ps();
            }
            for (int j = 0; j < T; j++) {
                const float *v = kv + (size_t)j * 2 * D + D + h * HD;
                __m512 e[NB];
                for (int b = 0; b < NB; b++) {
                    e[b] = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(sc + (j * NB + b) * 16), mx[b]));
                    sum[b] = _mm512_add_ps(sum[b], e[b]);
                }
                for (int d = 0; d < HD; d++) {
                    const __m512 vd = _mm512_set1_ps(v[d]);
                    for (int b = 0; b < NB; b++) acc[b][d] = _mm512_fmadd_ps(vd, e[b], acc[b][d]);
                }
            }
            for (int b = 0; b < NB; b++) {
                const int base = i0 + 16 * b, n = T - base < 16 ? T - base : 16;
                if (n <= 0) break;
                const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum[b]);
                for (int d = 0; d < HD; d++) _mm512_storeu_ps(o[d], _mm512_mul_ps(acc[b][d], inv));
                for (int i = 0; i < n; i++) {
                    uint16_t *y = out + (size_t)(base + i) * D + h * HD;
                    for (int d = 0; d < HD; d++) y[d] = to_bf16(o[d][i]);
                }
            }
        }
    }
}

/* Returns 0; -1 for a shape this kernel does not handle (head width != 8, 2*D not a multiple of
   16), -2 when scratch memory cannot be had. */
int tl_attention_bf16(const uint16_t *qkv, uint16_t *out, int64_t B, int64_t T, int64_t H, int64_t hd) {
    if (hd != HD || (2 * H * HD) % 16 || T < 1) return -1;
    const int64_t D = H * HD, Tp = (T + 16 * NB - 1) / (16 * NB) * (16 * NB);
    float *w = aligned_alloc(64, sizeof(float) * (size_t)((D * Tp + 2 * D * T + 16 * NB * T + 15) / 16 * 16));
    if (!w) return -2;
    for (int64_t b = 0; b < B; b++)
        attend_window(qkv + b * T * 3 * D, out + b * T * D, w, w + D * Tp, w + D * Tp + 2 * D * T, (int)T, (int)H);
    free(w);
    return 0;
}

static inline void store_bf16(uint16_t *p, __m512 v) {  /* 16 fp32 -> 16 bf16, nearest even; NaN stays NaN */
    __m512i u = _mm512_castps_si512(v);
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                                     _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}

/* Returns 0, or -1 when D is not a multiple of 16 (or above 1024). */
int tl_layernorm_bf16(const uint16_t *x, const float *weight, const float *bias, uint16_t *out, int64_t N,
                      int64_t D, float eps) {
    if (D % 16 || D < 16 || D > 1024) return -1;
    const int nv = (int)(D / 16);
    __m512 v[64];
    for (int64_t r = 0; r < N; r++) {
        const uint16_t *row = x + r * D;
        __m512 s = _mm512_setzero_ps();
        for (int k = 0; k < nv; k++) s = _mm512_add_ps(s, v[k] = load_bf16(row + 16 * k));
        const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(s) / (float)D);
        __m512 q = _mm512_setzero_ps();
        for (int k = 0; k < nv; k++) {
            v[k] = _mm512_sub_ps(v[k], mean);
            q = _mm512_fmadd_ps(v[k], v[k], q);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / __builtin_sqrtf(_mm512_reduce_add_ps(q) / (float)D + eps));
        for (int k = 0; k < nv; k++)
            store_bf16(out + r * D + 16 * k, _mm512_fmadd_ps(_mm512_mul_ps(v[k], inv), _mm512_loadu_ps(weight + 16 * k),
                                                             _mm512_loadu_ps(bias + 16 * k)));
    }
    return 0;
}
#else
int tl_available(void) { return 0; }
int tl_layernorm_bf16(const uint16_t *x, const float *weight, const float *bias, uint16_t *out, int64_t N,
                      int64_t D, float eps) {
    (void)x; (void)weight; (void)bias; (void)out; (void)N; (void)D; (void)eps;
    return -1;
}
int tl_attention_bf16(const uint16_t *qkv, uint16_t *out, int64_t B, int64_t T, int64_t H, int64_t hd) {
    (void)qkv; (void)out; (void)B; (void)T; (void)H; (void)hd;
    return -1;
}
#endif
