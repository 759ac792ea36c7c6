import Foundation
import Model
import Testing
@testable import Training

@Suite struct RunConfigTests {
    let config = RunConfig(dataRoot: "/data", model: tinyModelConfig(), batchSize: 8, runDirectory: "/run")

    @Test func resumeNamesEveryIncompatibleSetting() {
        var other = config
        other.batchSize = 16
        other.seed = 9
        var model = tinyModelConfig()
        model.encoderDepth = 2
        other.model = model
        let differences = other.resumeIncompatibilities(with: config, savedFingerprint: "aaaa", fingerprint: "bbbb")
        #expect(differences.count == 4, "\(differences)")
        #expect(differences.contains("--batch-size was 8, now 16"))
        #expect(differences.contains { $0.hasPrefix("model was") })
        #expect(differences.contains { $0.contains("dataset differs") })
        #expect(differences.contains("--seed was 0, now 9"))
        // The world size is no setting of the run: a resume with another one splits the rest of the epoch anew.
        #expect(!differences.contains { $0.contains("world size") })
        #expect(config.resumeIncompatibilities(with: config, savedFingerprint: "a", fingerprint: "a").isEmpty)
        let message = TrainingError.incompatibleResume(differences).description
        #expect(message.contains("--batch-size was 8, now 16") && !message.contains("\n"))
    }

    @Test func resumeReportsChangedButCompatibleSettings() {
        var other = config
        other.epochs = 1600
        other.absoluteLearningRate = 1e-3
        #expect(other.resumeChanges(from: config) == ["--epochs 800 -> 1600", "--lr none -> 0.001"])
    }

    @Test func configRoundTripsThroughJSONWithTheReferenceNames() throws {
        let data = try JSONEncoder().encode(config)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"batch_size\"", "\"blr\"", "\"min_lr\"", "\"warmup_epochs\"", "\"accum_iter\"", "\"mask_ratio\"",
                    "\"norm_pix_loss\"", "\"weight_decay\""] {
            #expect(text.contains(key), "missing \(key)")
        }
        #expect(try JSONDecoder().decode(RunConfig.self, from: data) == config)
    }

    @Test func maskingIsSavedAndOlderCheckpointsReadAsRandom() throws {
        var blockConfig = config
        blockConfig.masking = .block
        let data = try JSONEncoder().encode(blockConfig)
        #expect(String(decoding: data, as: UTF8.self).contains("\"masking\":\"block\""))
        #expect(try JSONDecoder().decode(RunConfig.self, from: data).maskingStrategy == .block)
        // A state.json written before --masking existed has no key: that run masked at random.
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        object.removeValue(forKey: "masking")
        let older = try JSONDecoder().decode(RunConfig.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(older.masking == nil && older.maskingStrategy == .random)
        #expect(blockConfig.resumeChanges(from: older) == ["--masking random -> block"])
    }

    /// The gradient wire is saved; a state.json from before it read as fp32; a switch on
    /// resume is allowed and reported (the checkpoint holds fp32 weights and moments either way).
    @Test func gradientWireIsSavedAndOlderCheckpointsReadAsFP32() throws {
        var wireConfig = config
        wireConfig.gradientWire = .bf16
        let data = try JSONEncoder().encode(wireConfig)
        #expect(String(decoding: data, as: UTF8.self).contains("\"gradient_wire\":\"bf16\""))
        #expect(try JSONDecoder().decode(RunConfig.self, from: data).gradientWireFormat == .bf16)
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        object.removeValue(forKey: "gradient_wire")
        let older = try JSONDecoder().decode(RunConfig.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(older.gradientWire == nil && older.gradientWireFormat == .fp32)
        #expect(wireConfig.resumeChanges(from: older) == ["--gradient-wire fp32 -> bf16"])
        #expect(wireConfig.resumeIncompatibilities(with: older, savedFingerprint: "f", fingerprint: "f").isEmpty)
    }
}
