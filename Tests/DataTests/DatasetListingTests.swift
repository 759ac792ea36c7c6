import Testing
@testable import Data

@Suite struct ImageFolderDatasetTests {
    let jpeg: [UInt8]

    init() throws {
        jpeg = try encoded(smoothPattern(width: 8, height: 8), width: 8, height: 8, format: .jpeg(quality: 90))
    }

    @Test func listsTrainSplitSortedWithExtensionsAnyCase() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        for name in ["train/zebra/b.JPEG", "train/zebra/a.jpg", "train/Apple/x.PNG", "train/Apple/w.jpeg",
                     "train/Apple/notes.txt", "train/Apple/sub/deep.jpg", "train/Apple/sub dir/space.jpg",
                     "train/mango/m.Jpg", "val/zebra/v.JPEG"] {
            try folder.write(name, bytes: jpeg)
        }
        let dataset = try ImageFolderDataset(root: folder.path)
        #expect(dataset.directory == folder.path + "/train")
        // Byte order: upper case before lower case, as Python sorts.
        #expect(dataset.classNames == ["Apple", "mango", "zebra"])
        // Within a class: the class folder's files, then sub-folders by path
        // ("sub dir" sorts before "sub" + "/"... no: " " (0x20) < "/" is irrelevant, the folder
        // paths "Apple/sub" < "Apple/sub dir" as a prefix comes first).
        #expect(dataset.files == ["Apple/w.jpeg", "Apple/x.PNG", "Apple/sub/deep.jpg", "Apple/sub dir/space.jpg",
                                  "mango/m.Jpg", "zebra/a.jpg", "zebra/b.JPEG"])
        #expect(dataset.labels == [0, 0, 0, 0, 1, 2, 2])
        #expect(dataset.count == 7)
        let validation = try ImageFolderDataset(root: folder.path, split: "val")
        #expect(validation.files == ["zebra/v.JPEG"])
        #expect(validation.classNames == ["zebra"])
    }

    @Test func rootHoldingClassFoldersWorksForTraining() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try folder.write("cat/1.jpg", bytes: jpeg)
        try folder.write("dog/2.jpg", bytes: jpeg)
        let dataset = try ImageFolderDataset(root: folder.path + "/")
        #expect(dataset.classNames == ["cat", "dog"])
        #expect(dataset.files == ["cat/1.jpg", "dog/2.jpg"])
        #expect(throws: DataError.self) { try ImageFolderDataset(root: folder.path, split: "val") }
        // A root with val/ but no train/ is a dataset missing its training split, not classes.
        try folder.write("val/dog/3.jpg", bytes: jpeg)
        #expect { try ImageFolderDataset(root: folder.path) } throws: { "\($0)".contains("no 'train' folder") }
    }

    @Test func fingerprintFollowsTheListing() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try folder.write("train/a/1.jpg", bytes: jpeg)
        let first = try ImageFolderDataset(root: folder.path).fingerprint
        #expect(first.count == 64 && first.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(try ImageFolderDataset(root: folder.path).fingerprint == first)
        try folder.write("train/a/2.jpg", bytes: jpeg)
        #expect(try ImageFolderDataset(root: folder.path).fingerprint != first)
    }

    @Test func missingEmptyAndClasslessFoldersAreClearErrors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        #expect { try ImageFolderDataset(root: folder.path + "/nowhere") } throws: { error in
            "\(error)".contains("does not exist")
        }
        #expect { try ImageFolderDataset(root: folder.path) } throws: { error in "\(error)".contains("no class folders") }
        try folder.write("train/a/readme.txt", bytes: [1, 2, 3])
        try folder.write("train/b/1.jpg", bytes: jpeg)
        #expect { try ImageFolderDataset(root: folder.path) } throws: { error in
            "\(error)".contains("hold no .jpg/.jpeg/.png image") && "\(error)".contains(": a")
        }
    }
}
