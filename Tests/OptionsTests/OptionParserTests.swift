import Testing
@testable import Options

@Suite struct OptionParserTests {
    let spec = CommandSpec(name: "mae demo", summary: "A demo.", usage: "DIR", options: [
        OptionSpec("batch-size", value: "B", default: "64", help: "images per step"),
        OptionSpec("mask-ratio", value: "R", default: "0.75", help: "share of patches removed"),
        .flag("norm-pix-loss", help: "normalise each target patch"),
    ])

    @Test func parsesValuesFlagsDefaultsAndPositionals() throws {
        let options = try #require(try spec.parse(["data", "--batch-size", "8", "--norm-pix-loss"]))
        #expect(try options.int("batch-size", in: 1...1024) == 8)
        #expect(try options.double("mask-ratio") == 0.75)
        #expect(options.flag("norm-pix-loss"))
        #expect(options.positional == ["data"])
        let inline = try #require(try spec.parse(["--batch-size=3"]))
        #expect(try inline.int("batch-size") == 3)
    }

    @Test func rejectsBadInputWithOneLineErrors() throws {
        #expect(throws: OptionError.self) { try spec.parse(["--bogus"]) }
        #expect(throws: OptionError.self) { try spec.parse(["--batch-size"]) }
        #expect(throws: OptionError.self) { try spec.parse(["--batch-size", "1", "--batch-size", "2"]) }
        let options = try #require(try spec.parse(["--batch-size", "0"]))
        #expect(throws: OptionError.self) { try options.int("batch-size", in: 1...1024) }
        let ratio = try #require(try spec.parse(["--mask-ratio", "1.5"]))
        #expect(throws: OptionError.self) { try ratio.double("mask-ratio") { $0 > 0 && $0 < 1 } }
    }

    @Test func helpListsEveryOptionWithItsDefault() throws {
        #expect(try spec.parse(["--help"]) == nil)
        #expect(spec.help.contains("--batch-size B"))
        #expect(spec.help.contains("(default: 64)"))
        #expect(spec.help.contains("--norm-pix-loss"))
    }
}
