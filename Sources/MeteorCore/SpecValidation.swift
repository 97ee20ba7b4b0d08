import Foundation
import KubeModels

/// What the reconciler checks beyond the CRD schema (a Meteor may have been stored under an older, laxer CRD,
/// such as the Go operator's). Each problem names its field.
public struct SpecProblem: Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var message: String
    public var description: String { "\(field): \(message)" }
}

public enum SpecValidation {
    static let refAllowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/+@#,-")

    public static func problems(_ spec: Meteor.Spec) -> [SpecProblem] {
        var out: [SpecProblem] = []
        if let url = URL(string: spec.url), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme), let host = url.host, !host.isEmpty {
            if url.user != nil || url.password != nil {
                out.append(SpecProblem(field: "spec.url", message: "must not embed credentials; give the pipeline a git Secret instead"))
            }
            if spec.url.unicodeScalars.contains(where: { CharacterSet.whitespacesAndNewlines.contains($0) }) {
                out.append(SpecProblem(field: "spec.url", message: "must not contain whitespace"))
            }
        } else {
            out.append(SpecProblem(field: "spec.url", message: "must be an http or https URL with a host, got \(quoted(spec.url))"))
        }
        if spec.url.utf8.count > 2048 { out.append(SpecProblem(field: "spec.url", message: "must be at most 2048 bytes")) }
        if spec.ref.isEmpty || spec.ref.utf8.count > 255 {
            out.append(SpecProblem(field: "spec.ref", message: "must be 1 to 255 characters"))
        } else if spec.ref.unicodeScalars.contains(where: { !refAllowed.contains($0) }) {
            out.append(SpecProblem(field: "spec.ref", message: "may contain only letters, digits and . _ / + @ # , - (no whitespace or shell metacharacters), got \(quoted(spec.ref))"))
        } else if spec.ref.contains("..") || spec.ref.hasPrefix("/") || spec.ref.hasPrefix("-") || spec.ref.hasSuffix("/") || spec.ref.hasSuffix(".lock") {
            out.append(SpecProblem(field: "spec.ref", message: "is not a valid git ref name: \(quoted(spec.ref))"))
        }
        if let ttl = spec.ttl, ttl < 0 || ttl > 31_536_000 {
            out.append(SpecProblem(field: "spec.ttl", message: "must be between 0 and 31536000 seconds, got \(ttl)"))
        }
        var seen = Set<String>()
        for (i, p) in spec.requestedPipelines.enumerated() {
            if Pipeline(rawValue: p) == nil {
                out.append(SpecProblem(field: "spec.pipelines[\(i)]", message: "unknown pipeline \(quoted(p)); supported: jupyterhub, jupyterbook, edge"))
            } else if !seen.insert(p).inserted {
                out.append(SpecProblem(field: "spec.pipelines[\(i)]", message: "duplicate pipeline \(quoted(p))"))
            }
        }
        if spec.requestedPipelines.isEmpty {
            out.append(SpecProblem(field: "spec.pipelines", message: "must name at least one pipeline"))
        }
        return out
    }

    static func quoted(_ s: String) -> String {
        let clipped = s.count > 80 ? String(s.prefix(80)) + "…" : s
        return JSONValue.string(clipped).serializedString()
    }
}
