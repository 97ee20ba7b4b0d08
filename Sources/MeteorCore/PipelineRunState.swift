import Crypto
import Foundation
import KubeModels
import KubeRuntime

/// What a PipelineRun's status says, in Tekton's terms.
public struct PipelineRunState: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case running, succeeded, failed

        /// The outcome as a condition says it (`status.pipelines[].ready`): True, False, Unknown while running.
        public var conditionStatus: Condition.Status {
            switch self {
            case .succeeded: return .true
            case .failed: return .false
            case .running: return .unknown
            }
        }
    }
    public var outcome: Outcome
    public var reason: String
    public var message: String
    public var results: [String: String]
    /// A failed run's own reasons (its non-empty `…_FAILURE` results), nil when it gave none.
    public var failure: String?
    public var startTime: Date?
    public var completionTime: Date?

    /// Pipeline results named `…_FAILURE` carry a failed Task's one-line reason (`manifests/tekton`: the Tasks
    /// record it in a result and fail in a later step, since a failing step reports no results).
    public static let failureResultSuffix = "_FAILURE"

    /// Reads `status.conditions[type=Succeeded]` (Unknown/True/False), `status.results` and the times; a failed
    /// run's message leads with the reasons its `…_FAILURE` results give.
    public init(_ run: JSONValue) {
        let succeeded = (run[path: "status", "conditions"]?.arrayValue ?? []).first { $0["type"] == "Succeeded" }
        switch succeeded?["status"]?.stringValue {
        case "True": outcome = .succeeded
        case "False": outcome = .failed
        default: outcome = .running
        }
        reason = succeeded?["reason"]?.stringValue ?? (run["status"] == nil ? "Pending" : "Running")
        message = succeeded?["message"]?.stringValue ?? ""
        var results: [String: String] = [:]
        var reasons: [String] = []
        for r in run[path: "status", "results"]?.arrayValue ?? [] {
            guard let n = r["name"]?.stringValue else { continue }
            let value = r["value"]?.stringValue ?? r["value"].map { $0.serializedString() }
            results[n] = value
            if n.hasSuffix(Self.failureResultSuffix), let value, !value.isEmpty { reasons.append(value) }
        }
        self.results = results
        // A failed build says why in its own words (Tekton's message only counts the failed tasks).
        if outcome == .failed, !reasons.isEmpty {
            failure = reasons.joined(separator: "; ")
            message = failure! + " (\(message.isEmpty ? reason : message))"
        }
        startTime = run[path: "status", "startTime"]?.stringValue.flatMap(KubeTime.parse)
        completionTime = run[path: "status", "completionTime"]?.stringValue.flatMap(KubeTime.parse)
    }

    /// How a failed run is told wherever the operator tells it (a pipeline's entry and condition, an edge image's
    /// status): its own words (the `…_FAILURE` results, then Tekton's message), else Tekton's reason, cut to
    /// `maxBytes` of UTF-8 with `ObjectHelpers.truncationMarker`.
    public func failureText(maxBytes: Int) -> String {
        ObjectHelpers.truncated(message.isEmpty ? reason : message, maxBytes: maxBytes)
    }

    /// Whether `text` is an image digest the operator pins to: `sha256:` and 64 lower-case hex digits.
    public static func isDigest(_ text: String) -> Bool {
        text.range(of: #"\Asha256:[0-9a-f]{64}\z"#, options: .regularExpression) != nil
    }

    /// A run that succeeded without an `IMAGE_DIGEST` the operator can pin to is a failed build: deploying
    /// `image@<whatever it said>` would fail later, and further from the cause.
    public func requiringDigest(runName: String) -> PipelineRunState {
        guard outcome == .succeeded, !(results["IMAGE_DIGEST"].map(Self.isDigest) ?? false) else { return self }
        var s = self
        s.outcome = .failed
        s.reason = "BuildResultMissing"
        s.message = Self.missingDigestMessage(runName)
        return s
    }

    public static func missingDigestMessage(_ runName: String) -> String {
        "PipelineRun \(runName) succeeded without an IMAGE_DIGEST result of the form sha256:<64 hex digits>"
    }
}
