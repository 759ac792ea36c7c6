// swift-tools-version: 6.1
// A distributed data-parallel trainer for Masked Autoencoders (He et al., 2021).
// No Swift package dependencies: the toolchain and Debian's C libraries only.
import PackageDescription

// MARK: - Shared settings

/// The CPU the Swift code is compiled for. On x86-64 the default is `haswell`
/// (x86-64-v3: AVX2 and FMA, every x86 server since 2013), which vectorises the
/// element-wise kernels 8 floats wide instead of SSE2's 4: 10 % more training speed on
/// `mae_vit_tiny_patch4` (docs/PERFORMANCE.md). A program built for it refuses to
/// start, with a message, on a CPU without those instructions. `MAE_TARGET_CPU=x86-64
/// swift build ...` builds for any x86-64 CPU; `skylake-avx512` or `native` for newer
/// ones; elsewhere the compiler's default is kept unless the variable names a CPU.
#if arch(x86_64)
let targetCPU: String? = Context.environment["MAE_TARGET_CPU"] ?? "haswell"
#else
let targetCPU: String? = Context.environment["MAE_TARGET_CPU"]
#endif

/// What the start-up check in CSupport (cpu.c) verifies for the chosen CPU level.
let cpuLevelDefines: [CSetting] = switch targetCPU {
case "haswell", "x86-64-v3": [.define("MAE_REQUIRE_X86_64_V3")]
case "skylake-avx512", "x86-64-v4": [.define("MAE_REQUIRE_X86_64_V3"), .define("MAE_REQUIRE_X86_64_V4")]
default: []
}

/// Release builds are whole-module optimised by SwiftPM. The numeric modules share raw
/// pointers across worker threads by design, an ownership the Swift 6 checker cannot
/// express, so the package compiles in the Swift 5 language mode.
let sharedSwiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v5),
    .define("MPI", .when(traits: ["MPI"])),
] + (targetCPU.map { [.unsafeFlags(["-target-cpu", $0])] } ?? [])

// MARK: - Package

let package = Package(
    name: "mae",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mae", targets: ["mae"]),
        .executable(name: "mae-worker", targets: ["mae-worker"]),
        .executable(name: "mae-coordinator", targets: ["mae-coordinator"]),
    ],
    traits: [
        .trait(name: "MPI", description: "Build the Open MPI collective backend (needs libopenmpi-dev)."),
    ],
    targets: [
        // MARK: C system libraries and shims
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg",
                       providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        // oneDNN (Debian ships no pkg-config file for it): bf16 matrix products.
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .target(name: "CSupport", cSettings: cpuLevelDefines),
        // oneDNN's matmul primitives behind two C calls (products.c says why in C).
        .target(name: "CProducts", dependencies: ["CDNNL", "CBLAS", "CSupport"], linkerSettings: [.linkedLibrary("dnnl")]),
        // Atomics, futex, memfd and pidfd for the shared-memory collective (syscall() is variadic).
        .target(name: "CSharedMemory"),
        // JPEG/PNG codecs behind setjmp, apart from CSupport so Kernels links no image library.
        .target(name: "CImageCodec", dependencies: ["CJPEG", "CPNG"]),
        .target(name: "Options", swiftSettings: sharedSwiftSettings),

        // MARK: Modules, in their one direction of dependency
        // System: the system call wrappers (EINTR retried, errors naming call and path).
        .target(name: "System", swiftSettings: sharedSwiftSettings),
        .target(name: "Kernels", dependencies: ["CBLAS", "CSupport", "CProducts"],
                swiftSettings: sharedSwiftSettings),
        .target(name: "Model", dependencies: ["Kernels", "System"],
                swiftSettings: sharedSwiftSettings),
        .target(name: "Data", dependencies: ["Kernels", "CImageCodec", "System"],
                swiftSettings: sharedSwiftSettings),
        // Figures: PNG figures drawn with libpng alone (reconstruction grids, training curves).
        .target(name: "Figures", dependencies: ["Kernels", "Model", "Data", "System"],
                swiftSettings: sharedSwiftSettings),
        .target(name: "Collectives",
                dependencies: ["Kernels", "System", "CSharedMemory", "CSupport", .target(name: "CMPI", condition: .when(traits: ["MPI"]))],
                swiftSettings: sharedSwiftSettings),
        .target(name: "Training", dependencies: ["Model", "Data", "Figures", "Collectives", "Options", "System"],
                swiftSettings: sharedSwiftSettings),
        // Control: the control plane (wire protocol, HMAC handshake, the coordinator's state
        // machine and server, the agent, the worker's link); never touches tensors.
        .target(name: "Control", dependencies: ["Training", "Collectives", "Data", "Options", "System"],
                swiftSettings: sharedSwiftSettings),

        // MARK: Executables: option parsing and a call into the modules
        .executableTarget(name: "mae", dependencies: ["Training", "Options"],
                          swiftSettings: sharedSwiftSettings),
        .executableTarget(name: "mae-worker", dependencies: ["Training", "Control", "Options"],
                          swiftSettings: sharedSwiftSettings),
        .executableTarget(name: "mae-coordinator", dependencies: ["Control", "Options", "Kernels"],
                          swiftSettings: sharedSwiftSettings),

        // MARK: Tests, one target per module, and the helpers they share
        .target(name: "TestSupport", dependencies: ["Kernels"], path: "Tests/TestSupport",
                swiftSettings: sharedSwiftSettings),
        .testTarget(name: "OptionsTests", dependencies: ["Options"],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "SystemTests", dependencies: ["System"],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "ModelTests", dependencies: ["Model", "TestSupport"],
                    resources: [.copy("Fixtures")],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "DataTests", dependencies: ["Data", "System", "TestSupport"],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "FiguresTests", dependencies: ["Figures", "Data", "Model", "Kernels"],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "TestSupport"],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "System", "TestSupport", "Figures", "Data", "Model"],
                    resources: [.copy("Fixtures")],
                    swiftSettings: sharedSwiftSettings),
        .testTarget(name: "ControlTests", dependencies: ["Control", "Training", "Collectives", "Data", "Kernels", "System", "TestSupport"],
                    swiftSettings: sharedSwiftSettings),
    ]
)
