import HTTPTypes

/// What a request asks for, parsed once from its method, path and query — kube-apiserver's `RequestInfo`: the
/// verb, and for a resource path its group, version, namespace, resource, name and subresource. Faults, the request
/// log, authorization and routing all read this one parse.
struct RequestInfo: Sendable, Equatable {
    /// The Kubernetes verb (what RBAC and audit call it), from the method and whether a name or `watch` is given.
    enum Verb: Sendable, Equatable, CustomStringConvertible {
        case get, list, watch, create, update, patch, delete, deletecollection
        /// Any other method, lower-cased (`options`, `head`).
        case other(String)

        var description: String {
            switch self {
            case .get: return "get"
            case .list: return "list"
            case .watch: return "watch"
            case .create: return "create"
            case .update: return "update"
            case .patch: return "patch"
            case .delete: return "delete"
            case .deletecollection: return "deletecollection"
            case .other(let name): return name
            }
        }
    }

    var verb: Verb
    /// The path's segments (`/apis/meteor.zone/v1alpha1/meteors` → `apis`, `meteor.zone`, `v1alpha1`, `meteors`).
    var segments: [String]
    /// Set for `/api/<version>/…` and `/apis/<group>/<version>/…` paths past the version.
    var resource: Resource?

    struct Resource: Sendable, Equatable {
        var group: String
        var version: String
        var namespace: String?
        /// The resource's plural and what follows it: name, subresource (more than three parts: no such path).
        var parts: [String]

        var plural: String? { parts.first }
        var name: String? { parts.count >= 2 ? parts[1] : nil }
        var subresource: String? { parts.count == 3 ? parts[2] : nil }
    }

    init(method: HTTPRequest.Method, path: String, query: [String: String]) {
        segments = path.split(separator: "/").map(String.init)
        let root = segments.first == "api" ? 2 : 3
        var rest = Array(segments.dropFirst(root))
        var namespace: String?
        // `namespaces/<ns>/<resource>…`, but not a Namespace's own `status` or `finalize`.
        if rest.first == "namespaces", rest.count >= 3, !["status", "finalize"].contains(rest[2]) {
            namespace = rest[1]
            rest = Array(rest.dropFirst(2))
        }
        switch (segments.first, segments.count) {
        case ("api", 3...):
            resource = Resource(group: "", version: segments[1], namespace: namespace, parts: rest)
        case ("apis", 4...):
            resource = Resource(group: segments[1], version: segments[2], namespace: namespace, parts: rest)
        default:
            resource = nil
        }
        let named = rest.count >= 2
        switch method {
        case .get: verb = named ? .get : (query["watch"] == "true" || query["watch"] == "1" ? .watch : .list)
        case .post: verb = .create
        case .put: verb = .update
        case .patch: verb = .patch
        case .delete: verb = named ? .delete : .deletecollection
        default: verb = .other(method.rawValue.lowercased())
        }
    }
}
