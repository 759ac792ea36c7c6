// mae-coordinator: the control plane of a training run (serve, agent, status, stop,
// checkpoint). Parses the subcommand's flags before any work and exits with what it returns.
import Control
import Kernels
import Options
#if canImport(Glibc)
import Glibc
#endif

var standardError = FileHandleStream.standardError
let arguments = Array(CommandLine.arguments.dropFirst())
let commands: [String: (CommandSpec, (ParsedOptions) throws -> Int32)] = [
    "serve": (CoordinatorCommands.serveSpec, { options in
        let configuration = try CoordinatorCommands.serveConfiguration(options)
        ProcessSignals.install()
        let coordinator: Coordinator
        do { coordinator = try Coordinator(configuration) } catch {
            print("error: \(error)", to: &standardError)
            return CoordinatorExit.badConfiguration.rawValue
        }
        return coordinator.run()
    }),
    "agent": (CoordinatorCommands.agentSpec, { options in
        let configuration = try CoordinatorCommands.agentConfiguration(options)
        ProcessSignals.install()
        // A Ctrl-C at the terminal is the coordinator's to act on (it stops the run gracefully).
        signal(SIGINT, SIG_IGN)
        return try Agent(configuration).run()
    }),
    "status": (CoordinatorCommands.statusSpec, CoordinatorCommands.status),
    "stop": (CoordinatorCommands.stopSpec, CoordinatorCommands.stop),
    "checkpoint": (CoordinatorCommands.checkpointSpec, CoordinatorCommands.checkpoint),
    "fuzz": (CoordinatorCommands.fuzzSpec, CoordinatorCommands.fuzz),
]

guard let word = arguments.first, let (spec, body) = commands[word] else {
    let isHelp = arguments.isEmpty || ["--help", "-h", "help"].contains(arguments[0])
    if isHelp { print(CoordinatorCommands.summary); exit(0) }
    print("mae-coordinator: unknown command '\(arguments[0])'\n\n\(CoordinatorCommands.summary)", to: &standardError)
    exit(CoordinatorExit.badConfiguration.rawValue)
}
let options: ParsedOptions
do {
    guard let parsed = try spec.parse(Array(arguments.dropFirst())) else {
        print(spec.help)
        exit(0)
    }
    options = parsed
} catch {
    print("error: \(error)", to: &standardError)
    exit(CoordinatorExit.badConfiguration.rawValue)
}
do {
    exit(try body(options))
} catch let error as OptionError {
    print("error: \(error)", to: &standardError)
    exit(CoordinatorExit.badConfiguration.rawValue)
} catch {
    print("error: \(error)", to: &standardError)
    exit(word == "serve" ? CoordinatorExit.badConfiguration.rawValue : 1)
}
