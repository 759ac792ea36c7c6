// OpenBLAS's CBLAS interface plus its extensions (openblas_set_num_threads,
// openblas_get_corename, openblas_get_config), from Debian's libopenblas-dev.
#include <cblas.h>
