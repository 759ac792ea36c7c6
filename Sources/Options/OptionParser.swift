/// A small declarative command-line parser, in the shape users know from
/// swift-argument-parser (which this package cannot depend on): each command declares
/// its options with help text and defaults, parsing validates before any work starts,
/// and `--help` prints every option with its default.

/// A parse or validation failure, with the one-line message to show the user.
public struct OptionError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}

/// One declared option.
public struct OptionSpec: Sendable {
    /// Long name without dashes, e.g. "batch-size".
    public let name: String
    /// Name of the value in help text, e.g. "B"; nil for a flag that takes no value.
    public let valueName: String?
    /// Default shown in help and used when the option is absent (nil: no default).
    public let defaultValue: String?
    /// One line of help.
    public let help: String
    /// Shown in help; false for internal options.
    public let visible: Bool

    public init(_ name: String, value valueName: String? = nil, default defaultValue: String? = nil,
                help: String, visible: Bool = true) {
        self.name = name
        self.valueName = valueName
        self.defaultValue = defaultValue
        self.help = help
        self.visible = visible
    }

    /// A flag (no value; false unless given).
    public static func flag(_ name: String, help: String) -> OptionSpec {
        OptionSpec(name, value: nil, default: nil, help: help)
    }
}

/// The parsed options of one command.
public struct ParsedOptions: Sendable {
    /// The command, e.g. "mae bench step".
    public let command: String
    private let values: [String: String]
    private let flags: Set<String>
    /// Arguments that are not options, in order.
    public let positional: [String]

    init(command: String, values: [String: String], flags: Set<String>, positional: [String]) {
        self.command = command
        self.values = values
        self.flags = flags
        self.positional = positional
    }

    /// True when the flag was given.
    public func flag(_ name: String) -> Bool { flags.contains(name) }

    /// The option's value (given or default), or nil.
    public func string(_ name: String) -> String? { values[name] }

    /// Whether the option was present on the command line or has a default.
    public func has(_ name: String) -> Bool { values[name] != nil }

    /// The value, which must exist.
    public func required(_ name: String) throws -> String {
        guard let value = values[name] else { throw OptionError("\(command): missing --\(name)") }
        return value
    }

    /// An integer value within `range`.
    public func int(_ name: String, in range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        let text = try required(name)
        guard let value = Int(text) else { throw OptionError("\(command): --\(name) expects an integer, got '\(text)'") }
        guard range.contains(value) else {
            throw OptionError("\(command): --\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    /// An optional integer (nil when absent and without default).
    public func optionalInt(_ name: String, in range: ClosedRange<Int> = Int.min...Int.max) throws -> Int? {
        values[name] == nil ? nil : try int(name, in: range)
    }

    /// A floating-point value accepted by `isValid` (described by `expectation` in the error).
    public func double(_ name: String, expectation: String = "a number",
                       isValid: (Double) -> Bool = { $0.isFinite }) throws -> Double {
        let text = try required(name)
        guard let value = Double(text), value.isFinite, isValid(value) else {
            throw OptionError("\(command): --\(name) expects \(expectation), got '\(text)'")
        }
        return value
    }

    /// An optional floating-point value.
    public func optionalDouble(_ name: String, expectation: String = "a number",
                               isValid: (Double) -> Bool = { $0.isFinite }) throws -> Double? {
        values[name] == nil ? nil : try double(name, expectation: expectation, isValid: isValid)
    }
}

/// A command's declaration: its name, summary, options and positional arguments.
public struct CommandSpec: Sendable {
    public let name: String
    public let summary: String
    public let usage: String
    public let options: [OptionSpec]

    /// - Parameters:
    ///   - name: the full command, e.g. "mae bench step".
    ///   - summary: one paragraph shown at the top of help.
    ///   - usage: the positional part of the usage line, e.g. "DIR" (may be empty).
    ///   - options: the options; `--help` is added automatically.
    public init(name: String, summary: String, usage: String = "", options: [OptionSpec]) {
        self.name = name
        self.summary = summary
        self.usage = usage
        self.options = options
    }

    /// Help text listing every visible option with its default.
    public var help: String {
        var lines = ["usage: \(name)\(usage.isEmpty ? "" : " " + usage) [options]", "", summary, "", "options:"]
        let shown = options.filter(\.visible)
        let labels = shown.map { "--\($0.name)" + ($0.valueName.map { " \($0)" } ?? "") }
        let width = min(max(labels.map(\.count).max() ?? 0, 6) + 2, 32)
        for (spec, label) in zip(shown, labels) {
            var line = "  " + padded(label, to: max(width, label.count + 1))
            line += spec.help
            if let value = spec.defaultValue { line += " (default: \(value))" }
            lines.append(line)
        }
        lines.append("  " + padded("--help", to: width) + "show this help")
        return lines.joined(separator: "\n")
    }

    /// Parses `arguments` (without the command words). Throws `OptionError` for an
    /// unknown option, a missing value or a repeated option; returns nil when `--help`
    /// was asked for (the caller prints `help` and exits 0).
    public func parse(_ arguments: [String]) throws -> ParsedOptions? {
        var values: [String: String] = [:]
        var flags = Set<String>()
        var positional: [String] = []
        var seen = Set<String>()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--help" || argument == "-h" { return nil }
            if argument == "--" { positional.append(contentsOf: arguments[index...]); break }
            guard argument.hasPrefix("--") else { positional.append(argument); continue }
            var name = String(argument.dropFirst(2))
            var inlineValue: String?
            if let equals = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard let spec = options.first(where: { $0.name == name }) else {
                throw OptionError("\(self.name): unknown option --\(name) (see --help)")
            }
            guard seen.insert(name).inserted else { throw OptionError("\(self.name): --\(name) given twice") }
            if spec.valueName == nil {
                guard inlineValue == nil else { throw OptionError("\(self.name): --\(name) takes no value") }
                flags.insert(name)
            } else if let inlineValue {
                values[name] = inlineValue
            } else {
                guard index < arguments.count else { throw OptionError("\(self.name): --\(name) needs a value") }
                values[name] = arguments[index]
                index += 1
            }
        }
        for spec in options where spec.valueName != nil && values[spec.name] == nil {
            if let value = spec.defaultValue { values[spec.name] = value }
        }
        return ParsedOptions(command: name, values: values, flags: flags, positional: positional)
    }
}

/// `text` followed by spaces up to `width` characters.
private func padded(_ text: String, to width: Int) -> String {
    text + String(repeating: " ", count: max(0, width - text.count))
}
