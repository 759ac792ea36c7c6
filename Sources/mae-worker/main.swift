// mae-worker: one training process. Parses and validates its flags before any work,
// joins its job (or trains alone with --standalone), and runs the training loop.
import Control
import Kernels
import Options
import Training
#if canImport(Glibc)
import Glibc
#endif

BLASRuntime.ensureFastKernels()

var standardError = FileHandleStream.standardError
let (config, distributed): (RunConfig, DistributedSettings)
do {
    guard let options = try WorkerOptions.spec.parse(Array(CommandLine.arguments.dropFirst())) else {
        print(WorkerOptions.spec.help)
        exit(0)
    }
    guard options.positional.isEmpty else {
        throw OptionError("mae-worker: unexpected argument '\(options.positional[0])' (options start with --; see --help)")
    }
    if options.string("coordinator") != nil {
        // Started by an agent of mae-coordinator: the run's flags come from the coordinator.
        let others = CommandLine.arguments.dropFirst().filter { $0.hasPrefix("--") }
            .map { String($0.dropFirst(2).prefix { $0 != "=" }) }.filter { !CoordinatedWorker.flags.contains($0) }
        guard others.isEmpty else {
            throw OptionError("mae-worker: with --coordinator the run's flags (here --\(others[0])) go to "
                              + "'mae-coordinator serve'; the worker receives them from it")
        }
        StopSignal.install()
        do {
            exit(try CoordinatedWorker.run(options))
        } catch let error as OptionError {
            print("error: \(error)", to: &standardError)
            exit(2)
        } catch let error as TrainingError {
            print("error: \(error)", to: &standardError)
            if case .checkpointWriteFailed = error { exit(TrainingError.checkpointWriteExitStatus) }
            exit(1)
        } catch {
            print("error: \(error)", to: &standardError)
            exit(1)
        }
    }
    (config, distributed) = try WorkerOptions.parse(options)
} catch {
    print("error: \(error)", to: &standardError)
    exit(2)
}

StopSignal.install()
do {
    if let address = distributed.rendezvous {
        let line = "rank \(distributed.rank) of \(distributed.worldSize): joining the job at \(address) "
            + "(generation \(distributed.generation), \(distributed.backend.rawValue))"
        if distributed.rank == 0 { print(line); fflush(stdout) }
    }
    let collective = try makeCollective(distributed)
    defer { collective.close() }
    if distributed.backend == .mpi, collective.rank == 0 {
        print("joined the MPI job: \(collective.worldSize) workers")
    }
    _ = try Trainer(config: config, distributed: distributed, collective: collective).run()
} catch {
    print("error: \(error)", to: &standardError)
    exit(1)
}
exit(0)
