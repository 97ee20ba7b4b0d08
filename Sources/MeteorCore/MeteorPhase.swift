import KubeModels

/// A `status.phase` read leniently: a phase this operator does not write (another operator's, a hand edit) reads as
/// `unwritten`, so the next status write replaces it and decoding the object never fails on it.
public protocol LenientPhase: RawRepresentable<String>, Codable, Sendable {
    static var unwritten: Self { get }
}

extension LenientPhase {
    public init(from decoder: any Decoder) throws {
        self = Self(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unwritten
    }
}

/// A Meteor's `status.phase`: the Go operator's Building, Ready and Failed, and Pending before the first status.
public enum MeteorPhase: String, LenientPhase, CaseIterable {
    case pending = "Pending"
    case building = "Building"
    case ready = "Ready"
    case failed = "Failed"

    public static var unwritten: MeteorPhase { .pending }
}

/// What a Meteor's status says at a glance, read from the object as cached or listed: the one reader of phase and
/// Ready that metrics, the Shower and the sandbox's table share.
public struct MeteorGlance: Sendable, Equatable {
    /// `status.phase` as written (Pending when there is none yet).
    public var phase: String
    /// The Ready condition's status, nil before it is set.
    public var ready: Condition.Status?
    public var readyMessage: String?
    /// Failed pipelines in their own words: `name: message` (the entry's message, which `failureText` wrote).
    public var failures: [String]

    public init(_ meteor: JSONValue) {
        let written = meteor[path: "status", "phase"]?.stringValue ?? ""
        phase = written.isEmpty ? MeteorPhase.pending.rawValue : written
        let readyCondition = (meteor[path: "status", "conditions"]?.arrayValue ?? []).first {
            $0["type"]?.stringValue == MeteorStatusVocabulary.readyCondition
        }
        ready = readyCondition?["status"]?.stringValue.flatMap(Condition.Status.init(rawValue:))
        readyMessage = readyCondition?["message"]?.stringValue
        failures = (meteor[path: "status", "pipelines"]?.arrayValue ?? []).filter { $0["ready"]?.stringValue == Condition.Status.false.rawValue }
            .compactMap { p in
                guard let message = p["message"]?.stringValue, !message.isEmpty else { return nil }
                return "\(p["name"]?.stringValue ?? ""): \(message)"
            }
    }

    public var isReady: Bool { ready == .true }

    /// What went wrong with a Failed Meteor: its failed builds' own words, else Ready's message; nil otherwise.
    public var problem: String? {
        guard phase == MeteorPhase.failed.rawValue else { return nil }
        return failures.isEmpty ? readyMessage : failures.joined(separator: "; ")
    }
}
