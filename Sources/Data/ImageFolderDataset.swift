import System

/// An ImageNet-style folder of images, listed once and sorted, as torchvision's
/// `datasets.ImageFolder` lists it: `ROOT/<split>/<class>/<image>` (or, for the
/// training split, `ROOT/<class>/<image>` when ROOT holds the class folders directly).
///
/// Classes are the sub-folders of the split folder, sorted by name (byte order, as
/// Python sorts them); a class's images are found recursively (symbolic links
/// followed), folders visited in sorted path order and files sorted within a folder,
/// exactly torchvision's `make_dataset`. Files count when their extension is `.jpg`,
/// `.jpeg` or `.png` in any letter case. A label is its class's position in `classNames`.
public struct ImageFolderDataset: Sendable {
    /// The root folder given to `init`.
    public let root: String
    /// The folder holding the class folders (`root/split`, or `root` itself).
    public let directory: String
    /// Class folder names, sorted.
    public let classNames: [String]
    /// Image paths relative to `directory` ("class/image.JPEG"), in dataset order.
    public let files: [String]
    /// The class of each file (an index into `classNames`).
    public let labels: [Int]
    /// SHA-256 (hex) of the listing: class names and files in order. Stored in
    /// checkpoints, so a resumed run can tell that it sees the same dataset.
    public let fingerprint: String

    /// Number of images.
    public var count: Int { files.count }

    /// The file extensions read, lowercased.
    public static let imageExtensions = ["jpg", "jpeg", "png"]

    /// Lists `root/split` (or `root` for the training split when it holds the class
    /// folders). Throws a `DataError` naming the folder when it is missing, has no class
    /// folders, or a class folder holds no image.
    public init(root: String, split: String = "train") throws {
        self.root = root
        let trimmedRoot = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        guard FileSystem.kind(of: trimmedRoot) == .directory else {
            throw DataError("dataset folder \(root) does not exist or is not a folder; "
                + "pass the folder that holds train/<class>/ (or the class folders), e.g. one made by 'mae synth-data DIR'")
        }
        let splitFolder = trimmedRoot + "/" + split
        if FileSystem.kind(of: splitFolder) == .directory {
            directory = splitFolder
        } else if split == "train" && FileSystem.kind(of: trimmedRoot + "/val") != .directory {
            // No train/ (and no val/ beside it): ROOT holds the class folders itself.
            directory = trimmedRoot
        } else {
            throw DataError("dataset folder \(root) has no '\(split)' folder; expected \(splitFolder)/<class>/<image>")
        }

        let folder = directory  // a closure cannot capture self before init ends
        let classes = try DataError.reportingSystemCalls { try FileSystem.entries(of: folder) }
            .filter { $0.kind == .directory }
            .map(\.name)
            .sorted(by: pythonOrder)
        guard !classes.isEmpty else {
            throw DataError("no class folders in \(directory); expected \(directory)/<class>/<image>.JPEG")
        }
        var files: [String] = []
        var labels: [Int] = []
        var emptyClasses: [String] = []
        for (label, name) in classes.enumerated() {
            let before = files.count
            try ImageFolderDataset.collectImages(in: directory, relative: name, into: &files)
            if files.count == before { emptyClasses.append(name) }
            labels.append(contentsOf: repeatElement(label, count: files.count - before))
        }
        guard emptyClasses.isEmpty else {
            let shown = emptyClasses.prefix(5).joined(separator: ", ") + (emptyClasses.count > 5 ? ", ..." : "")
            throw DataError("\(emptyClasses.count) class folder(s) in \(directory) hold no .jpg/.jpeg/.png image: \(shown); "
                + "remove them or add images (labels would otherwise not match torchvision's ImageFolder)")
        }
        classNames = classes
        self.files = files
        self.labels = labels
        fingerprint = ImageFolderDataset.fingerprint(classNames: classes, files: files)
    }

    /// The full path of file `index`.
    public func path(of index: Int) -> String { directory + "/" + files[index] }

    /// torchvision's `make_dataset`: `for root, _, names in sorted(os.walk(class, followlinks=True))`,
    /// then `sorted(names)`; every non-folder entry with an image extension counts.
    private static func collectImages(in base: String, relative: String, into files: inout [String]) throws {
        var folders: [(path: String, images: [String])] = []
        try walk(base: base, relative: relative, depth: 0, into: &folders)
        folders.sort { pythonOrder($0.path, $1.path) }
        for folder in folders { files.append(contentsOf: folder.images.map { folder.path + "/" + $0 }) }
    }

    private static func walk(base: String, relative: String, depth: Int,
                             into folders: inout [(path: String, images: [String])]) throws {
        guard depth < 64 else {
            throw DataError("folders nested deeper than 64 levels at \(base)/\(relative) (a symbolic link loop?); remove the loop")
        }
        let entries = try DataError.reportingSystemCalls { try FileSystem.entries(of: base + "/" + relative) }
        let images = entries.filter { $0.kind != .directory && isImageName($0.name) }.map(\.name).sorted(by: pythonOrder)
        folders.append((relative, images))
        for entry in entries where entry.kind == .directory {
            try walk(base: base, relative: relative + "/" + entry.name, depth: depth + 1, into: &folders)
        }
    }

    /// True for names ending in an image extension, any letter case (torchvision's `has_file_allowed_extension`).
    static func isImageName(_ name: String) -> Bool {
        let lowered = name.lowercased()
        return imageExtensions.contains { lowered.hasSuffix("." + $0) }
    }

    static func fingerprint(classNames: [String], files: [String]) -> String {
        var hasher = SHA256()
        for name in classNames { hasher.update(Array("class\t\(name)\n".utf8)) }
        for file in files { hasher.update(Array("file\t\(file)\n".utf8)) }
        return hasher.finalizeHex()
    }
}

/// Python's string order for names: by Unicode code point, which is UTF-8 byte order.
func pythonOrder(_ left: String, _ right: String) -> Bool {
    left.utf8.lexicographicallyPrecedes(right.utf8)
}
