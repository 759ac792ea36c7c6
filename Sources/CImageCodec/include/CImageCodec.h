#ifndef MAE_CIMAGECODEC_H
#define MAE_CIMAGECODEC_H

#include <stddef.h>

/// JPEG (libjpeg-turbo) and PNG (libpng) decoding and encoding in memory.
///
/// Why C: both libraries report a fatal error by calling a handler that must not
/// return (libjpeg's default `error_exit` calls exit(), libpng's longjmps). Swift
/// cannot setjmp/longjmp, so these wrappers own the setjmp point and turn every
/// library error into a return code and a one-line message; a corrupt file never
/// ends the process. This is a separate target from CSupport so that Kernels
/// (which uses CSupport) does not link the image libraries.
///
/// Decoded pixels are 8-bit RGB, interleaved, rows top to bottom, no padding,
/// as Pillow's `Image.convert("RGB")` gives them.

/// Return codes.
enum {
    MAE_IMAGE_OK = 0,
    MAE_IMAGE_CORRUPT = 1,     /// the data is not a valid or complete image
    MAE_IMAGE_TOO_LARGE = 2,   /// over `MAE_IMAGE_MAX_PIXELS`
    MAE_IMAGE_NO_MEMORY = 3,
};

/// Images with more pixels than this are refused (decompression-bomb guard).
#define MAE_IMAGE_MAX_PIXELS ((size_t)1 << 28)

/// Decodes a JPEG held in memory.
/// - pixels/capacity: a malloc'ed buffer of *capacity bytes (may be NULL/0) that is
///   grown with realloc when the image needs more; the caller keeps it for the next
///   image and eventually frees it with free().
/// - width/height: the image size on success.
/// - message: on failure, a NUL-terminated reason (messageCapacity bytes).
/// Grayscale images are expanded to RGB; CMYK/YCCK images are converted as Pillow
/// does (Adobe-inverted data honoured). A truncated file is an error (as in Pillow).
int mae_jpeg_decode(const unsigned char *data, size_t size,
                    unsigned char **pixels, size_t *capacity, int *width, int *height,
                    char *message, size_t messageCapacity);

/// Decodes a PNG held in memory; same conventions as `mae_jpeg_decode`.
/// Palette and low-bit-depth images are expanded, 16-bit samples keep their high
/// byte, gray becomes RGB, alpha is dropped, gamma chunks are ignored (as Pillow).
int mae_png_decode(const unsigned char *data, size_t size,
                   unsigned char **pixels, size_t *capacity, int *width, int *height,
                   char *message, size_t messageCapacity);

/// Encodes 8-bit interleaved RGB as a baseline JPEG (4:2:0, islow DCT, optimised
/// Huffman tables off) of the given quality (1...100).
/// - output/outputSize: a new malloc'ed buffer the caller frees with free().
int mae_jpeg_encode(const unsigned char *rgb, int width, int height, int quality,
                    unsigned char **output, size_t *outputSize,
                    char *message, size_t messageCapacity);

/// Encodes 8-bit interleaved RGB as a non-interlaced PNG; same conventions.
int mae_png_encode(const unsigned char *rgb, int width, int height,
                   unsigned char **output, size_t *outputSize,
                   char *message, size_t messageCapacity);

#endif
