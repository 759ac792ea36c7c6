// Open MPI's C interface from Debian's libopenmpi-dev (pkg-config ompi-c).
// Only built when the package trait MPI is enabled.
#include <mpi.h>

// Open MPI spells its predefined handles as macros that take the address of
// global objects, which Swift cannot import. These functions hand them over.
static inline MPI_Comm mae_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype mae_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype mae_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op mae_mpi_sum(void) { return MPI_SUM; }
static inline void *mae_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler mae_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
