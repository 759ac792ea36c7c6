#ifndef MAE_CPRODUCTS_H
#define MAE_CPRODUCTS_H

#include <stdint.h>

/// Matrix products with bf16 inputs and fp32 accumulation and output through oneDNN's
/// matmul primitive, which Swift can reach only through dozens of C structs, thread-local
/// state and OpenMP's per-thread settings: kept in C, behind a few calls.

/// Products of at most this many multiply-adds (m·n·k) skip oneDNN: they run on our own
/// VDPBF16PS kernel (small_products.c; the same instruction as oneDNN's), or, on a CPU
/// without AVX512_BF16, on OpenBLAS's fp32 kernel from operands rounded to bf16 (exact
/// products, fp32 sums) (products.c). The products the model runs in one call
/// (`bfloat16Blocks`: under 2²¹ multiply-adds) are all this small; measured on Zen 4, our
/// kernel ran them 0–47 % faster than oneDNN's (docs/PERFORMANCE.md).
#define MAE_BF16_SMALL_PRODUCT_LIMIT (1 << 21)

/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c (row-major; beta 0 or 1), with
/// op(a) and op(b) rounded to bf16 (to nearest, ties to even) and products summed in fp32.
///
/// Each operand is fp32 (`a_is_bf16` 0: rounded into a thread-local buffer first) or
/// already bf16 (1). The call runs on the calling thread alone (OpenMP's thread count
/// for this thread is set to 1 on its first call). The primitive for each distinct
/// shape is created once and kept. Returns 0, or -1 with a message in
/// `mae_products_error()` when oneDNN cannot run the product (for example on a CPU
/// without AVX512_BF16 where it has no bf16 kernel).
int mae_bf16_matmul(float *c, long ldc,
                    const void *a, int a_is_bf16, long lda, int transpose_a,
                    const void *b, int b_is_bf16, long ldb, int transpose_b,
                    long m, long n, long k, float alpha, float beta);

/// As `mae_bf16_matmul` with fp32 inputs and oneDNN's fp32 kernels: for `mae bench products`,
/// which measures it against OpenBLAS (the model does not use it).
int mae_f32_matmul_onednn(float *c, long ldc, const float *a, long lda, int transpose_a,
                          const float *b, long ldb, int transpose_b, long m, long n, long k, float alpha, float beta);

/// A buffer of `count` bf16 values belonging to the calling thread, valid until its next
/// call here: where a caller rounds an operand once for products its workers share.
/// NULL when memory runs out.
uint16_t *mae_bf16_thread_buffer(long count);

/// A bf16 product cut into blocks of rows of c that share one packed b: oneDNN's kernels
/// read b in a layout of their own (pairs of k interleaved, in blocks of columns), and a
/// plain b is packed into it by every call, so each block would pack all of b again.
/// Packed once (`mae_bf16_pack_b_columns`, or `mae_bf16_pack_b` for a layout our packer does
/// not write), b serves every block (`mae_bf16_matmul_packed_b`).
/// The layout is the one oneDNN chooses for the full blocks; the last, shorter block
/// takes the same (`mae_bf16_blocks_share_packed_b` checks that oneDNN accepts it).
typedef struct {
    long block_rows, n, k;   // rows of the full blocks; op(b) is [k, n]
    int a_is_bf16;           // the blocks' a: fp32 to round (0) or bf16 (1)
    int transpose_a;         // a stored [k, m] (its block: columns of it)
    int transpose_b;         // b stored [n, k]
    int c_is_dense;          // ldc == n
    float alpha, beta;       // beta 0 or 1
} mae_bf16_row_blocks;

/// 1 when the blocks can share one packed b, the last block of `last_block_rows` rows too;
/// 0 when they cannot (then each block takes b as stored).
int mae_bf16_blocks_share_packed_b(const mae_bf16_row_blocks *blocks, long last_block_rows);

/// The calling thread's buffer for b packed for `blocks`, valid until this thread's next
/// call here; other threads may read and fill it meanwhile. NULL when memory runs out.
void *mae_bf16_packing_buffer(const mae_bf16_row_blocks *blocks);

/// The blocks of 64 columns of op(b) that `mae_bf16_pack_b_columns` packs for `blocks`
/// (threads may share them out), or 0 when oneDNN chose a layout our packer does not
/// write: then `mae_bf16_pack_b` packs b.
long mae_bf16_packing_column_blocks(const mae_bf16_row_blocks *blocks);

/// Whether `mae_bf16_packing_column_blocks` offers our packer (1, the default) or leaves
/// every packing to oneDNN's reorder (0): for tests of the reorder's path, which this
/// CPU would not take otherwise. Both write the same packed bytes, so no result changes.
void mae_bf16_use_own_packer(int enabled);

/// 1 when the small products run on AMX tiles (small_products_amx.c): the CPU has AMX-BF16,
/// Linux granted this process the tile state, oneDNN's `ONEDNN_MAX_CPU_ISA` (if set) allows
/// AMX, and `mae_bf16_use_amx` has not turned them off on the calling thread. The choice
/// depends on the CPU (and that variable) alone, as every other of these kernels' does.
int mae_bf16_amx_available(void);

/// Whether the small products that the calling thread runs may take AMX tiles (1, the
/// default) or take the VDPBF16PS tiles (0): for tests of both on a CPU with AMX. The two
/// sum in other orders, so results differ in their last bits; so the switch is the calling
/// thread's alone (a test's products on one thread), never the process's, and only tests
/// use it.
void mae_bf16_use_amx(int enabled);

/// b (stored [k, n], or [n, k] when `blocks->transpose_b`, leading dimension ldb; fp32,
/// rounded to bf16 as it goes, or bf16) packed into `packed`: its column blocks
/// first_block ..< first_block + block_count of 64 (`mae_bf16_packing_column_blocks`).
void mae_bf16_pack_b_columns(const mae_bf16_row_blocks *blocks, void *packed, const void *b, int b_is_bf16, long ldb,
                             long first_block, long block_count);

/// b (bf16, as for `mae_bf16_pack_b_columns`) packed whole into `packed` by oneDNN's
/// reorder, for any layout oneDNN chose. Returns 0, or -1 with a message in
/// `mae_products_error()`.
int mae_bf16_pack_b(const mae_bf16_row_blocks *blocks, void *packed, const uint16_t *b, long ldb);

/// One block of `rows` rows (at most `blocks->block_rows`; the last block may be shorter):
/// c[rows, n] = alpha · op(a)[rows, k] · b + beta · c, with b packed for `blocks`
/// and a as `mae_bf16_matmul` takes it (fp32 or bf16 by `blocks->a_is_bf16`; lda). Returns 0
/// or -1 with a message.
int mae_bf16_matmul_packed_b(const mae_bf16_row_blocks *blocks, float *c, long ldc, const void *a, long lda,
                             const void *packed_b, long rows);

/// One head's bf16 attention backward (Kernels' attentionBackward for one (sample, head)),
/// where the small kernel runs its products (tokens² · head_dimension ≤
/// MAE_BF16_SMALL_PRODUCT_LIMIT, on a CPU with AVX512_BF16): dp = dOutput · vᵀ into `dp`
/// ([tokens, tokens] scratch, left holding dp); then, row by row, ds = scale · p ∘ (dp −
/// Σ_keys dp ∘ p) (Kernels' softmaxBackwardInPlace, its operations in its order), rounded to
/// bf16 straight into the two packed layouts that dq = ds · k and dk = dsᵀ · q read, and p
/// rounded into the one that dv = pᵀ · dOutput reads, all in one pass over p; then those
/// three products (assigned). q, k, v, dq, dk and dv are [tokens, head_dimension] inside
/// rows `ld` floats apart, dOutput inside rows `ld_output` apart, p is [tokens, tokens].
/// The bits of the softmax backward in place and the four products through
/// `mae_bf16_matmul`, without their three packings of fp32 [tokens, tokens] operands.
/// Returns 1 when done, 0 when this shape or CPU is not for it (nothing written), -1 when
/// memory runs out.
int mae_bf16_attention_head_backward(float *dq, float *dk, float *dv, long ld, const float *q, const float *k,
                                     const float *v, const float *d_output, long ld_output, const float *p, float *dp,
                                     long tokens, long head_dimension, float scale);

/// The last error of this thread's `mae_bf16_matmul`.
const char *mae_products_error(void);

/// What runs the products of at most MAE_BF16_SMALL_PRODUCT_LIMIT multiply-adds on this
/// CPU, in words. For benchmarks.
const char *mae_bf16_small_product_implementation(void);

/// The name of the oneDNN implementation chosen for a shape ("brg:avx512_core_bf16"),
/// creating its primitive if needed; NULL when none. For benchmarks and tests.
const char *mae_bf16_matmul_implementation(long m, long n, long k, int transpose_a, int transpose_b);

/// As `mae_bf16_matmul` with beta 0, c[m, n] written rounded to bf16 (as mae_round_to_bf16
/// rounds the fp32 product that `mae_bf16_matmul` gives, the same bits): for a product
/// whose output only bf16 products read (attention's output, proj's input). Returns 0,
/// -1 with a message in `mae_products_error()` as `mae_bf16_matmul`, or -2 when memory
/// for its buffers runs out.
int mae_bf16_matmul_rounded_output(uint16_t *c, long ldc,
                                   const void *a, int a_is_bf16, long lda, int transpose_a,
                                   const void *b, int b_is_bf16, long ldb, int transpose_b,
                                   long m, long n, long k, float alpha);

/// Asks the CPU to bring `rows` rows of `bytes` bytes, `stride` bytes apart from `base`,
/// into its caches (L2) ahead of use, for reading or (`for_writing` 1) for writing: for
/// attention, whose per-head operands are scattered rows of arrays long since evicted.
/// Only a hint: nothing is read, and no address needs to be valid.
void mae_prefetch_rows(const void *base, long rows, long bytes, long stride, int for_writing);

#endif
