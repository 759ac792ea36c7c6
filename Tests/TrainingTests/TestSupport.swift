import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func readText(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
