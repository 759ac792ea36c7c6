// oneDNN's C interface (matmul primitives, memory descriptors, streams), from Debian's
// libdnnl-dev 2.6. Debian builds it on OpenMP (DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP in
// dnnl_config.h); CProducts keeps every call on its calling thread.
#include <oneapi/dnnl/dnnl.h>
