import Collectives

/// The collective for a worker's settings: `SingleProcessCollective` when standalone,
/// otherwise the chosen backend (TCP ring joined through the rendezvous, moved to shared
/// memory as `settings.transport` says, or MPI).
public func makeCollective(_ settings: DistributedSettings) throws -> any Collective {
    if settings.isStandalone { return SingleProcessCollective() }
    switch settings.backend {
    case .tcp:
        guard let address = settings.rendezvous else {
            throw TrainingError.invalidConfiguration("the TCP backend needs --rendezvous HOST:PORT")
        }
        let listenHost = try settings.listenHost
            ?? SocketAddress.localAddress(toward: SocketAddress(parsing: address))
        return try settings.transport.connect(RendezvousConfig(
            rank: settings.rank, worldSize: settings.worldSize, address: address, jobToken: settings.jobToken,
            generation: settings.generation, timeoutSeconds: settings.timeoutSeconds, listenHost: listenHost,
            congestionControl: settings.congestionControl))
    case .mpi:
        #if MPI
        let collective = try MPICollective(timeoutSeconds: settings.timeoutSeconds)
        guard settings.worldSize < 0 || collective.worldSize == settings.worldSize,
              settings.rank < 0 || collective.rank == settings.rank else {
            throw TrainingError.invalidConfiguration(
                "MPI placed this worker at rank \(collective.rank) of \(collective.worldSize), but the flags say "
                + "--rank \(settings.rank) --world-size \(settings.worldSize); make them agree with mpirun -np")
        }
        return collective
        #else
        throw TrainingError.invalidConfiguration(
            "--backend mpi needs a build with the MPI trait: swift build --traits MPI (and libopenmpi-dev)")
        #endif
    }
}
