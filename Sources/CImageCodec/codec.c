// JPEG and PNG codecs that report errors instead of exiting. See CImageCodec.h for why
// this is C: the libraries' error handlers must longjmp, which Swift cannot.
#include "CImageCodec.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

static void copy_message(char *message, size_t capacity, const char *text) {
    if (message == NULL || capacity == 0) return;
    snprintf(message, capacity, "%s", text);
}

/// Makes `*pixels` hold at least `needed` bytes, keeping the buffer when it is big enough.
static int ensure_capacity(unsigned char **pixels, size_t *capacity, size_t needed) {
    if (*pixels != NULL && *capacity >= needed) return 1;
    unsigned char *grown = realloc(*pixels, needed);
    if (grown == NULL) return 0;
    *pixels = grown;
    *capacity = needed;
    return 1;
}

// MARK: - JPEG

struct jpeg_error_state {
    struct jpeg_error_mgr base;   // first, so the library's pointer is also ours
    jmp_buf jump;
    int truncated;
};

/// Replaces libjpeg's error_exit (which calls exit()): back to the setjmp point.
static void jpeg_error_exit_to_caller(j_common_ptr cinfo) {
    struct jpeg_error_state *state = (struct jpeg_error_state *)cinfo->err;
    longjmp(state->jump, 1);
}

/// Warnings are not printed. Running out of data is an error, as in Pillow (which
/// refuses truncated images); other corrupt-data warnings are tolerated, as in Pillow.
static void jpeg_warning_handler(j_common_ptr cinfo, int level) {
    struct jpeg_error_state *state = (struct jpeg_error_state *)cinfo->err;
    if (level < 0 && state->base.msg_code == JWRN_JPEG_EOF) {
        state->truncated = 1;
        longjmp(state->jump, 1);
    }
}

static void jpeg_failure_message(j_common_ptr cinfo, struct jpeg_error_state *state,
                                 char *message, size_t capacity) {
    if (state->truncated) {
        copy_message(message, capacity, "truncated JPEG (the data ends before the image does)");
        return;
    }
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    copy_message(message, capacity, text);
}

/// Pillow's CMYK to RGB conversion (Convert.c cmyk2rgb): r = (255 - k) - c(255 - k)/255,
/// with Pillow's rounding MULDIV255. Adobe files store inverted CMYK.
static void cmyk_row_to_rgb(unsigned char *rgb, const unsigned char *cmyk, int width, int inverted) {
    for (int x = 0; x < width; x++) {
        int c = cmyk[4 * x], m = cmyk[4 * x + 1], y = cmyk[4 * x + 2], k = cmyk[4 * x + 3];
        if (inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
        int nk = 255 - k, tmp;
        tmp = c * nk + 128; int r = nk - (((tmp >> 8) + tmp) >> 8);
        tmp = m * nk + 128; int g = nk - (((tmp >> 8) + tmp) >> 8);
        tmp = y * nk + 128; int b = nk - (((tmp >> 8) + tmp) >> 8);
        rgb[3 * x] = (unsigned char)(r < 0 ? 0 : r);
        rgb[3 * x + 1] = (unsigned char)(g < 0 ? 0 : g);
        rgb[3 * x + 2] = (unsigned char)(b < 0 ? 0 : b);
    }
}

int mae_jpeg_decode(const unsigned char *data, size_t size,
                    unsigned char **pixels, size_t *capacity, int *width, int *height,
                    char *message, size_t messageCapacity) {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_state state;
    volatile int status = MAE_IMAGE_CORRUPT;
    memset(&cinfo, 0, sizeof cinfo);   // a destroy before create finishes sees no memory manager
    cinfo.err = jpeg_std_error(&state.base);
    state.base.error_exit = jpeg_error_exit_to_caller;
    state.base.emit_message = jpeg_warning_handler;
    state.truncated = 0;
    // The jump target is set before jpeg_create_decompress, which can fail too (libjpeg's example.c order).
    if (setjmp(state.jump)) {
        jpeg_failure_message((j_common_ptr)&cinfo, &state, message, messageCapacity);
        jpeg_destroy_decompress(&cinfo);
        return status;
    }
    jpeg_create_decompress(&cinfo);
    if (size == 0) {
        copy_message(message, messageCapacity, "empty file");
        jpeg_destroy_decompress(&cinfo);
        return MAE_IMAGE_CORRUPT;
    }
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;          // libjpeg's and Pillow's default
    cinfo.do_fancy_upsampling = TRUE;       // likewise
    if ((size_t)cinfo.image_width * (size_t)cinfo.image_height > MAE_IMAGE_MAX_PIXELS) {
        snprintf(message, messageCapacity, "image of %ux%u pixels is larger than the limit of %zu pixels",
                 cinfo.image_width, cinfo.image_height, (size_t)MAE_IMAGE_MAX_PIXELS);
        jpeg_destroy_decompress(&cinfo);
        return MAE_IMAGE_TOO_LARGE;
    }
    jpeg_start_decompress(&cinfo);
    size_t w = cinfo.output_width, h = cinfo.output_height;
    if (!ensure_capacity(pixels, capacity, w * h * 3)) {
        copy_message(message, messageCapacity, "out of memory for the decoded image");
        jpeg_destroy_decompress(&cinfo);
        return MAE_IMAGE_NO_MEMORY;
    }
    JSAMPARRAY cmykRow = NULL;
    if (cmyk) cmykRow = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, (JDIMENSION)(w * 4), 1);
    while (cinfo.output_scanline < h) {
        unsigned char *row = *pixels + (size_t)cinfo.output_scanline * w * 3;
        if (cmyk) {
            jpeg_read_scanlines(&cinfo, cmykRow, 1);
            cmyk_row_to_rgb(row, cmykRow[0], (int)w, cinfo.saw_Adobe_marker);
        } else {
            JSAMPROW rows[16];
            JDIMENSION count = (JDIMENSION)(h - cinfo.output_scanline);
            if (count > 16) count = 16;
            for (JDIMENSION i = 0; i < count; i++) rows[i] = row + (size_t)i * w * 3;
            jpeg_read_scanlines(&cinfo, rows, count);
        }
    }
    // No jpeg_finish_decompress: every pixel is in, and a file that only lacks its
    // end-of-image marker decodes in Pillow too.
    *width = (int)w;
    *height = (int)h;
    jpeg_destroy_decompress(&cinfo);
    return MAE_IMAGE_OK;
}

int mae_jpeg_encode(const unsigned char *rgb, int width, int height, int quality,
                    unsigned char **output, size_t *outputSize,
                    char *message, size_t messageCapacity) {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_state state;
    unsigned char *buffer = NULL;   // address taken: lives in memory across longjmp
    unsigned long bufferSize = 0;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&state.base);
    state.base.error_exit = jpeg_error_exit_to_caller;
    state.base.emit_message = jpeg_warning_handler;
    state.truncated = 0;
    if (setjmp(state.jump)) {
        jpeg_failure_message((j_common_ptr)&cinfo, &state, message, messageCapacity);
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        return MAE_IMAGE_CORRUPT;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buffer, &bufferSize);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * (size_t)width * 3);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *output = buffer;
    *outputSize = bufferSize;
    return MAE_IMAGE_OK;
}

// MARK: - PNG

struct png_error_state {
    char text[256];
};

struct png_memory_source {
    const unsigned char *data;
    size_t size;
    size_t offset;
};

struct png_memory_sink {
    unsigned char *data;
    size_t size;
    size_t capacity;
};

/// libpng's error callback must not return: keep the message and longjmp back.
static void png_error_to_caller(png_structp png, png_const_charp text) {
    struct png_error_state *state = (struct png_error_state *)png_get_error_ptr(png);
    snprintf(state->text, sizeof state->text, "%s", text);
    png_longjmp(png, 1);
}

/// Warnings (for example a bad checksum in an ancillary chunk) are tolerated, not printed.
static void png_warning_ignored(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

static void png_read_from_memory(png_structp png, png_bytep out, png_size_t count) {
    struct png_memory_source *source = (struct png_memory_source *)png_get_io_ptr(png);
    if (count > source->size - source->offset) {
        png_error(png, "truncated PNG (the data ends before the image does)");
    }
    memcpy(out, source->data + source->offset, count);
    source->offset += count;
}

static void png_write_to_memory(png_structp png, png_bytep bytes, png_size_t count) {
    struct png_memory_sink *sink = (struct png_memory_sink *)png_get_io_ptr(png);
    if (sink->size + count > sink->capacity) {
        size_t grown = sink->capacity * 2 + count + 4096;
        unsigned char *data = realloc(sink->data, grown);
        if (data == NULL) png_error(png, "out of memory for the encoded PNG");
        sink->data = data;
        sink->capacity = grown;
    }
    memcpy(sink->data + sink->size, bytes, count);
    sink->size += count;
}

static void png_flush_nothing(png_structp png) { (void)png; }

int mae_png_decode(const unsigned char *data, size_t size,
                   unsigned char **pixels, size_t *capacity, int *width, int *height,
                   char *message, size_t messageCapacity) {
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        copy_message(message, messageCapacity, "not a PNG file (bad signature)");
        return MAE_IMAGE_CORRUPT;
    }
    struct png_error_state state;
    state.text[0] = 0;
    struct png_memory_source source = {data, size, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state,
                                             png_error_to_caller, png_warning_ignored);
    if (png == NULL) {
        copy_message(message, messageCapacity, "out of memory creating the PNG reader");
        return MAE_IMAGE_NO_MEMORY;
    }
    png_infop info = png_create_info_struct(png);
    png_bytep *volatile rows = NULL;
    volatile int status = MAE_IMAGE_CORRUPT;
    if (info == NULL || setjmp(png_jmpbuf(png))) {
        copy_message(message, messageCapacity, info == NULL ? "out of memory creating the PNG reader" : state.text);
        free((void *)rows);
        png_destroy_read_struct(&png, info == NULL ? NULL : &info, NULL);
        return info == NULL ? MAE_IMAGE_NO_MEMORY : status;
    }
    png_set_read_fn(png, &source, png_read_from_memory);
    png_read_info(png, info);
    png_uint_32 w, h;
    int bitDepth, colorType;
    png_get_IHDR(png, info, &w, &h, &bitDepth, &colorType, NULL, NULL, NULL);
    if ((size_t)w * (size_t)h > MAE_IMAGE_MAX_PIXELS) {
        status = MAE_IMAGE_TOO_LARGE;
        png_error(png, "image is larger than the pixel limit");
    }
    if (colorType == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (colorType == PNG_COLOR_TYPE_GRAY && bitDepth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bitDepth == 16) png_set_strip_16(png);
    if (colorType == PNG_COLOR_TYPE_GRAY || colorType == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (colorType & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) png_error(png, "unexpected PNG row layout after conversion to RGB");
    if (!ensure_capacity(pixels, capacity, (size_t)w * h * 3)) {
        status = MAE_IMAGE_NO_MEMORY;
        png_error(png, "out of memory for the decoded image");
    }
    rows = malloc(sizeof(png_bytep) * h);
    if (rows == NULL) {
        status = MAE_IMAGE_NO_MEMORY;
        png_error(png, "out of memory for the row table");
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = *pixels + (size_t)y * w * 3;
    png_read_image(png, (png_bytepp)rows);
    // No png_read_end: every pixel is in; trailing chunks do not matter.
    free((void *)rows);
    png_destroy_read_struct(&png, &info, NULL);
    *width = (int)w;
    *height = (int)h;
    return MAE_IMAGE_OK;
}

int mae_png_encode(const unsigned char *rgb, int width, int height,
                   unsigned char **output, size_t *outputSize,
                   char *message, size_t messageCapacity) {
    struct png_error_state state;
    state.text[0] = 0;
    struct png_memory_sink sink = {NULL, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state,
                                              png_error_to_caller, png_warning_ignored);
    if (png == NULL) {
        copy_message(message, messageCapacity, "out of memory creating the PNG writer");
        return MAE_IMAGE_NO_MEMORY;
    }
    png_infop info = png_create_info_struct(png);
    if (info == NULL || setjmp(png_jmpbuf(png))) {
        copy_message(message, messageCapacity, info == NULL ? "out of memory creating the PNG writer" : state.text);
        free(sink.data);
        png_destroy_write_struct(&png, info == NULL ? NULL : &info);
        return MAE_IMAGE_CORRUPT;
    }
    png_set_write_fn(png, &sink, png_write_to_memory, png_flush_nothing);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) {
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *output = sink.data;
    *outputSize = sink.size;
    return MAE_IMAGE_OK;
}
