import Foundation
import Testing
import TestSupport
@testable import Training

extension WorkerProcessTests {
    /// `--knn-every 2` scores the encoder after epochs 2 and 3 (the last) into log.txt and
    /// TensorBoard, and the run ends with parameters and moments bitwise equal to a run
    /// without it; the same for two workers, which split the feature extraction.
    @Test func knnEveryLogsScoresAndLeavesTrainingUnchanged() throws {
        defer { temporary.remove() }
        try run("plain", [])
        let scored = try run("scored", ["--knn-every", "2"])
        #expect(scored.output.contains("epoch 2/3 k-NN (k 20, 16 train, 2 val images)"), "\(scored.output)")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try bytes(checkpoint("scored", step: 12) + "/" + file) == bytes(checkpoint("plain", step: 12) + "/" + file),
                    "\(file) differs with --knn-every")
        }
        let lines = readText(temporary.path + "/scored/log.txt").split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.map { $0.contains("\"knn_top1\"") && $0.contains("\"knn_top5\"") } == [false, true, true], "\(lines)")
        // With 2 val images top-1 is 0, 50 or 100 and the truth is in the top 5 of 2 classes.
        #expect(lines.last?.contains("\"knn_top5\": 100") == true, "\(lines)")
        let plainLines = readText(temporary.path + "/plain/log.txt").split(separator: "\n")
        #expect(plainLines.allSatisfy { !$0.contains("knn") })

        let events = try TensorBoardReader.read(directory: temporary.path + "/scored/tensorboard").flatMap { $0 }
        let knnEvents = events.filter { $0.scalars["knn_top1"] != nil }
        #expect(knnEvents.map(\.step) == [2000, 3000])
        #expect(knnEvents.allSatisfy { $0.scalars["knn_top5"] == 100 })

        // Two workers: each extracts half of the features; the weights are again unchanged.
        func pair(_ name: String, _ extra: [String]) throws {
            let port = try freeLoopbackPort()
            let workers = try (0..<2).map { rank in
                try WorkerProcess(arguments(runDirectory: name, [
                    "--rank", "\(rank)", "--world-size", "2", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                    "--batch-size", "2", "--max-steps", "8",
                ] + extra), logDirectory: temporary.path, name: "\(name)-\(rank)")
            }
            for worker in workers {
                let status = try worker.wait(seconds: 90)
                #expect(status == 0, "rank exited \(status): \(worker.errors)")
            }
        }
        try pair("pair-plain", [])
        try pair("pair-scored", ["--knn-every", "1"])
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try bytes(checkpoint("pair-scored", step: 8) + "/" + file) == bytes(checkpoint("pair-plain", step: 8) + "/" + file),
                    "two workers: \(file) differs with --knn-every")
        }
        let pairLines = readText(temporary.path + "/pair-scored/log.txt").split(separator: "\n")
        #expect(pairLines.count == 2 && pairLines.allSatisfy { $0.contains("\"knn_top1\"") }, "\(pairLines)")

        // A data folder without val/ is refused before any work.
        let trainOnly = temporary.path + "/train-only"
        try FileManager.default.createDirectory(atPath: trainOnly, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: data + "/train", toPath: trainOnly + "/train")
        let refused = try WorkerProcess(arguments(runDirectory: "refused", ["--standalone", "--knn-every", "1", "--data", trainOnly]),
                                        logDirectory: temporary.path, name: "knn-refused")
        #expect(try refused.wait(seconds: 60) != 0)
        #expect(refused.errors.contains("has no val/ folder"), "\(refused.errors)")
    }
}
