import System

/// A failed system call: which call, on which file, and why (from errno). The
/// System module's error, named here so that users of Model need not import System.
public typealias SystemCallError = System.SystemCallError
