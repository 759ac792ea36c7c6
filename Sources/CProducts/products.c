#include "CProducts.h"
#include "CSupportBFloat16.h"
#include "small_products.h"
#include <oneapi/dnnl/dnnl.h>
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// What distinguishes one primitive from another: oneDNN bakes shapes, strides, the
// scale and the accumulation into a primitive when it creates it (milliseconds), so
// each distinct product of a model gets one, created on first use and kept.
typedef struct {
    long m, n, k, lda, ldb, ldc;
    int transpose_a, transpose_b, accumulate;
    int fp32_inputs;  // 1: oneDNN's fp32 matmul (measured against OpenBLAS), 0: bf16 inputs
    float alpha;
    // 0: b as stored (strided by ldb). Otherwise b comes packed in the layout that oneDNN
    // chose for the product's blocks of this many rows (mae_bf16_pack_b), ldb unused.
    long packed_rows;
} product_key;

typedef struct {
    product_key key;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t a_md, b_md, c_md;
    size_t scratchpad_bytes;
    const char *implementation;
} product_entry;

// A reorder of a bf16 b from its stored layout (dense or strided by ldb) into the packed
// layout of a block entry (`product_key.packed_rows`).
typedef struct {
    product_key block_key;
    long ldb;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t from_md, to_md;
    size_t scratchpad_bytes;
} packing_entry;
enum { packing_capacity = 512 };
static packing_entry packings[packing_capacity];
static int packing_count;

// A model has a few dozen distinct products per batch shape (its linear layers, forward
// and backward, each with the primitive of its full row blocks and of its last one; most of
// attention's per-head products are small enough for our own kernel); this is ample, and
// costs no memory until used.
enum { cache_capacity = 2048 };
static product_entry cache[cache_capacity];
static int cache_count;
static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine;

static __thread char error_message[256];
static __thread dnnl_stream_t stream;
static __thread uint16_t *a_buffer, *b_buffer, *shared_buffer;
static __thread size_t a_capacity, b_capacity, shared_capacity;
static __thread float *a_floats, *b_floats, *c_floats;
static __thread size_t a_float_capacity, b_float_capacity, c_float_capacity;
static __thread void *scratchpad;
static __thread size_t scratchpad_capacity;
static __thread void *packed_buffer;
static __thread size_t packed_capacity;

const char *mae_products_error(void) { return error_message; }

static int fail(const char *what, dnnl_status_t status) {
    snprintf(error_message, sizeof error_message, "oneDNN %s failed (status %d)", what, (int)status);
    return -1;
}

// Debian's oneDNN runs each primitive on an OpenMP team of omp_get_max_threads()
// threads. Our pool already splits the work, so every calling thread asks OpenMP for
// one thread (a per-thread setting), and oneDNN then runs inline on it. The function
// comes from the libgomp that libdnnl loads, looked up so that we link no OpenMP
// library ourselves.
static void use_one_openmp_thread(void) {
    static __thread int done;
    if (done) return;
    done = 1;
    void (*set_threads)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set_threads) set_threads(1);
}

static uint16_t *reserve(uint16_t **buffer, size_t *capacity, size_t count) {
    if (count > *capacity) {
        free(*buffer);
        *buffer = malloc(count * sizeof(uint16_t));
        *capacity = *buffer ? count : 0;
    }
    return *buffer;
}

uint16_t *mae_bf16_thread_buffer(long count) {
    return reserve(&shared_buffer, &shared_capacity, (size_t)count);
}

// The operand's stored matrix (rows × columns with leading dimension ld) rounded into
// a compact bf16 buffer (leading dimension columns).
static const uint16_t *rounded(uint16_t **buffer, size_t *capacity, const float *source,
                               long rows, long columns, long ld) {
    uint16_t *destination = reserve(buffer, capacity, (size_t)(rows * columns));
    if (!destination) return NULL;
    for (long row = 0; row < rows; row++) mae_round_to_bf16(destination + row * columns, source + row * ld, columns);
    return destination;
}

// A bf16 matrix (rows × columns, leading dimension ld) copied into a compact buffer.
static const uint16_t *compact(uint16_t **buffer, size_t *capacity, const uint16_t *source,
                               long rows, long columns, long ld) {
    uint16_t *destination = reserve(buffer, capacity, (size_t)(rows * columns));
    if (!destination) return NULL;
    for (long row = 0; row < rows; row++) memcpy(destination + row * columns, source + row * ld, (size_t)columns * 2);
    return destination;
}

static dnnl_status_t engine_status;
static void create_engine(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

// The transpose of the operand's stored matrix (rows × columns, leading dimension ld)
// rounded into a compact bf16 buffer [columns, rows]: oneDNN's kernels run a row-major
// op(a) markedly faster than a transposed one (the weight-gradient products dyᵀ·x), and
// rounding reads the operand anyway.
static const uint16_t *rounded_transpose(uint16_t **buffer, size_t *capacity, const float *source,
                                         long rows, long columns, long ld) {
    uint16_t *destination = reserve(buffer, capacity, (size_t)(rows * columns));
    if (!destination) return NULL;
    mae_round_to_bf16_transposed(destination, source, rows, columns, ld);
    return destination;
}

// Products of at most this many multiply-adds (m·n·k) skip oneDNN: a call costs it a few
// microseconds of set-up (memory objects, stream), and attention's per-head products
// (mae_vit_tiny_patch4: 17×17×64, 65×65×32; ViT-B: 50×50×64, the decoder's 197×197×32) and
// the whole products of `bfloat16Blocks` are this small. They run on our own VDPBF16PS
// kernel (small_products.c), which rounds the operands while packing them, transposed ones
// included, and ran ViT-B's decoder heads 9–47 % faster than oneDNN's brgemm on Zen 4.
// Where the CPU lacks AVX512_BF16 (bf16 training refuses to start there; this path stays
// for completeness), their operands are rounded to bf16 values held in fp32 and OpenBLAS's
// fp32 kernel sums them: the product of two bf16 values is exact in fp32, so this is the
// same bf16-input, fp32-sum product, only summed in another order. The choice depends on
// the shape and the CPU alone, so results stay independent of the thread count.
enum { small_product_limit = MAE_BF16_SMALL_PRODUCT_LIMIT };

static float *reserve_floats(float **buffer, size_t *capacity, size_t count) {
    if (count > *capacity) {
        free(*buffer);
        *buffer = malloc(count * sizeof(float));
        *capacity = *buffer ? count : 0;
    }
    return *buffer;
}

// The operand (rows × columns, leading dimension ld; fp32 to be rounded, or bf16) as bf16
// values in a compact fp32 buffer.
static const float *rounded_floats(float **buffer, size_t *capacity, const void *source, int is_bf16,
                                   long rows, long columns, long ld) {
    float *destination = reserve_floats(buffer, capacity, (size_t)(rows * columns));
    if (!destination) return NULL;
    for (long row = 0; row < rows; row++) {
        if (is_bf16) mae_widen_bf16(destination + row * columns, (const uint16_t *)source + row * ld, columns);
        else mae_round_trip_bf16(destination + row * columns, (const float *)source + row * ld, columns);
    }
    return destination;
}

static int small_product(float *c, long ldc, const void *a, int a_is_bf16, long lda, int transpose_a,
                         const void *b, int b_is_bf16, long ldb, int transpose_b,
                         long m, long n, long k, float alpha, float beta) {
    long a_rows = transpose_a ? k : m, a_columns = transpose_a ? m : k;
    long b_rows = transpose_b ? n : k, b_columns = transpose_b ? k : n;
    const float *a32 = rounded_floats(&a_floats, &a_float_capacity, a, a_is_bf16, a_rows, a_columns, lda);
    const float *b32 = rounded_floats(&b_floats, &b_float_capacity, b, b_is_bf16, b_rows, b_columns, ldb);
    if (!a32 || !b32) return fail("buffer", dnnl_out_of_memory);
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a32, (int)a_columns, b32, (int)b_columns, beta, c, (int)ldc);
    return 0;
}

static int initialise_engine(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, create_engine);
    return engine_status == dnnl_success ? 0 : fail("engine creation", engine_status);
}

static product_entry *find_or_create_entry(const product_key *key);

// The key of the block whose primitive chose the packed layout of a packed key's b:
// the same product with `packed_rows` rows (a transposed bf16 a is compacted to lda = m).
static product_key block_key_of(const product_key *key) {
    product_key block = *key;
    block.m = key->packed_rows;
    if (key->transpose_a) block.lda = key->packed_rows;
    return block;
}

static product_entry *create_entry(const product_key *key) {
    product_entry entry = {.key = *key};
    dnnl_dims_t a_dims = {key->m, key->k}, b_dims = {key->k, key->n}, c_dims = {key->m, key->n};
    // op(a) is [m, k]: a row-major [m, k] array, or the transpose of a [k, m] one.
    dnnl_dims_t a_strides = {key->transpose_a ? 1 : key->lda, key->transpose_a ? key->lda : 1};
    dnnl_dims_t b_strides = {key->transpose_b ? 1 : key->ldb, key->transpose_b ? key->ldb : 1};
    dnnl_dims_t c_strides = {key->ldc, 1};
    dnnl_status_t status;
    dnnl_data_type_t input_type = key->fp32_inputs ? dnnl_f32 : dnnl_bf16;
    if ((status = dnnl_memory_desc_init_by_strides(&entry.a_md, 2, a_dims, input_type, a_strides)) ||
        (status = dnnl_memory_desc_init_by_strides(&entry.c_md, 2, c_dims, dnnl_f32, c_strides))) {
        fail("memory descriptor", status);
        return NULL;
    }
    if (!key->packed_rows) {
        status = dnnl_memory_desc_init_by_strides(&entry.b_md, 2, b_dims, input_type, b_strides);
    } else if (key->m == key->packed_rows) {
        // oneDNN picks the layout for this block shape; the entry's b_md is that layout.
        status = dnnl_memory_desc_init_by_tag(&entry.b_md, 2, b_dims, input_type, dnnl_format_tag_any);
    } else {
        // A last, shorter block takes b in the layout its full blocks chose.
        product_key block_key = block_key_of(key);
        product_entry *block = find_or_create_entry(&block_key);
        if (!block) return NULL;
        entry.b_md = block->b_md;
        status = dnnl_success;
    }
    if (status) { fail("memory descriptor", status); return NULL; }
    dnnl_matmul_desc_t descriptor;
    if ((status = dnnl_matmul_desc_init(&descriptor, &entry.a_md, &entry.b_md, NULL, &entry.c_md))) {
        fail("matmul descriptor", status);
        return NULL;
    }
    dnnl_primitive_attr_t attributes;
    dnnl_post_ops_t post_ops = NULL;
    if ((status = dnnl_primitive_attr_create(&attributes))) { fail("attributes", status); return NULL; }
    // Scratch memory comes from the calling thread (below), so concurrent calls of one
    // primitive from several of our threads never share it.
    dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user);
    if (key->alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attributes, 1, 0, &key->alpha);
    if (key->accumulate) {
        dnnl_post_ops_create(&post_ops);
        dnnl_post_ops_append_sum(post_ops, 1.0f);
        dnnl_primitive_attr_set_post_ops(attributes, post_ops);
    }
    dnnl_primitive_desc_t primitive_descriptor;
    status = dnnl_primitive_desc_create(&primitive_descriptor, &descriptor, attributes, engine, NULL);
    dnnl_primitive_attr_destroy(attributes);
    if (post_ops) dnnl_post_ops_destroy(post_ops);
    if (status) {
        snprintf(error_message, sizeof error_message,
                 "oneDNN has no bf16 matmul for this CPU (status %d); bf16 needs a CPU with AVX512_BF16", (int)status);
        return NULL;
    }
    const dnnl_memory_desc_t *scratchpad_md = dnnl_primitive_desc_query_md(primitive_descriptor, dnnl_query_scratchpad_md, 0);
    entry.scratchpad_bytes = scratchpad_md ? dnnl_memory_desc_get_size(scratchpad_md) : 0;
    const char *implementation = NULL;
    dnnl_primitive_desc_query(primitive_descriptor, dnnl_query_impl_info_str, 0, &implementation);
    entry.implementation = implementation ? strdup(implementation) : "unknown";
    if (key->packed_rows) {
        // Packed b only where the brgemm kernels run (they read it as packed, so no copy per call).
        const dnnl_memory_desc_t *chosen = dnnl_primitive_desc_query_md(primitive_descriptor, dnnl_query_weights_md, 0);
        if (strncmp(entry.implementation, "brg", 3) != 0 || !chosen ||
            (key->m != key->packed_rows && !dnnl_memory_desc_equal(chosen, &entry.b_md))) {
            dnnl_primitive_desc_destroy(primitive_descriptor);
            snprintf(error_message, sizeof error_message, "oneDNN runs no brgemm kernel on a packed b for this shape");
            return NULL;
        }
        entry.b_md = *chosen;
    }
    status = dnnl_primitive_create(&entry.primitive, primitive_descriptor);
    dnnl_primitive_desc_destroy(primitive_descriptor);
    if (status) { fail("primitive creation", status); return NULL; }
    if (cache_count == cache_capacity) { fail("primitive cache (full)", dnnl_out_of_memory); return NULL; }
    cache[cache_count] = entry;
    return &cache[cache_count++];
}

// With the cache mutex held.
static product_entry *find_or_create_entry(const product_key *key) {
    for (int index = 0; index < cache_count; index++) {
        if (memcmp(&cache[index].key, key, sizeof *key) == 0) return &cache[index];
    }
    return create_entry(key);
}

static product_entry *entry_for(const product_key *key) {
    if (initialise_engine()) return NULL;
    pthread_mutex_lock(&cache_mutex);
    product_entry *found = find_or_create_entry(key);
    pthread_mutex_unlock(&cache_mutex);
    return found;
}

static product_key make_key(long m, long n, long k, long lda, int transpose_a, long ldb, int transpose_b,
                            long ldc, float alpha, float beta) {
    product_key key;
    memset(&key, 0, sizeof key);  // padding too, for memcmp
    key.m = m; key.n = n; key.k = k; key.lda = lda; key.ldb = ldb; key.ldc = ldc;
    key.transpose_a = transpose_a; key.transpose_b = transpose_b;
    key.accumulate = beta != 0.0f; key.alpha = alpha;
    return key;
}

const char *mae_bf16_small_product_implementation(void) {
    if (mae_bf16_amx_available()) return "our AMX tile kernel (small)";
    return mae_bf16_small_kernel_available() ? "our vdpbf16ps kernel (small)" : "OpenBLAS on bf16-rounded operands (small)";
}

const char *mae_bf16_matmul_implementation(long m, long n, long k, int transpose_a, int transpose_b) {
    product_key key = make_key(m, n, k, transpose_a ? m : k, transpose_a, transpose_b ? k : n, transpose_b, n, 1, 0);
    product_entry *entry = entry_for(&key);
    return entry ? entry->implementation : NULL;
}

// A primitive's argument: its kind (DNNL_ARG_…), layout and the caller's memory.
typedef struct {
    int kind;
    const dnnl_memory_desc_t *md;
    void *data;
} operand;

// Runs `primitive` on the calling thread's stream over the operands (memory objects made
// around the callers' pointers for this call) and the thread's scratch memory of
// `scratchpad_bytes`. Returns 0, or -1 with a message naming `what`.
static int run_primitive(dnnl_primitive_t primitive, const operand *operands, int count, size_t scratchpad_bytes,
                         const char *what) {
    dnnl_status_t status;
    if (!stream && (status = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags))) return fail("stream", status);
    if (scratchpad_bytes > scratchpad_capacity) {
        free(scratchpad);
        scratchpad = aligned_alloc(64, (scratchpad_bytes + 63) / 64 * 64);
        scratchpad_capacity = scratchpad ? scratchpad_bytes : 0;
        if (!scratchpad) return fail("scratchpad", dnnl_out_of_memory);
    }
    dnnl_memory_t memories[4] = {NULL, NULL, NULL, NULL};
    dnnl_exec_arg_t arguments[4];
    int made = 0;
    status = dnnl_success;
    for (; made < count && status == dnnl_success; made++) {
        status = dnnl_memory_create(&memories[made], operands[made].md, engine, operands[made].data);
        arguments[made] = (dnnl_exec_arg_t){operands[made].kind, memories[made]};
    }
    if (status == dnnl_success && scratchpad_bytes) {
        dnnl_memory_desc_t scratchpad_md;
        dnnl_dims_t scratchpad_dims = {(long)scratchpad_bytes};
        dnnl_memory_desc_init_by_tag(&scratchpad_md, 1, scratchpad_dims, dnnl_u8, dnnl_a);
        status = dnnl_memory_create(&memories[made], &scratchpad_md, engine, scratchpad);
        arguments[made] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, memories[made]};
        made++;
    }
    if (status) {
        fail("memory", status);
    } else if ((status = dnnl_primitive_execute(primitive, stream, made, arguments)) ||
               (status = dnnl_stream_wait(stream))) {
        fail(what, status);
    }
    for (int index = 0; index < made; index++) {
        if (memories[index]) dnnl_memory_destroy(memories[index]);
    }
    return status == dnnl_success ? 0 : -1;
}

// Runs the entry's primitive on the calling thread, with its scratch memory.
static int execute(product_entry *entry, const void *a, const void *b, float *c,
                   long m, long n, long k, long ldc, float beta) {
    if (k == 0) {  // oneDNN leaves c alone; the product of nothing is 0
        if (beta == 0.0f) for (long row = 0; row < m; row++) memset(c + row * ldc, 0, (size_t)n * 4);
        return 0;
    }
    operand operands[3] = {
        {DNNL_ARG_SRC, &entry->a_md, (void *)a}, {DNNL_ARG_WEIGHTS, &entry->b_md, (void *)b}, {DNNL_ARG_DST, &entry->c_md, c},
    };
    return run_primitive(entry->primitive, operands, 3, entry->scratchpad_bytes, "matmul execution");
}

// op(a) as oneDNN's brgemm kernels take it: bf16, dense; an fp32 operand rounded (a
// transposed one into rows, which the kernels run markedly faster), a strided bf16 one
// copied compact. Updates lda and transpose_a to the result's; NULL when memory runs out.
static const uint16_t *ready_a(const void *a, int a_is_bf16, long *lda, int *transpose_a, long m, long k) {
    // The stored array: a is [m, k] ([k, m] transposed).
    long rows = *transpose_a ? k : m, columns = *transpose_a ? m : k;
    const uint16_t *ready = a;
    if (!a_is_bf16 && *transpose_a) {
        ready = rounded_transpose(&a_buffer, &a_capacity, a, rows, columns, *lda);
        *lda = k;
        *transpose_a = 0;
    } else if (!a_is_bf16) {
        ready = rounded(&a_buffer, &a_capacity, a, rows, columns, *lda);
        *lda = columns;
    } else if (*lda != columns) {
        ready = compact(&a_buffer, &a_capacity, ready, rows, columns, *lda);
        *lda = columns;
    }
    return ready;
}

// Runs the product of the ready operands into c. oneDNN 2.6 runs its brgemm kernels on
// dense operands only (leading dimension = row length); a strided one (a block of
// columns, a head inside attention's rows) sends the product to its older gemm kernels,
// which pack every operand and ran 10–15 % slower on ViT-B's products. So a strided c is
// written compact and then copied, or added, into place: one fp32 add either way, as
// oneDNN's sum post-op does. `packed_rows`: as in `product_key`.
static int run_ready(float *c, long ldc, const uint16_t *a16, long lda, int transpose_a,
                     const void *b16, long ldb, int transpose_b, long packed_rows,
                     long m, long n, long k, float alpha, float beta) {
    float *target = c;
    if (ldc != n && !(target = reserve_floats(&c_floats, &c_float_capacity, (size_t)(m * n)))) {
        return fail("buffer", dnnl_out_of_memory);
    }
    long target_ld = target == c ? ldc : n;
    float target_beta = target == c ? beta : 0.0f;
    product_key key = make_key(m, n, k, lda, transpose_a, ldb, transpose_b, target_ld, alpha, target_beta);
    key.packed_rows = packed_rows;
    product_entry *entry = entry_for(&key);
    if (!entry) return -1;
    if (execute(entry, a16, b16, target, m, n, k, target_ld, target_beta)) return -1;
    if (target != c) {
        for (long row = 0; row < m; row++) {
            float *out = c + row * ldc;
            const float *in = target + row * n;
            if (beta == 0.0f) memcpy(out, in, (size_t)n * sizeof(float));
            else for (long column = 0; column < n; column++) out[column] += in[column];
        }
    }
    return 0;
}

int mae_bf16_matmul(float *c, long ldc,
                    const void *a, int a_is_bf16, long lda, int transpose_a,
                    const void *b, int b_is_bf16, long ldb, int transpose_b,
                    long m, long n, long k, float alpha, float beta) {
    if (beta != 0.0f && beta != 1.0f) {
        snprintf(error_message, sizeof error_message, "mae_bf16_matmul supports beta 0 or 1, not %g", beta);
        return -1;
    }
    if (m == 0 || n == 0) return 0;
    if (m * n * k <= small_product_limit) {
        if (mae_bf16_small_kernel_available()) {
            if (mae_bf16_small_product_avx512(c, ldc, a, a_is_bf16, lda, transpose_a, b, b_is_bf16, ldb, transpose_b,
                                              m, n, k, alpha, beta)) {
                snprintf(error_message, sizeof error_message, "out of memory for the packed operands of a small product");
                return -1;
            }
            return 0;
        }
        return small_product(c, ldc, a, a_is_bf16, lda, transpose_a, b, b_is_bf16, ldb, transpose_b, m, n, k, alpha, beta);
    }
    use_one_openmp_thread();
    const uint16_t *a16 = ready_a(a, a_is_bf16, &lda, &transpose_a, m, k);
    if (!a16) return fail("buffer", dnnl_out_of_memory);
    // The stored b: [k, n], or [n, k] transposed; rounded, or copied compact (see run_ready).
    long b_rows = transpose_b ? n : k, b_columns = transpose_b ? k : n;
    const uint16_t *b16 = b;
    if (!b_is_bf16) {
        if (!(b16 = rounded(&b_buffer, &b_capacity, b, b_rows, b_columns, ldb))) return fail("buffer", dnnl_out_of_memory);
        ldb = b_columns;
    } else if (ldb != b_columns) {
        if (!(b16 = compact(&b_buffer, &b_capacity, b16, b_rows, b_columns, ldb))) return fail("buffer", dnnl_out_of_memory);
        ldb = b_columns;
    }
    return run_ready(c, ldc, a16, lda, transpose_a, b16, ldb, transpose_b, 0, m, n, k, alpha, beta);
}

// The key of a product's full blocks as `run_ready` makes it after `ready_a`.
static product_key row_block_key(const mae_bf16_row_blocks *blocks) {
    int transpose_a = blocks->a_is_bf16 && blocks->transpose_a;  // an fp32 a is rounded into rows
    long lda = transpose_a ? blocks->block_rows : blocks->k;
    int dense_c = blocks->c_is_dense;
    product_key key = make_key(blocks->block_rows, blocks->n, blocks->k, lda, transpose_a, 0, blocks->transpose_b,
                               blocks->n, blocks->alpha, dense_c ? blocks->beta : 0.0f);
    key.packed_rows = blocks->block_rows;
    return key;
}

int mae_bf16_blocks_share_packed_b(const mae_bf16_row_blocks *blocks, long last_block_rows) {
    if (blocks->n * blocks->k * blocks->block_rows <= small_product_limit) return 0;
    product_key key = row_block_key(blocks);
    if (!entry_for(&key)) return 0;
    if (last_block_rows != blocks->block_rows) {
        // The last block must take the same packed b (oneDNN may refuse it for another m).
        product_key last = key;
        last.m = last_block_rows;
        if (last.transpose_a) last.lda = last_block_rows;
        if (last_block_rows * blocks->n * blocks->k <= small_product_limit || !entry_for(&last)) return 0;
    }
    return 1;
}

void *mae_bf16_packing_buffer(const mae_bf16_row_blocks *blocks) {
    product_key key = row_block_key(blocks);
    product_entry *entry = entry_for(&key);
    if (!entry) return NULL;
    size_t bytes = dnnl_memory_desc_get_size(&entry->b_md);
    if (bytes > packed_capacity) {
        free(packed_buffer);
        packed_buffer = aligned_alloc(64, (bytes + 63) / 64 * 64);
        packed_capacity = packed_buffer ? bytes : 0;
        if (!packed_buffer) { fail("packed buffer", dnnl_out_of_memory); return NULL; }
    }
    return packed_buffer;
}

// Whether a packed b's layout is BA16a64b2a for op(b)[k, n], which our packer writes
// (small_products.c): the one oneDNN's avx512_core_bf16 brgemm chooses on every shape
// measured; another (AMX's, say) is packed by oneDNN's reorder instead.
static int is_ba16a64b2a(const dnnl_memory_desc_t *md, long n, long k) {
    const dnnl_blocking_desc_t *blocking = &md->format_desc.blocking;
    long k_tiles = (k + 31) / 32;
    return md->format_kind == dnnl_blocked && md->data_type == dnnl_bf16 && md->ndims == 2 &&
           md->offset0 == 0 && md->padded_dims[0] == k_tiles * 32 && md->padded_dims[1] == (n + 63) / 64 * 64 &&
           blocking->inner_nblks == 3 && blocking->inner_blks[0] == 16 && blocking->inner_idxs[0] == 0 &&
           blocking->inner_blks[1] == 64 && blocking->inner_idxs[1] == 1 && blocking->inner_blks[2] == 2 &&
           blocking->inner_idxs[2] == 0 && blocking->strides[0] == 2048 && blocking->strides[1] == k_tiles * 2048 &&
           md->extra.flags == 0;
}

static int own_packer_enabled = 1;

void mae_bf16_use_own_packer(int enabled) { own_packer_enabled = enabled; }

long mae_bf16_packing_column_blocks(const mae_bf16_row_blocks *blocks) {
    product_key key = row_block_key(blocks);
    product_entry *entry = entry_for(&key);
    if (!entry || !own_packer_enabled || !mae_bf16_small_kernel_available() ||
        !is_ba16a64b2a(&entry->b_md, blocks->n, blocks->k)) {
        return 0;
    }
    return (blocks->n + 63) / 64;
}

void mae_bf16_pack_b_columns(const mae_bf16_row_blocks *blocks, void *packed, const void *b, int b_is_bf16, long ldb,
                             long first_block, long block_count) {
    mae_bf16_pack_ba16a64b2a(packed, b, b_is_bf16, ldb, blocks->transpose_b, blocks->n, blocks->k, first_block,
                             block_count);
}

int mae_bf16_pack_b(const mae_bf16_row_blocks *blocks, void *packed, const uint16_t *b, long ldb) {
    use_one_openmp_thread();
    product_key key = row_block_key(blocks);
    product_entry *entry = entry_for(&key);
    if (!entry) return -1;
    pthread_mutex_lock(&cache_mutex);
    packing_entry *packing = NULL;
    for (int index = 0; index < packing_count && !packing; index++) {
        if (packings[index].ldb == ldb && memcmp(&packings[index].block_key, &key, sizeof key) == 0) {
            packing = &packings[index];
        }
    }
    if (!packing && packing_count < packing_capacity) {
        packing_entry made = {.block_key = key, .ldb = ldb, .to_md = entry->b_md};
        dnnl_dims_t dims = {blocks->k, blocks->n};
        dnnl_dims_t strides = {blocks->transpose_b ? 1 : ldb, blocks->transpose_b ? ldb : 1};
        dnnl_primitive_attr_t attributes = NULL;
        dnnl_primitive_desc_t descriptor = NULL;
        dnnl_status_t status;
        if (!(status = dnnl_memory_desc_init_by_strides(&made.from_md, 2, dims, dnnl_bf16, strides)) &&
            !(status = dnnl_primitive_attr_create(&attributes)) &&
            !(status = dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user)) &&
            !(status = dnnl_reorder_primitive_desc_create(&descriptor, &made.from_md, engine, &made.to_md, engine,
                                                          attributes))) {
            const dnnl_memory_desc_t *scratchpad_md = dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0);
            made.scratchpad_bytes = scratchpad_md ? dnnl_memory_desc_get_size(scratchpad_md) : 0;
            status = dnnl_primitive_create(&made.primitive, descriptor);
        }
        if (descriptor) dnnl_primitive_desc_destroy(descriptor);
        if (attributes) dnnl_primitive_attr_destroy(attributes);
        if (status) fail("packing reorder", status);
        else packing = &packings[packing_count++], *packing = made;
    } else if (!packing) {
        fail("packing cache (full)", dnnl_out_of_memory);
    }
    pthread_mutex_unlock(&cache_mutex);
    if (!packing) return -1;
    operand operands[2] = {{DNNL_ARG_FROM, &packing->from_md, (void *)b}, {DNNL_ARG_TO, &packing->to_md, packed}};
    return run_primitive(packing->primitive, operands, 2, packing->scratchpad_bytes, "packing");
}

int mae_bf16_matmul_packed_b(const mae_bf16_row_blocks *blocks, float *c, long ldc, const void *a, long lda,
                             const void *packed_b, long rows) {
    if (rows == 0) return 0;
    use_one_openmp_thread();
    int transpose_a = blocks->transpose_a;
    const uint16_t *a16 = ready_a(a, blocks->a_is_bf16, &lda, &transpose_a, rows, blocks->k);
    if (!a16) return fail("buffer", dnnl_out_of_memory);
    return run_ready(c, ldc, a16, lda, transpose_a, packed_b, 0, blocks->transpose_b, blocks->block_rows,
                     rows, blocks->n, blocks->k, blocks->alpha, blocks->beta);
}

int mae_f32_matmul_onednn(float *c, long ldc, const float *a, long lda, int transpose_a,
                          const float *b, long ldb, int transpose_b, long m, long n, long k, float alpha, float beta) {
    if (beta != 0.0f && beta != 1.0f) {
        snprintf(error_message, sizeof error_message, "mae_f32_matmul_onednn supports beta 0 or 1, not %g", beta);
        return -1;
    }
    if (m == 0 || n == 0) return 0;
    use_one_openmp_thread();
    product_key key = make_key(m, n, k, lda, transpose_a, ldb, transpose_b, ldc, alpha, beta);
    key.fp32_inputs = 1;
    product_entry *entry = entry_for(&key);
    if (!entry) return -1;
    return execute(entry, a, b, c, m, n, k, ldc, beta);
}
