import Crypto
import Foundation
import KubeModels
import MeteorCore
import Synchronization

/// The home page's form as posted (`application/x-www-form-urlencoded`).
struct SubmitForm: Decodable, Sendable {
    var url: String?
    var ref: String?
    var pipelines: [String]?
    var ttl: String?
    var csrf: String?
}

/// How long a submitted Meteor lives; the CRD allows 0…31536000 seconds.
struct TTLChoice: Sendable {
    var value: String
    var label: String
    static let all = [
        TTLChoice(value: "", label: "Until deleted"),
        TTLChoice(value: "3600", label: "1 hour"),
        TTLChoice(value: "86400", label: "1 day"),
        TTLChoice(value: "604800", label: "1 week"),
        TTLChoice(value: "2592000", label: "30 days"),
    ]
}

enum Submission {
    /// Checks the form with the rules the CRD and the reconciler apply (`SpecValidation`), so the page says what
    /// the API server would; field errors keyed by form field.
    static func validate(_ form: SubmitForm) -> (spec: Meteor.Spec?, errors: [String: String]) {
        var errors: [String: String] = [:]
        let url = (form.url ?? "").trimmingCharacters(in: .whitespaces)
        let ref = (form.ref ?? "").trimmingCharacters(in: .whitespaces)
        var ttl: Int64?
        if let raw = form.ttl, !raw.isEmpty {
            if let value = Int64(raw) { ttl = value } else { errors["ttl"] = "must be a whole number of seconds between 0 and 31536000" }
        }
        let pipelines = form.pipelines ?? []
        if url.isEmpty { errors["url"] = "Enter the repository's http or https URL." }
        if ref.isEmpty { errors["ref"] = "Enter a branch, tag or commit (for example main)." }
        if pipelines.isEmpty { errors["pipelines"] = "Choose at least one pipeline." }
        let spec = Meteor.Spec(url: url, ref: ref.isEmpty ? "main" : ref, ttl: ttl, pipelines: pipelines)
        for problem in SpecValidation.problems(spec) {
            let field: String
            switch problem.field {
            case "spec.url": field = "url"
            case "spec.ref": field = "ref"
            case "spec.ttl": field = "ttl"
            default: field = problem.field.hasPrefix("spec.pipelines") || problem.field == "spec.edge" ? "pipelines" : "form"
            }
            if errors[field] == nil { errors[field] = sentence(problem.message) }
        }
        if errors["url"] == nil, GitSSHRemote.Address(url) != nil {
            // The page cannot name a Secret, and an ssh address needs one.
            errors["url"] =
                "The Shower builds repositories it can reach over http or https; for one over ssh, apply a Meteor with spec.gitSecretRef (a kubernetes.io/ssh-auth Secret)."
        }
        if pipelines.contains(Pipeline.edge.rawValue) {
            errors["pipelines"] =
                "Edge delivery needs images, a signing key and targets: describe it in a Meteor YAML (config/samples/meteor_edge_donkeycar.yaml)."
        }
        return (errors.isEmpty ? spec : nil, errors)
    }

    static func sentence(_ message: String) -> String {
        guard let first = message.first else { return message }
        return first.uppercased() + message.dropFirst() + (message.hasSuffix(".") ? "" : ".")
    }

    /// A DNS-1123 name from the repository's last path component (`…/meteor-demo.git` → `meteor-demo`), at most
    /// 40 characters so a suffix and the PipelineRun names built from it still fit.
    static func baseName(for url: String) -> String {
        let path = URL(string: url)?.path ?? ""
        var last = path.split(separator: "/").last.map(String.init) ?? ""
        if last.hasSuffix(".git") { last.removeLast(4) }
        var out = ""
        for c in last.lowercased().unicodeScalars {
            if ("a"..."z").contains(c) || ("0"..."9").contains(c) {
                out.unicodeScalars.append(c)
            } else if !out.isEmpty, !out.hasSuffix("-") {
                out += "-"
            }
        }
        out = String(out.prefix(40))
        while out.hasSuffix("-") { out.removeLast() }
        return out.isEmpty ? "meteor" : out
    }

    /// The n-th candidate: the base, then `base-2`, `base-3`, …
    static func candidate(_ base: String, attempt: Int) -> String { attempt == 0 ? base : "\(base)-\(attempt + 1)" }
}
