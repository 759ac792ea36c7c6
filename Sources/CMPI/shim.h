// Open MPI's C interface from Debian's libopenmpi-dev (pkg-config ompi-c).
// Only built when the package trait MPI is enabled.
#include <mpi.h>
