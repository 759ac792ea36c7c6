import Kernels
BLASRuntime.ensureFastKernels()
print(BLASRuntime.banner)
