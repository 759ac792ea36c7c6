import Kernels
import Options
#if canImport(Glibc)
import Glibc
#endif

/// One `mae` subcommand: its words ("bench", "step"), its declaration, and its work.
protocol Subcommand {
    /// The words after `mae` that select it, e.g. ["bench", "step"].
    static var words: [String] { get }
    /// Options and help.
    static var spec: CommandSpec { get }
    /// Runs it; throws with a one-line message on bad input or failure.
    static func run(_ options: ParsedOptions) throws
    /// True for commands that other programs start (left out of `mae --help`).
    static var isInternal: Bool { get }
}

extension Subcommand {
    static var isInternal: Bool { false }
}

/// Finds the subcommand named by the leading words of `arguments`, parses its
/// options, runs it, and turns any error into one line on standard error and exit 1.
func dispatch(_ arguments: [String], among subcommands: [any Subcommand.Type]) -> Never {
    var standardError = FileHandleStream.standardError
    let match = subcommands
        .filter { arguments.starts(with: $0.words) }
        .max { $0.words.count < $1.words.count }
    guard let command = match else {
        let listed = subcommands.filter { !$0.isInternal }
        let names = listed.map { "mae " + $0.words.joined(separator: " ") }
        let width = (names.map(\.count).max() ?? 0) + 2
        let list = zip(names, listed).map { name, command in
            "  " + name + String(repeating: " ", count: width - name.count) + firstSentence(command.spec.summary)
        }
        let isHelp = arguments.isEmpty || arguments == ["--help"] || arguments == ["-h"] || arguments == ["help"]
        let text = "usage: mae COMMAND [options]\n\ncommands:\n" + list.joined(separator: "\n")
            + "\n\n'mae COMMAND --help' describes a command's options."
        if isHelp { print(text); exit(0) }
        print("mae: unknown command '\(arguments.joined(separator: " "))'\n\n" + text, to: &standardError)
        exit(2)
    }
    do {
        guard let options = try command.spec.parse(Array(arguments.dropFirst(command.words.count))) else {
            print(command.spec.help)
            exit(0)
        }
        try command.run(options)
        exit(0)
    } catch {
        print("error: \(error)", to: &standardError)
        exit(1)
    }
}

private func firstSentence(_ text: String) -> String {
    text.split(separator: ".", maxSplits: 1).first.map { String($0) + "." } ?? text
}
