import Foundation
import Testing
import TestSupport
@testable import Model
#if canImport(Glibc)
import Glibc
#endif

/// The `mae` executable SwiftPM builds next to the test bundle, or nil.
private func maeExecutable() -> String? {
    let buildDirectory = Bundle.module.bundleURL.deletingLastPathComponent()
    let candidates = [buildDirectory.appendingPathComponent("mae").path,
                      Bundle.main.bundleURL.appendingPathComponent("mae").path,
                      Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("mae").path]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Runs `mae` with `arguments`, at most `timeout` seconds (then it is killed by its pid);
/// returns the exit status and both outputs.
private func runMae(_ arguments: [String], in directory: TemporaryDirectory,
                    timeout: Double = 120) throws -> (status: Int32, output: String, error: String) {
    let executable = try #require(maeExecutable(), "the mae executable is not built next to the tests; run `swift build --build-tests`")
    let outputPath = directory.file("stdout.txt"), errorPath = directory.file("stderr.txt")
    try #require(FileManager.default.createFile(atPath: outputPath, contents: nil))
    try #require(FileManager.default.createFile(atPath: errorPath, contents: nil))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        Issue.record("mae \(arguments.joined(separator: " ")) ran longer than \(timeout) s and was killed")
    }
    process.waitUntilExit()
    let output = try String(contentsOfFile: outputPath, encoding: .utf8)
    let error = try String(contentsOfFile: errorPath, encoding: .utf8)
    return (process.terminationStatus, output, error)
}

@Suite(.serialized) struct ReferenceStepCommandTests {
    @Test func matchesTheFixtureEndToEnd() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let out = directory.file("out.safetensors")
        let inputs = try fixturePath("micro_inputs")
        let result = try runMae(["reference-step", "--config", try fixturePath("micro_config", "json"),
                                 "--weights", try fixturePath("micro_weights"), "--images", inputs, "--noise", inputs,
                                 "--out", out, "--norm-pix-loss", "--threads", "2"], in: directory)
        #expect(result.status == 0, "stderr: \(result.error)")
        guard result.status == 0 else { return }
        #expect(result.output.contains("loss="))
        let ours = try SafeTensorsFile.read(path: out)
        let expected = try SafeTensorsFile.read(path: try fixturePath("micro_expected_norm_pix"))
        #expect(Set(ours.names) == Set(expected.names))
        for tensor in ours.tensors {
            #expect(tensor.shape == expected.tensor(named: tensor.name)?.shape, "\(tensor.name)")
            let values = try ours.floats(named: tensor.name)
            try values.withUnsafeBufferPointer {
                try expectMatchesReference($0, expected, tensor.name, tolerance: ReferenceFixtureTests.tolerance)
            }
        }
    }

    /// `--task finetune` reproduces the fine-tuning fixtures (both poolings) end to end.
    @Test(arguments: [true, false])
    func finetuneMatchesTheFixtureEndToEnd(globalPool: Bool) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let out = directory.file("out.safetensors")
        let suffix = FinetuneReferenceTests.suffix(globalPool)
        let inputs = try fixturePath("micro_finetune_inputs")
        let result = try runMae(["reference-step", "--task", "finetune", "--config", try fixturePath("micro_config", "json"),
                                 "--weights", try fixturePath("micro_finetune_weights_" + suffix), "--images", inputs,
                                 "--targets", inputs, "--out", out, "--threads", "2"] + (globalPool ? [] : ["--cls-token"]),
                                in: directory)
        #expect(result.status == 0, "stderr: \(result.error)")
        guard result.status == 0 else { return }
        #expect(result.output.contains("task=finetune") && result.output.contains("classes=5"))
        let ours = try SafeTensorsFile.read(path: out)
        let expected = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_expected_" + suffix))
        #expect(Set(ours.names) == Set(expected.names))
        for tensor in ours.tensors {
            let values = try ours.floats(named: tensor.name)
            try values.withUnsafeBufferPointer {
                try expectMatchesReference($0, expected, tensor.name, tolerance: FinetuneReferenceTests.tolerance)
            }
        }

        // The other pooling's flag is a one-line error that says what to do.
        let wrong = try runMae(["reference-step", "--task", "finetune", "--config", try fixturePath("micro_config", "json"),
                                "--weights", try fixturePath("micro_finetune_weights_" + suffix), "--images", inputs,
                                "--targets", inputs, "--out", out] + (globalPool ? ["--cls-token"] : []), in: directory)
        #expect(wrong.status != 0 && wrong.error.contains("cls-token"), "\(wrong.error)")
        #expect(wrong.error.trimmingCharacters(in: .newlines).split(separator: "\n").count == 1)
    }

    @Test func badInputIsOneLineAndNonZeroExit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let weights = try fixturePath("micro_weights"), inputs = try fixturePath("micro_inputs")
        let config = try fixturePath("micro_config", "json")
        let out = directory.file("out.safetensors")
        let truncated = directory.file("truncated.safetensors")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: weights))
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: truncated))
        let common = ["--images", inputs, "--noise", inputs, "--out", out]
        let cases: [(arguments: [String], mentions: String)] = [
            (["--model", "mae_vit_nano", "--weights", weights] + common, "unknown model 'mae_vit_nano'"),
            (["--model", "mae_vit_tiny_patch4", "--weights", weights] + common, "expected [N, 3, 32, 32]"),
            (["--model", "mae_vit_tiny_patch4", "--input-size", "16", "--weights", weights] + common, "'pos_embed' has shape [1, 17, 32], the model needs [1, 17, 192]"),
            (["--model", "mae_vit_tiny_patch4", "--input-size", "30", "--weights", weights] + common, "not a multiple of the patch size"),
            (["--config", config, "--weights", truncated] + common, "truncated"),
            (["--config", config, "--weights", inputs] + common, "pos_embed"),
            (["--config", config, "--weights", weights, "--mask-ratio", "1.5"] + common, "--mask-ratio"),
            (["--config", config, "--model", "mae_vit_tiny_patch4", "--weights", weights] + common, "not both"),
            (["--config", weights, "--weights", weights] + common, "not a ModelConfig JSON"),
        ]
        for (arguments, mentions) in cases {
            let result = try runMae(["reference-step"] + arguments, in: directory)
            let lines = result.error.split(separator: "\n")
            #expect(result.status != 0, "\(arguments) succeeded")
            #expect(lines.count == 1 && lines[0].hasPrefix("error: ") && lines[0].contains(mentions),
                    "\(arguments): stderr was \(result.error)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(arguments) wrote an output")
        }
    }
}
