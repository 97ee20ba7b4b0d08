import Foundation
import KubeModels
import Synchronization

/// Who a request acts as, after authentication and impersonation (kube-apiserver's `user.Info`).
public struct UserInfo: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var groups: [String]

    public init(name: String, groups: [String] = []) {
        self.name = name
        self.groups = groups
    }

    /// Whoever holds the server's configured token, or anyone when it requires none: a cluster admin.
    public static let admin = UserInfo(name: "embedded-admin", groups: ["system:masters", "system:authenticated"])
    public static let anonymous = "system:anonymous"
    public static let authenticated = "system:authenticated"
    public static let unauthenticated = "system:unauthenticated"

    public var description: String { name }
}

/// What a request asks to do, as an authorizer sees it (kube-apiserver's `authorizer.Attributes` for resource
/// requests; the verb `impersonate` for an impersonation header).
public struct AuthorizationAttributes: Sendable, Equatable {
    public var user: UserInfo
    public var verb: String
    public var apiGroup: String
    public var resource: String
    public var subresource: String?
    public var namespace: String?
    public var name: String?
    /// For a non-resource request (`/metrics`, `/healthz`): its path; the resource fields are then empty.
    public var path: String?
}

/// Decides whether a request may go ahead; true allows it. The embedded server has no RBAC of its own: a test
/// that needs a refusal installs an authorizer (`EmbeddedAPIServer.authorize(with:)`); without one every
/// authenticated request is allowed. The real control plane's RBAC is what tests on it meet.
public typealias Authorizer = @Sendable (AuthorizationAttributes) -> Bool

/// The impersonation headers of a request: `Impersonate-User`, `Impersonate-Group` (each), `Impersonate-Uid`.
struct ImpersonationRequest: Sendable, Equatable {
    var user: String
    var groups: [String]
    var uid: String?
}

/// Bearer tokens and the users they stand for; the authorizer in force.
final class Authentication: Sendable {
    /// Tokens that must be presented (nil: none required) and the users of every token the server knows.
    let state: Mutex<(required: Bool, users: [String: UserInfo], authorizer: Authorizer?)>

    init(token: String?) {
        var users: [String: UserInfo] = [:]
        if let token { users[token] = .admin }
        state = Mutex((token != nil, users, nil))
    }

    var requiresToken: Bool { state.withLock { $0.required } }

    /// The user a request's `Authorization` header names; nil when it must be refused 401. Without a required
    /// token, a request with no token (or an unknown one) is the admin: the server's historic open mode.
    func authenticate(_ header: String?) -> UserInfo? {
        let token = header.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        return state.withLock { s in
            if let token, let user = s.users[token] { return user }
            return s.required ? nil : .admin
        }
    }

    func authorize(_ attributes: AuthorizationAttributes) -> Bool {
        guard let authorizer = state.withLock({ $0.authorizer }) else { return true }
        return authorizer(attributes)
    }

    /// The impersonation a request asks for, read from its headers; groups or a uid without a user are refused
    /// 400, in kube-apiserver 1.36's words (Go's `%#v` of the user it was asked for).
    static func requestedImpersonation(user: String?, groups: [String], uid: String?) throws -> ImpersonationRequest? {
        guard let user else {
            guard groups.isEmpty, uid == nil else {
                let list = groups.isEmpty ? "[]string(nil)" : "[]string{" + groups.map { "\"\($0)\"" }.joined(separator: ", ") + "}"
                throw APIError.badRequest(
                    "requested &user.DefaultInfo{Name:\"\", UID:\"\(uid ?? "")\", Groups:\(list), Extra:map[string][]string(nil)} without impersonating a user name"
                )
            }
            return nil
        }
        return ImpersonationRequest(user: user, groups: groups, uid: uid)
    }

    /// kube-apiserver's impersonation: the requester must be allowed `impersonate` on the user, each group and the
    /// uid (RBAC's classic rules); a refusal is worded as 1.36's constrained impersonation words it, with the
    /// request's own attributes and the verb `impersonate-on:user-info:<verb>`. A non-anonymous user gets
    /// `system:authenticated` unless the request names it or `system:unauthenticated` itself.
    func impersonate(_ requester: UserInfo, _ request: ImpersonationRequest, for attributes: AuthorizationAttributes?) throws -> UserInfo {
        func allowed(_ resource: String, _ name: String, group: String = "") -> Bool {
            authorize(AuthorizationAttributes(user: requester, verb: "impersonate", apiGroup: group, resource: resource, namespace: nil, name: name))
        }
        let permitted =
            allowed("users", request.user) && request.groups.allSatisfy { allowed("groups", $0) }
            && (request.uid.map { allowed("uids", $0, group: "authentication.k8s.io") } ?? true)
        if !permitted {
            var refused = attributes ?? AuthorizationAttributes(user: requester, verb: "get", apiGroup: "", resource: "", namespace: nil, name: nil)
            refused.user = requester
            refused.verb = "impersonate-on:user-info:\(refused.verb)"
            throw Self.forbidden(refused)
        }
        var groups = request.groups
        if request.user != UserInfo.anonymous, !groups.contains(UserInfo.authenticated), !groups.contains(UserInfo.unauthenticated) {
            groups.append(UserInfo.authenticated)
        }
        return UserInfo(name: request.user, groups: groups)
    }

    /// kube-apiserver's Forbidden message and details for a refused request.
    static func forbidden(_ a: AuthorizationAttributes, kind: String? = nil) -> APIError {
        let resource = a.apiGroup.isEmpty ? a.resource : "\(a.resource).\(a.apiGroup)"
        let subject = a.name.map { "\(resource) \"\($0)\"" } ?? resource
        let what = a.subresource.map { "\(a.resource)/\($0)" } ?? a.resource
        let scope = a.namespace.map { "in the namespace \"\($0)\"" } ?? "at the cluster scope"
        let message = "\(subject) is forbidden: User \"\(a.user.name)\" cannot \(a.verb) resource \"\(what)\" in API group \"\(a.apiGroup)\" \(scope)"
        return APIError(
            code: 403, reason: StatusReason.forbidden, message: message,
            details: StatusDetails(name: a.name, group: a.apiGroup.isEmpty ? nil : a.apiGroup, kind: kind ?? a.resource))
    }

}

extension Authentication {
    static let reviewKeys: Set<String> = ["authentication.k8s.io/tokenreviews", "authorization.k8s.io/subjectaccessreviews"]

    /// A TokenReview or SubjectAccessReview answered as kube-apiserver answers it (never stored): the token's user,
    /// or whether the user may do what the review asks, by the authorizer in force.
    func review(_ key: String, _ body: JSONValue) throws -> JSONValue {
        var out = body
        out["metadata"] = body["metadata"] ?? .object([:])
        if key == "authentication.k8s.io/tokenreviews" {
            guard let token = body[path: "spec", "token"]?.stringValue, !token.isEmpty else {
                throw APIError.invalid(
                    kind: "TokenReview", group: "authentication.k8s.io", name: "", field: "spec.token", reason: "FieldValueRequired",
                    message: "Required value: token must not be empty")
            }
            if let user = state.withLock({ $0.users[token] }) {
                out["status"] = [
                    "authenticated": true, "user": ["username": .string(user.name), "groups": .array(user.groups.map(JSONValue.string))],
                ]
            } else {
                out["status"] = ["user": [:], "error": "[invalid bearer token, token lookup failed]"]
            }
            return out
        }
        let spec = body["spec"] ?? .object([:])
        let user = UserInfo(name: spec["user"]?.stringValue ?? "", groups: spec["groups"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        let attributes: AuthorizationAttributes
        if let r = spec["resourceAttributes"] {
            attributes = AuthorizationAttributes(
                user: user, verb: r["verb"]?.stringValue ?? "", apiGroup: r["group"]?.stringValue ?? "", resource: r["resource"]?.stringValue ?? "",
                subresource: r["subresource"]?.stringValue, namespace: r["namespace"]?.stringValue, name: r["name"]?.stringValue)
        } else if let n = spec["nonResourceAttributes"] {
            attributes = AuthorizationAttributes(
                user: user, verb: n["verb"]?.stringValue ?? "", apiGroup: "", resource: "", namespace: nil, name: nil,
                path: n["path"]?.stringValue ?? "")
        } else {
            throw APIError.invalid(
                kind: "SubjectAccessReview", group: "authorization.k8s.io", name: "", field: "spec.resourceAttributes", reason: "FieldValueRequired",
                message: "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified")
        }
        out["status"] = ["allowed": .bool(authorize(attributes))]
        return out
    }
}
