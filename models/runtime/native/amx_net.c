/* The whole Conv1d+Transformer forward pass in one native call: bf16 matrix products on AMX tiles,
   everything else in AVX-512 fp32. Built with kernels.c into one library (see __init__.py).

   Same function as nets/conv_transformer.ConvTransformer in eval mode, arranged for Sapphire
   Rapids-class cores (one core: ~65 us a window, ~15k windows/s; torch bf16 with the AVX-512
   kernels ~160 us):

   - every matrix product (stem, QKV, output projection, both feed-forward layers, and per head
     q k^T and p v) is a bf16 x bf16 -> fp32 tile product; weights are packed once, when the net
     is made, into 1 KB tiles (16 output columns x 32 inputs); accumulators start at the bias;
   - windows go through each stage in groups of up to G, so weights stay in L1/L2 while 64 * G rows
     pass; the residual stream stays fp32 (the torch bf16 path keeps it in bf16);
   - each 32 x 32 block of a product gets its epilogue (GELU, residual add, the q/k/v tile layouts)
     while the next block is on the tiles: the vector units and the tile unit overlap; attention
     is pipelined the same way, one head's 16 queries at a time;
   - attention: scores come out of the tiles in base 2 (log2 e / sqrt(head_dim) is folded into the
     query weights), exp2 by a degree-3 polynomial and `scalef` (relative error 8e-5, below the
     bf16 rounding of the probabilities), and the row sums come from the same tile product as the
     weighted values (a column of ones next to v). The row maximum is not subtracted; a block where
     that fails (a row sum over 2^64 or under 2^-60) is recomputed exactly in scalar fp32;
   - GELU (the erf form) is a cubic per 1/32 of [-4.5, 4.5] (Hermite on erf's values and slopes,
     max abs error 2e-5, far below the bf16 rounding of its output), x above, ~0 below;
   - subnormals are flushed to zero during the call (MXCSR restored after).

   Constraints the caller checks through tl_net_new's return code: lookback 32 or 64 (a block's
   scores fill at most the four accumulator tiles), width and feed-forward width multiples of 32,
   head width 2, 4, 8 or 16, at most 12 layers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define G 8        /* windows per stage group */
#define GELU_R 4.5f
#define MAX_LAYERS 12

typedef uint16_t bf16;

typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b, eps1, eps2;
    bf16 *qkv_w, *proj_w, *ff1_w, *ff2_w;
    float *qkv_b, *proj_b, *ff1_b, *ff2_b;
} layer_t;

typedef struct {
    int64_t T, F, D, H, hd, FF, L, ks, C, Kp, NV;
    float clip, out_eps;
    float *mean, *inv_std, *stem_b, *pos, *out_w, *out_b, *head_w, *head_b;
    bf16 *stem_w;
    layer_t *layers;
    float gelu[4][32];   /* cubic coefficients c0..c3 (in x) per interval */
    void *blocks[16 + 12 * MAX_LAYERS];  /* every allocation, for tl_net_free: 12 per layer, 10 besides */
    int nblocks;
} net_t;

static inline bf16 to_bf16(float f) {  /* round to nearest even; NaN stays NaN */
    union { float f; uint32_t u; } b = {f};
    if ((b.u & 0x7fffffffu) > 0x7f800000u) return (bf16)((b.u >> 16) | 0x40u);
    return (bf16)((b.u + 0x7fffu + ((b.u >> 16) & 1u)) >> 16);
}

static void *take(net_t *n, size_t bytes) {
    if (n->nblocks >= (int)(sizeof n->blocks / sizeof n->blocks[0])) return NULL;
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p) { memset(p, 0, (bytes + 63) / 64 * 64); n->blocks[n->nblocks++] = p; }
    return p;
}

static float *copy_f(net_t *n, const float *src, size_t count) {
    float *p = take(n, count * sizeof(float));
    if (p) memcpy(p, src, count * sizeof(float));
    return p;
}

/* W [N][K] fp32 (a torch Linear's weight) -> tile blocks [N/16][Kp/2][16][2] bf16, zero past K. */
static bf16 *pack(net_t *n, const float *w, int64_t N, int64_t K, int64_t Kp) {
    bf16 *p = take(n, (size_t)N * Kp * sizeof(bf16));
    if (!p) return NULL;
    for (int64_t o = 0; o < N; o++)
        for (int64_t k = 0; k < K; k++)
            p[((o / 16) * (Kp / 2) + k / 2) * 32 + (o % 16) * 2 + (k % 2)] = to_bf16(w[o * K + k]);
    return p;
}

static double gelu_d(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double gelu_slope(double x) { return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI); }

static void gelu_table(net_t *n) {  /* Hermite cubic per interval, rewritten as a polynomial in x */
    const double h = 2.0 * GELU_R / 32.0;
    for (int i = 0; i < 32; i++) {
        const double a = -GELU_R + i * h, y0 = gelu_d(a), y1 = gelu_d(a + h), d0 = gelu_slope(a) * h,
                     d1 = gelu_slope(a + h) * h;
        /* p(t) = y0 + d0 t + (3(y1-y0) - 2 d0 - d1) t^2 + (2(y0-y1) + d0 + d1) t^3, t = (x - a) / h */
        const double e0 = y0, e1 = d0, e2 = 3 * (y1 - y0) - 2 * d0 - d1, e3 = 2 * (y0 - y1) + d0 + d1;
        const double s = 1.0 / h, s2 = s * s, s3 = s2 * s;  /* t = s x - s a */
        const double b = -s * a;
        n->gelu[0][i] = (float)(e0 + e1 * b + e2 * b * b + e3 * b * b * b);
        n->gelu[1][i] = (float)(e1 * s + 2 * e2 * s * b + 3 * e3 * s * b * b);
        n->gelu[2][i] = (float)(e2 * s2 + 3 * e3 * s2 * b);
        n->gelu[3][i] = (float)(e3 * s3);
    }
}

int tl_amx_available(void) {
    /* Linux hands out AMX tile state only on request, once per process */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

void tl_net_free(void *handle) {
    net_t *n = handle;
    if (!n) return;
    for (int i = 0; i < n->nblocks; i++) free(n->blocks[i]);
    free(n);
}

/* dims: T F D H FF L ks C; scalars: clip, out_eps, then eps1, eps2 per layer; arrays (fp32, torch
   layouts): mean, inv_std, stem_w [D][ks*F] (tap-major), stem_b, pos [T][D], then per layer ln1_w,
   ln1_b, qkv_w [3D][D] (query rows already scaled), qkv_b, proj_w, proj_b, ln2_w, ln2_b, ff1_w,
   ff1_b, ff2_w, ff2_b; then out_w, out_b, head_w [C][D], head_b.
   Returns 0 and the net in *out; -1 unsupported shape, -2 the kernel grants no AMX tile state,
   -3 out of memory (-4: this library was built without AMX). */
int tl_net_new(const int64_t *dims, const float *scalars, const float *const *arrays, void **out) {
    const int64_t T = dims[0], F = dims[1], D = dims[2], H = dims[3], FF = dims[4], L = dims[5], ks = dims[6],
                  C = dims[7];
    *out = NULL;
    if ((T != 32 && T != 64) || D % 32 || FF % 32 || H < 1 || D % H || L < 1 || L > MAX_LAYERS || ks < 1 || ks % 2 == 0 ||
        C < 1 || F < 1 || D > 1024 || FF > 4096)
        return -1;
    const int64_t hd = D / H;
    if (hd != 2 && hd != 4 && hd != 8 && hd != 16) return -1;
    if (!tl_amx_available()) return -2;
    net_t *n = calloc(1, sizeof(net_t));
    if (!n) return -3;
    n->T = T; n->F = F; n->D = D; n->H = H; n->hd = hd; n->FF = FF; n->L = L; n->ks = ks; n->C = C;
    n->Kp = (ks * F + 31) / 32 * 32;
    n->NV = (hd + 1 + 15) / 16;
    n->clip = scalars[0]; n->out_eps = scalars[1];
    int a = 0;
    int ok = 1;
#define NEXT_F(count) (ok &= (p_ = copy_f(n, arrays[a++], (size_t)(count))) != NULL, p_)
#define NEXT_W(N_, K_) (ok &= (w_ = pack(n, arrays[a++], (N_), (K_), (K_ + 31) / 32 * 32)) != NULL, w_)
    float *p_; bf16 *w_;
    n->mean = NEXT_F(F); n->inv_std = NEXT_F(F);
    ok &= (n->stem_w = pack(n, arrays[a++], D, ks * F, n->Kp)) != NULL;
    n->stem_b = NEXT_F(D); n->pos = NEXT_F(T * D);
    n->layers = take(n, sizeof(layer_t) * (size_t)L);
    if (!n->layers) { tl_net_free(n); return -3; }
    for (int64_t l = 0; l < L; l++) {
        layer_t *y = &n->layers[l];
        y->eps1 = scalars[2 + 2 * l]; y->eps2 = scalars[3 + 2 * l];
        y->ln1_w = NEXT_F(D); y->ln1_b = NEXT_F(D);
        y->qkv_w = NEXT_W(3 * D, D); y->qkv_b = NEXT_F(3 * D);
        y->proj_w = NEXT_W(D, D); y->proj_b = NEXT_F(D);
        y->ln2_w = NEXT_F(D); y->ln2_b = NEXT_F(D);
        y->ff1_w = NEXT_W(FF, D); y->ff1_b = NEXT_F(FF);
        y->ff2_w = NEXT_W(D, FF); y->ff2_b = NEXT_F(D);
    }
    n->out_w = NEXT_F(D); n->out_b = NEXT_F(D);
    n->head_w = NEXT_F(C * D); n->head_b = NEXT_F(C);
#undef NEXT_F
#undef NEXT_W
    if (!ok) { tl_net_free(n); return -3; }
    gelu_table(n);
    *out = n;
    return 0;
}

/* ---- the pieces of the forward pass ---------------------------------------------------------- */

typedef struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } tilecfg_t;

static void tiles_on(void) {  /* every tile 16 rows x 64 bytes */
    tilecfg_t c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) { c.rows[t] = 16; c.colsb[t] = 64; }
    _tile_loadconfig(&c);
}

static inline float bf16_f(bf16 v) {
    union { uint32_t u; float f; } b = {(uint32_t)v << 16};
    return b.f;
}

static inline void store2_bf16(bf16 *p, __m512 lo, __m512 hi) {  /* 32 fp32 -> 32 bf16, nearest even */
    _mm512_storeu_si512(p, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

typedef struct { __m512 lo0, hi0, lo1, hi1, lo2, hi2, lo3, hi3; } gelu_regs;

static inline __m512 gelu(__m512 x, const gelu_regs *g) {
    /* operand order keeps NaN: max/min return their second operand when either is NaN */
    const __m512 xc = _mm512_min_ps(_mm512_set1_ps(GELU_R - 1e-4f), _mm512_max_ps(_mm512_set1_ps(-GELU_R), x));
    const __m512i i = _mm512_cvttps_epi32(_mm512_fmadd_ps(xc, _mm512_set1_ps(32.0f / (2 * GELU_R)),
                                                          _mm512_set1_ps(16.0f)));
    const __m512 c3 = _mm512_permutex2var_ps(g->lo3, i, g->hi3), c2 = _mm512_permutex2var_ps(g->lo2, i, g->hi2);
    const __m512 c1 = _mm512_permutex2var_ps(g->lo1, i, g->hi1), c0 = _mm512_permutex2var_ps(g->lo0, i, g->hi0);
    const __m512 p = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_fmadd_ps(c3, xc, c2), xc, c1), xc, c0);
    return _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(x, _mm512_set1_ps(GELU_R), _CMP_GE_OQ), x);
}

enum { EPI_QKV, EPI_GELU_BF16, EPI_RESIDUAL, EPI_STEM };

typedef struct {
    int kind;
    void *out;            /* bf16 [M][ldo] (EPI_QKV: the queries' columns only) or, for EPI_RESIDUAL
                             and EPI_STEM, the fp32 stream h [M][ldo] */
    int64_t ldo;
    const float *pos;     /* EPI_STEM: [T][N] added after the GELU */
    int64_t T;
    const gelu_regs *g;
    bf16 *kp, *vp;        /* EPI_QKV: keys and values in their tile layouts, per window (attend) */
    int64_t D, H, hd, W;
} epilogue_t;

/* 16 x 16 dwords: r[i][j] -> r[j][i], by swapping off-diagonal blocks of 8, 4, 2, 1 */
static inline void transpose16(__m512i r[16]) {
    static const int32_t idx[4][2][16] = {
        {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}},
        {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}, {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}},
        {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}, {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}},
        {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}, {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}}};
    for (int s = 0, b = 8; s < 4; s++, b /= 2) {
        const __m512i va = _mm512_loadu_si512(idx[s][0]), vb = _mm512_loadu_si512(idx[s][1]);
        for (int i = 0; i < 16; i++)
            if (!(i & b)) {
                const __m512i x = r[i], y = r[i + b];
                r[i] = _mm512_permutex2var_epi32(x, va, y);
                r[i + b] = _mm512_permutex2var_epi32(x, vb, y);
            }
    }
}

/* A 32 x 32 block of q, k or v (32 tokens of one window, bias included): queries to the qkv rows
   (their tiles load from there), keys transposed in pairs of dims into kp [H][T/16][16 pairs][16
   keys][2], values interleaved in pairs of tokens into vp [H][T/2][W][2] (W: the values, a column
   of ones, zeros; the ones and zeros are written once, with the scratch). */
static inline void qkv_block(const epilogue_t *e, float (*blk)[32], int64_t m, int64_t nn) {
    const int64_t D = e->D, T = e->T, hd = e->hd, W = e->W, H = e->H, w = m / T, t0 = m % T;
    if (nn < D) {
        for (int r = 0; r < 32; r++)
            store2_bf16((bf16 *)e->out + (m + r) * e->ldo + nn, _mm512_loadu_ps(blk[r]), _mm512_loadu_ps(blk[r] + 16));
    } else if (nn < 2 * D) {
        bf16 *kw = e->kp + w * H * T * 32;
        const int64_t u0 = (nn - D) / 2;
        for (int j0 = 0; j0 < 32; j0 += 16) {
            __m512i r[16];
            for (int j = 0; j < 16; j++)
                r[j] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(blk[j0 + j] + 16), _mm512_loadu_ps(blk[j0 + j]));
            transpose16(r);
            const int64_t b = (t0 + j0) / 16;
            for (int u = 0; u < 16; u++) {
                const int64_t unit = u0 + u, h = unit / (hd / 2), p = unit % (hd / 2);
                _mm512_storeu_si512(kw + ((h * (T / 16) + b) * 16 + p) * 32, r[u]);
            }
        }
    } else {
        static const uint16_t zip[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                         8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
        const __m512i iz = _mm512_loadu_si512(zip);
        const __mmask32 vmask = (__mmask32)((1ull << (2 * hd)) - 1);
        bf16 *vw = e->vp + w * H * (T / 2) * W * 2;
        const int64_t c0 = nn - 2 * D;
        for (int r = 0; r < 32; r += 2) {
            const int64_t pr = (t0 + r) / 2;
            for (int half = 0; half < 32; half += 16) {
                const __m512i y = _mm512_permutexvar_epi16(
                    iz, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(blk[r + 1] + half), _mm512_loadu_ps(blk[r] + half)));
                for (int64_t c = 0; c < 16; c += hd) {  /* head (c0 + half + c) / hd: words 2c .. 2c + 2hd */
                    bf16 *dst = vw + (((c0 + half + c) / hd * (T / 2) + pr) * W) * 2;
                    _mm512_mask_storeu_epi16(dst - 2 * c, vmask << (2 * c), y);
                }
            }
        }
    }
}

static inline void epilogue_block(const epilogue_t *e, float (*blk)[32], int64_t m, int64_t nn, int64_t N) {
    if (e->kind == EPI_QKV) {
        qkv_block(e, blk, m, nn);
        return;
    }
    for (int r = 0; r < 32; r++) {
        const int64_t row = m + r;
        __m512 lo = _mm512_loadu_ps(blk[r]), hi = _mm512_loadu_ps(blk[r] + 16);
        if (e->kind == EPI_RESIDUAL) {
            float *h = (float *)e->out + row * e->ldo + nn;
            _mm512_storeu_ps(h, _mm512_add_ps(_mm512_loadu_ps(h), lo));
            _mm512_storeu_ps(h + 16, _mm512_add_ps(_mm512_loadu_ps(h + 16), hi));
        } else if (e->kind == EPI_STEM) {
            float *h = (float *)e->out + row * e->ldo + nn;
            const float *p = e->pos + (row % e->T) * N + nn;
            _mm512_storeu_ps(h, _mm512_add_ps(gelu(lo, e->g), _mm512_loadu_ps(p)));
            _mm512_storeu_ps(h + 16, _mm512_add_ps(gelu(hi, e->g), _mm512_loadu_ps(p + 16)));
        } else {
            store2_bf16((bf16 *)e->out + row * e->ldo + nn, gelu(lo, e->g), gelu(hi, e->g));
        }
    }
}

/* A [M][K] bf16 (row stride lda) x packed B + bias, then the epilogue on each 32 x 32 block while it
   is in L1. The epilogue of one block is placed after the tile products of the next, so the
   vector units work while the tile unit does. M % 32 == 0, N % 32 == 0, K % 32 == 0. */
static void matmul(const bf16 *A, int64_t lda, int64_t M, const bf16 *B, const float *bias, int64_t N, int64_t K,
                   const epilogue_t *e) {
    const int64_t kb = K / 2 * 32;  /* words per 16-column block of B */
    float blk[2][32][32];
    int64_t pm = -1, pn = 0;        /* the block whose epilogue is pending */
    int cur = 0;
    for (int64_t m = 0; m < M; m += 32)
        for (int64_t nn = 0; nn < N; nn += 32) {
            const bf16 *b0 = B + (nn / 16) * kb, *b1 = b0 + kb;
            _tile_loadd(0, bias + nn, 0); _tile_loadd(1, bias + nn + 16, 0);   /* every row starts at the bias */
            _tile_loadd(2, bias + nn, 0); _tile_loadd(3, bias + nn + 16, 0);
            for (int64_t k = 0; k < K; k += 32) {
                _tile_loadd(4, A + m * lda + k, lda * 2);
                _tile_loadd(5, A + (m + 16) * lda + k, lda * 2);
                _tile_loadd(6, b0 + k / 2 * 32, 64);
                _tile_loadd(7, b1 + k / 2 * 32, 64);
                _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
            }
            if (pm >= 0) epilogue_block(e, blk[cur ^ 1], pm, pn, N);
            _tile_stored(0, &blk[cur][0][0], 128); _tile_stored(1, &blk[cur][0][16], 128);
            _tile_stored(2, &blk[cur][16][0], 128); _tile_stored(3, &blk[cur][16][16], 128);
            pm = m; pn = nn; cur ^= 1;
        }
    if (pm >= 0) epilogue_block(e, blk[cur ^ 1], pm, pn, N);
}

/* Lane r of the result: the sum of v[r]'s lanes. Four halving steps, each adding the two halves
   of a pair of vectors side by side, so 16 rows cost 30 permutes and 15 adds (a horizontal sum
   per row: 16 x 8 dependent steps). */
static inline __m512 fold16(__m512 v[16]) {
    static const int32_t lo_idx[4][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
        {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}, {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
    static const int32_t hi_idx[4][16] = {
        {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}, {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}, {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
    int n = 16;
    for (int s = 0; s < 4; s++) {
        const __m512i il = _mm512_loadu_si512(lo_idx[s]), ih = _mm512_loadu_si512(hi_idx[s]);
        n /= 2;
        for (int i = 0; i < n; i++)
            v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[i], il, v[i + n]), _mm512_permutex2var_ps(v[i], ih, v[i + n]));
    }
    return v[0];
}

/* LayerNorm of fp32 rows [M][D] (M % 16 == 0) into bf16 rows, 16 rows at a time (fold16). */
static void layer_norm(const float *x, int64_t M, int64_t D, const float *w, const float *b, float eps, bf16 *y) {
    float mean[16], inv[16];
    for (int64_t r0 = 0; r0 < M; r0 += 16) {
        const float *blk = x + r0 * D;
        __m512 v[16];
        for (int r = 0; r < 16; r++) {
            __m512 s = _mm512_loadu_ps(blk + r * D);
            for (int64_t k = 16; k < D; k += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(blk + r * D + k));
            v[r] = s;
        }
        float sums[16];
        _mm512_storeu_ps(sums, _mm512_mul_ps(fold16(v), _mm512_set1_ps(1.0f / (float)D)));
        for (int r = 0; r < 16; r++) mean[r] = sums[r];
        for (int r = 0; r < 16; r++) {
            const __m512 mu = _mm512_set1_ps(mean[r]);
            __m512 q = _mm512_setzero_ps();
            for (int64_t k = 0; k < D; k += 16) {
                const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(blk + r * D + k), mu);
                q = _mm512_fmadd_ps(d, d, q);
            }
            v[r] = q;
        }
        const __m512 var = _mm512_fmadd_ps(fold16(v), _mm512_set1_ps(1.0f / (float)D), _mm512_set1_ps(eps));
        _mm512_storeu_ps(sums, _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(var)));
        for (int r = 0; r < 16; r++) inv[r] = sums[r];
        for (int r = 0; r < 16; r++) {
            const __m512 mu = _mm512_set1_ps(mean[r]), iv = _mm512_set1_ps(inv[r]);
            const float *row = blk + r * D;
            for (int64_t k = 0; k < D; k += 32)
                store2_bf16(y + (r0 + r) * D + k,
                            _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + k), mu), iv),
                                            _mm512_loadu_ps(w + k), _mm512_loadu_ps(b + k)),
                            _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + k + 16), mu), iv),
                                            _mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(b + k + 16)));
        }
    }
}

static inline __m512 exp2_ps(__m512 s) {  /* 2^s; NaN stays NaN; far below -126 gives 0 */
    const __m512 r = _mm512_roundscale_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(s, r);
    __m512 p = _mm512_set1_ps(0.05508877f);  /* 2^f on [-1/2, 1/2], relative error 8e-5 (bf16 keeps 2^-9) */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24260466f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6932763f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999289f));
    return _mm512_scalef_ps(p, r);
}

/* exp2 of a block's scores S [16][T] into P [16][T] bf16 */
static void softmax_block(const float *S, bf16 *P, int64_t T) {
    for (int r = 0; r < 16; r++)
        for (int64_t j = 0; j < T; j += 32)
            store2_bf16(P + r * T + j, exp2_ps(_mm512_loadu_ps(S + r * T + j)), exp2_ps(_mm512_loadu_ps(S + r * T + j + 16)));
}

/* A block whose row sums came out unusable (a sum under 2^-60: every score far below 0; or over
   2^64: a score above ~58, where the weighted values could overflow fp32 before the division):
   the exact softmax in scalar fp32 with each row's maximum subtracted. Never seen on real
   windows; there for correctness. */
__attribute__((cold, noinline)) static void attend_exact(const net_t *n, const bf16 *qkv, const bf16 *kp, const bf16 *vp,
                                                        int64_t h, int64_t q0, bf16 *att) {
    const int64_t T = n->T, D = n->D, hd = n->hd, D3 = 3 * D, W = n->NV * 16;
    float s[64], o[16];
    for (int64_t r = q0; r < q0 + 16; r++) {
        float m = -INFINITY;
        for (int64_t j = 0; j < T; j++) {
            float acc = 0.0f;
            for (int64_t d = 0; d < hd; d++)
                acc += bf16_f(qkv[r * D3 + h * hd + d]) *
                       bf16_f(kp[((h * (T / 16) + j / 16) * 16 + d / 2) * 32 + (j % 16) * 2 + d % 2]);
            s[j] = acc;
            if (acc > m) m = acc;
        }
        float sum = 0.0f;
        for (int64_t d = 0; d < hd; d++) o[d] = 0.0f;
        for (int64_t j = 0; j < T; j++) {
            const float e = exp2f(s[j] - m);
            sum += e;
            for (int64_t d = 0; d < hd; d++) o[d] += e * bf16_f(vp[((h * (T / 2) + j / 2) * W + d) * 2 + j % 2]);
        }
        for (int64_t d = 0; d < hd; d++) att[r * D + h * hd + d] = to_bf16(o[d] / sum);
    }
}

/* Scores of block i = (head, 16 queries) into tiles 0-3 (one per 16 keys); T <= 64 here. */
static inline void scores_issue(const net_t *n, const bf16 *qkv, const bf16 *kp, int64_t i) {
    const int64_t T = n->T, D = n->D, h = i / (T / 16), q0 = i % (T / 16) * 16;
    const bf16 *kb = kp + h * (T / 16) * 512;
    /* the query tile: 32 columns from this head's first dim; the key tiles' pairs past hd/2 are
       zero, so the other heads' (and keys') columns it also holds add nothing */
    _tile_loadd(4, qkv + q0 * 3 * D + h * n->hd, 3 * D * 2);
    _tile_zero(0); _tile_loadd(6, kb, 64); _tile_dpbf16ps(0, 4, 6);
    if (T > 16) { _tile_zero(1); _tile_loadd(7, kb + 512, 64); _tile_dpbf16ps(1, 4, 7); }
    if (T > 32) { _tile_zero(2); _tile_loadd(6, kb + 1024, 64); _tile_dpbf16ps(2, 4, 6); }
    if (T > 48) { _tile_zero(3); _tile_loadd(7, kb + 1536, 64); _tile_dpbf16ps(3, 4, 7); }
}

static inline void scores_store(int64_t T, float *S) {
    _tile_stored(0, S, T * 4);
    if (T > 16) _tile_stored(1, S + 16, T * 4);
    if (T > 32) _tile_stored(2, S + 32, T * 4);
    if (T > 48) _tile_stored(3, S + 48, T * 4);
}

/* Block i's weighted values and row sums, O [16][NV*16] */
static inline void values(const net_t *n, const bf16 *P, const bf16 *vp, int64_t i, float *O) {
    const int64_t T = n->T, W = n->NV * 16, h = i / (T / 16);
    for (int64_t v = 0; v < n->NV; v++) {
        _tile_zero(4);
        for (int64_t k0 = 0; k0 < T; k0 += 32) {
            _tile_loadd(5, P + k0, T * 2);
            _tile_loadd(6, vp + (h * (T / 2) + k0 / 2) * W * 2 + v * 32, W * 4);
            _tile_dpbf16ps(4, 5, 6);
        }
        _tile_stored(4, O + v * 16, W * 4);
    }
}

/* O / row sums into att for block i, or the exact path when a sum is unusable */
static inline void normalize(const net_t *n, const float *O, const bf16 *qkv, const bf16 *kp, const bf16 *vp, int64_t i,
                             bf16 *att) {
    const int64_t T = n->T, D = n->D, hd = n->hd, W = n->NV * 16, h = i / (T / 16), q0 = i % (T / 16) * 16;
    const __m512i sum_at = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                               _mm512_set1_epi32((int)W)), _mm512_set1_epi32((int)hd));
    const __m512 sums = _mm512_i32gather_ps(sum_at, O, 4);
    /* a row sum outside [2^-60, 2^64]: weights that underflow, or that (times the values) may
       overflow fp32; NaN passes: it propagates, as in torch */
    if (_mm512_cmp_ps_mask(sums, _mm512_set1_ps(8.67361738e-19f), _CMP_LT_OQ) |
        _mm512_cmp_ps_mask(sums, _mm512_set1_ps(1.84467441e19f), _CMP_GT_OQ)) {
        attend_exact(n, qkv, kp, vp, h, q0, att);
        return;
    }
    float inv[16];
    _mm512_storeu_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), sums));
    const __mmask16 omask = (__mmask16)((1u << hd) - 1);
    for (int r = 0; r < 16; r++) {
        const __m256i y = (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(O + r * W), _mm512_set1_ps(inv[r])));
        _mm256_mask_storeu_epi16(att + (q0 + r) * D + h * hd, omask, y);
    }
}

/* One window's attention into att [T][D] bf16 (the output projection's input), block by block
   (a head's 16 queries), software-pipelined so the vector units and the tile unit overlap: while
   block i's softmax runs, block i + 1's scores are on the tiles; while block i's weighted sums
   are, block i - 1 is normalized. Scores are base 2 (log2 e is in the query weights) and the
   row maximum is not subtracted (normalize falls back to the exact path when that fails). */
static void attend(const net_t *n, const bf16 *qkv, const bf16 *kp, const bf16 *vp, float *S, bf16 *P, float *O,
                   bf16 *att) {
    const int64_t T = n->T, W = n->NV * 16, NB = n->H * (T / 16);
    float *Sb[2] = {S, S + 16 * T}, *Ob[2] = {O, O + 16 * W};
    scores_issue(n, qkv, kp, 0);
    scores_store(T, Sb[0]);
    for (int64_t i = 0; i < NB; i++) {
        if (i + 1 < NB) scores_issue(n, qkv, kp, i + 1);
        softmax_block(Sb[i & 1], P, T);
        if (i + 1 < NB) scores_store(T, Sb[(i + 1) & 1]);
        values(n, P, vp, i, Ob[i & 1]);
        if (i > 0) normalize(n, Ob[(i - 1) & 1], qkv, kp, vp, i - 1, att);
    }
    normalize(n, Ob[(NB - 1) & 1], qkv, kp, vp, NB - 1, att);
}

/* ---- the forward pass ------------------------------------------------------------------------ */

typedef struct { float *h; bf16 *a, *f, *qkv, *kp, *vp, *P; float *S, *O; void *mem; } scratch_t;

/* Buffers for groups of up to g windows (zeroed: the padding of kp and vp is never written again) */
static int scratch_new(const net_t *n, scratch_t *s, int64_t g) {
    const int64_t M = g * n->T, T = n->T, D = n->D, W = n->NV * 16;
    const int64_t a_w = n->Kp > D ? n->Kp : D;
    /* the qkv rows get 32 spare columns: a query tile of the last head reads past its row */
    size_t sizes[9] = {M * D * 4, M * a_w * 2, M * n->FF * 2, (M * 3 * D + 32) * 2, g * n->H * T * 32 * 2,
                       g * n->H * (T / 2) * W * 4, 16 * T * 2, 2 * 16 * T * 4, 2 * 16 * W * 4};
    size_t total = 0;
    for (int i = 0; i < 9; i++) total += (sizes[i] + 127) / 64 * 64;
    char *m = aligned_alloc(64, total);
    if (!m) return -1;
    memset(m, 0, total);
    void *parts[9];
    char *p = m;
    for (int i = 0; i < 9; i++) { parts[i] = p; p += (sizes[i] + 127) / 64 * 64; }
    s->h = parts[0]; s->a = parts[1]; s->f = parts[2]; s->qkv = parts[3]; s->kp = parts[4]; s->vp = parts[5];
    s->P = parts[6]; s->S = parts[7]; s->O = parts[8]; s->mem = m;
    for (int64_t h = 0; h < g * n->H; h++)  /* the ones column next to every head's values */
        for (int64_t pr = 0; pr < T / 2; pr++) {
            s->vp[((h * (T / 2) + pr) * W + n->hd) * 2] = 0x3f80;
            s->vp[((h * (T / 2) + pr) * W + n->hd) * 2 + 1] = 0x3f80;
        }
    return 0;
}

/* g windows of x [g][T][F] -> logits [g][C]; g <= G. Every stage runs over the g * T rows only,
   so a single window costs one window's work. */
static void forward_group(const net_t *n, const float *x, int64_t g, float *logits, scratch_t *s, const gelu_regs *gr) {
    const int64_t T = n->T, F = n->F, D = n->D, FF = n->FF, Kp = n->Kp, M = g * T, pad = n->ks / 2;
    const int64_t a_w = Kp > D ? Kp : D;
    /* stem input: standardized, clamped taps t - pad .. t + pad side by side, zero outside the window */
    memset(s->a, 0, (size_t)M * a_w * 2);
    for (int64_t w = 0; w < g; w++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t k = 0; k < n->ks; k++) {
                const int64_t src = t + k - pad;
                if (src < 0 || src >= T) continue;
                const float *xr = x + (w * T + src) * F;
                bf16 *dst = s->a + (w * T + t) * Kp + k * F;
                for (int64_t f = 0; f < F; f++) {
                    float v = (xr[f] - n->mean[f]) * n->inv_std[f];
                    v = v < -n->clip ? -n->clip : (v > n->clip ? n->clip : v);  /* NaN passes, as torch's clamp */
                    dst[f] = to_bf16(v);
                }
            }
    const epilogue_t stem = {EPI_STEM, s->h, D, n->pos, T, gr, NULL, NULL, D, n->H, n->hd, 0},
                     resid = {EPI_RESIDUAL, s->h, D, NULL, T, gr, NULL, NULL, D, n->H, n->hd, 0},
                     to_f = {EPI_GELU_BF16, s->f, FF, NULL, T, gr, NULL, NULL, D, n->H, n->hd, 0},
                     to_qkv = {EPI_QKV, s->qkv, 3 * D, NULL, T, gr, s->kp, s->vp, D, n->H, n->hd, n->NV * 16};
    matmul(s->a, Kp, M, n->stem_w, n->stem_b, D, Kp, &stem);
    for (int64_t l = 0; l < n->L; l++) {
        const layer_t *y = &n->layers[l];
        layer_norm(s->h, M, D, y->ln1_w, y->ln1_b, y->eps1, s->a);
        matmul(s->a, D, M, y->qkv_w, y->qkv_b, 3 * D, D, &to_qkv);
        for (int64_t w = 0; w < g; w++)
            attend(n, s->qkv + w * T * 3 * D, s->kp + w * n->H * T * 32, s->vp + w * n->H * (T / 2) * n->NV * 32,
                   s->S, s->P, s->O, s->a + w * T * D);
        matmul(s->a, D, M, y->proj_w, y->proj_b, D, D, &resid);
        layer_norm(s->h, M, D, y->ln2_w, y->ln2_b, y->eps2, s->a);
        matmul(s->a, D, M, y->ff1_w, y->ff1_b, FF, D, &to_f);
        matmul(s->f, FF, M, y->ff2_w, y->ff2_b, D, FF, &resid);
    }
    /* mean over time, LayerNorm, head: fp32 */
    float pooled[1024];
    for (int64_t w = 0; w < g; w++) {
        double mean = 0.0, var = 0.0;
        for (int64_t j = 0; j < D; j++) {
            float acc = 0.0f;
            for (int64_t t = 0; t < T; t++) acc += s->h[(w * T + t) * D + j];
            pooled[j] = acc / (float)T;
            mean += pooled[j];
        }
        mean /= (double)D;
        for (int64_t j = 0; j < D; j++) var += (pooled[j] - mean) * (pooled[j] - mean);
        const float inv = (float)(1.0 / sqrt(var / (double)D + n->out_eps));
        for (int64_t j = 0; j < D; j++) pooled[j] = (float)(pooled[j] - mean) * inv * n->out_w[j] + n->out_b[j];
        for (int64_t c = 0; c < n->C; c++) {
            float z = n->head_b[c];
            for (int64_t j = 0; j < D; j++) z += n->head_w[c * D + j] * pooled[j];
            logits[w * n->C + c] = z;
        }
    }
}

/* x [B][T][F] fp32 -> logits [B][C] fp32. Returns 0, or -3 when scratch memory cannot be had.
   Thread-safe: each call has its own scratch and tile state. */
int tl_net_forward(const void *handle, const float *x, int64_t B, float *logits) {
    const net_t *n = handle;
    scratch_t s;
    if (scratch_new(n, &s, B < G ? B : G)) return -3;
    gelu_regs gr = {_mm512_loadu_ps(n->gelu[0]), _mm512_loadu_ps(n->gelu[0] + 16), _mm512_loadu_ps(n->gelu[1]),
                    _mm512_loadu_ps(n->gelu[1] + 16), _mm512_loadu_ps(n->gelu[2]), _mm512_loadu_ps(n->gelu[2] + 16),
                    _mm512_loadu_ps(n->gelu[3]), _mm512_loadu_ps(n->gelu[3] + 16)};
    /* flush subnormal results to zero and read subnormal inputs as zero while this call runs: a
       softmax weight below 2^-126 is 0 to a bf16 sum anyway, and each subnormal costs a microcode
       assist (measured: real windows ran 1.5x slower than random ones without this) */
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);
    tiles_on();
    for (int64_t b = 0; b < B; b += G) {
        const int64_t g = B - b < G ? B - b : G;
        forward_group(n, x + b * n->T * n->F, g, logits + b * n->C, &s, &gr);
    }
    _tile_release();
    _mm_setcsr(csr);
    free(s.mem);
    return 0;
}
#else
int tl_amx_available(void) { return 0; }
int tl_net_new(const int64_t *dims, const float *scalars, const float *const *arrays, void **out) {
    (void)dims; (void)scalars; (void)arrays;
    *out = 0;
    return -4;  /* built without AMX: the CPU or the compiler lacks it */
}
void tl_net_free(void *handle) { (void)handle; }
int tl_net_forward(const void *handle, const float *x, int64_t B, float *logits) {
    (void)handle; (void)x; (void)B; (void)logits;
    return -2;
}
#endif
