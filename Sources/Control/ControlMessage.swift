import Foundation
import Training

/// Every message of the control protocol between the coordinator, the agents, the workers
/// and the `status`/`stop`/`checkpoint` commands. One JSON object per frame; a message that
/// does not decode as one of these closes the connection.
public enum ControlMessage: Codable, Sendable, Equatable {
    // MARK: Handshake (see `Authentication`)
    /// Coordinator → peer, first: a fresh random nonce to answer.
    case challenge(nonce: String)
    /// Peer → coordinator: who it is, and the HMAC of the nonce under the job secret.
    case hello(Introduction)
    /// Coordinator → peer: accepted, with the HMAC of the peer's own nonce (the coordinator knows the secret too).
    case welcome(proof: String)
    /// Either side: refused or ended, and why. The connection closes after it.
    case refused(reason: String)

    // MARK: Coordinator and worker
    /// What a worker of this generation trains: its place in the world, the config and where to start.
    case assignment(Assignment)
    /// Worker → coordinator: where its ring listener waits (port 0 under mpirun: no ring, it has joined).
    case ringListener(host: String, port: Int)
    /// Coordinator → every worker, once all have a listener: "host:port" of every rank, by rank.
    case ringTable(addresses: [String])
    /// Worker → coordinator, about every second; `report` is nil until the first step.
    case heartbeat(report: StepReport?)
    /// Rank 0 → coordinator: a checkpoint is complete on disk.
    case checkpointWritten(path: String, step: Int)
    /// Worker → coordinator, just before it exits 0.
    case finished(steps: Int, stoppedOnRequest: Bool)
    /// Coordinator → workers: write a checkpoint after the current step.
    case requestCheckpoint
    /// Coordinator → workers: finish the step, write a checkpoint, exit 0.
    case requestStop

    // MARK: Coordinator and agent
    /// Coordinator → agent: start these ranks' workers for this generation.
    case startWorkers(generation: Int, ranks: [Int])
    /// Coordinator → agent: stop every worker (SIGTERM, then SIGKILL after the grace period).
    case stopWorkers(generation: Int)
    /// Agent → coordinator: none of its workers runs any more.
    case workersStopped(generation: Int)
    /// Agent → coordinator: a worker process started.
    case workerStarted(rank: Int, generation: Int, pid: Int32)
    /// Agent → coordinator: a worker process ended (`status`: exit status or 128 + signal).
    case workerExited(rank: Int, generation: Int, pid: Int32, status: Int32, description: String)
    /// Agent → coordinator, about every second.
    case agentHeartbeat
    /// Coordinator → agent: the run is over; stop the workers and exit.
    case shutdown(reason: String)

    // MARK: Coordinator and the status, stop and checkpoint commands
    case statusRequest
    case status(RunStatus)
    case stopRun
    case checkpointRun
    case acknowledged(message: String)
}

/// Who a connecting peer is (part of its `hello`).
public struct Introduction: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable { case worker, agent, control }
    public var role: Role
    /// HMAC-SHA256 (hex) of the coordinator's challenge, see `Authentication.proof`.
    public var proof: String
    /// The peer's own nonce, which the coordinator's `welcome` answers.
    public var nonce: String
    public var host: String
    public var pid: Int32
    /// Workers: their rank and generation. Agents: the first rank and how many they start.
    public var rank: Int = 0
    public var generation: Int = 0
    public var rankCount: Int = 0
    /// True when the peer ran under a coordinator of this run that went away and comes back
    /// to be adopted: a worker that trained on in its ring, or an agent whose workers of
    /// `generation` still run (see `RunState+Adoption.swift`).
    public var reconnecting = false

    public init(role: Role, proof: String, nonce: String, host: String, pid: Int32, rank: Int = 0, generation: Int = 0,
                rankCount: Int = 0, reconnecting: Bool = false) {
        self.role = role
        self.proof = proof
        self.nonce = nonce
        self.host = host
        self.pid = pid
        self.rank = rank
        self.generation = generation
        self.rankCount = rankCount
        self.reconnecting = reconnecting
    }
}

/// What a worker of one generation needs to train.
public struct Assignment: Codable, Sendable, Equatable {
    public var rank: Int
    public var worldSize: Int
    public var generation: Int
    /// The run config; `resume` names the checkpoint to start from (nil: a fresh start).
    public var config: RunConfig
    /// Whether `threads` (and `dataThreads`) are the worker's to choose from its machine's cores.
    public var automaticThreads: Bool
    public var automaticDataThreads: Bool
    /// The schedule the coordinator computed from the dataset size, world size and --accum-iter.
    public var schedule: LearningRateSchedule
    /// The token of this generation's ring connections (derived from the secret; see `Authentication.ringToken`).
    public var ringToken: String
    /// Seconds a ring call may make no progress before it fails.
    public var peerTimeoutSeconds: Double
    /// Seconds between heartbeats.
    public var heartbeatSeconds: Double

    public init(rank: Int, worldSize: Int, generation: Int, config: RunConfig, automaticThreads: Bool,
                automaticDataThreads: Bool, schedule: LearningRateSchedule, ringToken: String, peerTimeoutSeconds: Double, heartbeatSeconds: Double) {
        self.rank = rank
        self.worldSize = worldSize
        self.generation = generation
        self.config = config
        self.automaticThreads = automaticThreads
        self.automaticDataThreads = automaticDataThreads
        self.schedule = schedule
        self.ringToken = ringToken
        self.peerTimeoutSeconds = peerTimeoutSeconds
        self.heartbeatSeconds = heartbeatSeconds
    }
}

extension ControlMessage {
    /// The JSON of this message.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    /// Decodes one message; throws a `ControlError` naming the problem.
    public static func decode(_ bytes: [UInt8]) throws -> ControlMessage {
        do {
            return try JSONDecoder().decode(ControlMessage.self, from: Data(bytes))
        } catch {
            throw ControlError("a control message does not decode (\(error)); is the peer a mae-coordinator of this version?")
        }
    }

    /// A short name for logs: the case without its values.
    public var name: String { String("\(self)".prefix { $0 != "(" }) }
}
