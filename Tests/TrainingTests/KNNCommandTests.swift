import Foundation
import Testing
import TestSupport

extension WorkerProcessTests {
    /// `mae knn` scores a run's encoder and a freshly initialised one on the tiny dataset; its
    /// last line is `top1=X top5=Y`; a folder without val/ is one line and exit 1.
    @Test func knnScoresARunAndRefusesDataWithoutVal() throws {
        defer { temporary.remove() }
        try run("knn-source", ["--max-steps", "4"])
        func lastLine(_ process: WorkerProcess) -> String {
            process.output.split(separator: "\n").last.map(String.init) ?? ""
        }
        let trained = try mae(["knn", "--checkpoint", temporary.path + "/knn-source", "--data", data, "--k", "3",
                               "--threads", "1"], name: "knn-trained")
        #expect(try trained.wait(seconds: 1) == 0, "\(trained.errors)")
        let line = lastLine(trained)
        let values = line.split(separator: " ").compactMap { $0.split(separator: "=").last.flatMap { Double($0) } }
        #expect(line.hasPrefix("top1=") && values.count == 2, "\(trained.output)")
        // 2 classes, 2 val images: top-1 is 0, 50 or 100 %, and the truth is always in the top 5.
        #expect([0, 50, 100].contains(values.first ?? -1) && values.last == 100, "\(line)")

        let fresh = try mae(["knn", "--model-shape", "4,16,1,2,8,1,2"], name: "knn-bad-flag")
        #expect(try fresh.wait(seconds: 1) != 0)

        let trainOnly = temporary.path + "/train-only"
        try FileManager.default.createDirectory(atPath: trainOnly, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: data + "/train", toPath: trainOnly + "/train")
        let refused = try mae(["knn", "--checkpoint", temporary.path + "/knn-source", "--data", trainOnly],
                              name: "knn-no-val")
        #expect(try refused.wait(seconds: 1) == 1)
        #expect(refused.errors.contains("has no val/ folder") && refused.errors.split(separator: "\n").count == 1,
                "\(refused.errors)")
    }
}
