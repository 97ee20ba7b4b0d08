import Foundation

/// How hard the reliability suite pushes: `METEOR_RELIABILITY_SCALE=N` multiplies Meteor counts, kills and random
/// cases by N (default 1, what `hack/test` and CI run; `METEOR_RELIABILITY_SCALE=10 hack/test` is the long variant).
/// The time limits grow with it.
enum Scale {
    static let factor: Int = max(1, Int(ProcessInfo.processInfo.environment["METEOR_RELIABILITY_SCALE"] ?? "") ?? 1)
    static func of(_ n: Int) -> Int { n * factor }
}
