import Testing
@testable import Collectives
