import Kernels

BLASRuntime.ensureFastKernels()

/// Every `mae` subcommand; each lives in its own `Command+Name.swift` file.
let subcommands: [any Subcommand.Type] = [
    BenchStepCommand.self,
    BenchProductsCommand.self,
    SynthDataCommand.self,
    BenchDataCommand.self,
    BenchAllReduceCommand.self,
    FuzzRingCommand.self,
    CollectiveWorkerCommand.self,
    ReferenceStepCommand.self,
    CheckDeterminismCommand.self,
    ReconstructCommand.self,
    PlotCommand.self,
    ImportCommand.self,
    ExportCommand.self,
    InspectCommand.self,
    KNNCommand.self,
]

dispatch(Array(CommandLine.arguments.dropFirst()), among: subcommands)
