import Foundation
import KubeModels

/// An error answered as a metav1.Status body with its HTTP code, as kube-apiserver does.
struct APIError: Error, Sendable {
    var status: Status
    var retryAfter: Int?
    var warnings: [String] = []

    var code: Int { status.code ?? 500 }

    init(code: Int, reason: String, message: String, details: StatusDetails? = nil, retryAfter: Int? = nil) {
        status = Status(status: "Failure", message: message, reason: reason, details: details, code: code)
        self.retryAfter = retryAfter
    }

    static func resourceName(_ r: ServedResource?) -> String {
        guard let r else { return "" }
        return r.group.isEmpty ? r.plural : "\(r.plural).\(r.group)"
    }

    static func notFound(_ r: ServedResource, name: String) -> APIError {
        APIError(
            code: 404, reason: StatusReason.notFound, message: "\(resourceName(r)) \"\(name)\" not found",
            details: StatusDetails(name: name, group: r.group, kind: r.plural))
    }

    static func namespaceNotFound(_ ns: String) -> APIError {
        APIError(
            code: 404, reason: StatusReason.notFound, message: "namespaces \"\(ns)\" not found", details: StatusDetails(name: ns, kind: "namespaces"))
    }

    static func alreadyExists(_ r: ServedResource, name: String) -> APIError {
        APIError(
            code: 409, reason: StatusReason.alreadyExists, message: "\(resourceName(r)) \"\(name)\" already exists",
            details: StatusDetails(name: name, group: r.group, kind: r.plural))
    }

    static func conflict(_ r: ServedResource, name: String, message: String) -> APIError {
        APIError(
            code: 409, reason: StatusReason.conflict,
            message: "Operation cannot be fulfilled on \(resourceName(r)) \"\(name)\": \(message)",
            details: StatusDetails(name: name, group: r.group, kind: r.plural))
    }

    static func staleResourceVersion(_ r: ServedResource, name: String) -> APIError {
        conflict(r, name: name, message: "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// A 422 with one cause: `field` refused for `reason` (`FieldValueRequired`, `FieldValueInvalid`, …).
    static func invalid(kind: String, group: String, name: String, field: String, reason: String, message: String) -> APIError {
        invalid(kind: kind, group: group, name: name, causes: [StatusCause(reason: reason, message: message, field: field)])
    }

    static func invalid(kind: String, group: String, name: String, causes: [StatusCause]) -> APIError {
        let groupKind = group.isEmpty ? kind : "\(kind).\(group)"
        let summary: String
        // As Go's ErrorList.ToAggregate: identical errors are said once in the message (the causes keep both).
        var seen = Set<String>()
        let rendered = causes.map { c in (c.field.map { "\($0): " } ?? "") + (c.message ?? "") }.filter { seen.insert($0).inserted }
        if rendered.count == 1 {
            summary = rendered[0]
        } else {
            summary = "[" + rendered.joined(separator: ", ") + "]"
        }
        return APIError(
            code: 422, reason: StatusReason.invalid, message: "\(groupKind) \"\(name)\" is invalid: \(summary)",
            details: StatusDetails(name: name.isEmpty ? nil : name, group: group, kind: kind, causes: causes))
    }

    static func badRequest(_ message: String) -> APIError {
        APIError(code: 400, reason: StatusReason.badRequest, message: message)
    }

    static func methodNotAllowed(_ message: String = "the server does not allow this method on the requested resource") -> APIError {
        APIError(code: 405, reason: StatusReason.methodNotAllowed, message: message)
    }

    static func pathNotFound() -> APIError {
        APIError(
            code: 404, reason: StatusReason.notFound, message: "the server could not find the requested resource",
            details: StatusDetails(causes: [StatusCause(reason: "UnexpectedServerResponse", message: "404 page not found")]))
    }

    static func gone(_ message: String) -> APIError {
        APIError(code: 410, reason: StatusReason.expired, message: message)
    }

    static func forbidden(_ message: String) -> APIError {
        APIError(code: 403, reason: StatusReason.forbidden, message: message)
    }
}
