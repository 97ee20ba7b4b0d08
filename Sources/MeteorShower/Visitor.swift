import Hummingbird
import HTTPTypes
import KubeClient
import MeteorCore

/// Who is asking, as far as the page can tell: a user and groups the authenticating proxy in front asserted, when
/// the request came from that proxy, and the peer address it came from. Anyone else is anonymous, whatever
/// headers they send.
struct Visitor: Sendable, Equatable {
    /// The signed-in user; nil when anonymous (no header, or a header from a peer that is not a trusted proxy).
    var user: String?
    /// The user's groups the page passes on (those the proxy asserted and the operator is configured to forward).
    var groups: [String]
    /// The peer's address ("unknown" when the transport gave none).
    var peer: String
    /// The trusted proxy said the browser reached it over HTTPS.
    var secure: Bool

    /// What the CSRF token of this visitor is bound to.
    var sessionIdentity: String { user.map { "user:\($0)" } ?? "anonymous" }

    /// The rate limit's key: the signed-in user (behind a proxy every request has the proxy's address), else the
    /// peer address.
    var rateLimitKey: String { user.map { "user:\($0)" } ?? "peer:\(peer)" }

    /// The identity writes carry to the API server; nil writes with the operator's own.
    var impersonation: Impersonation? { user.map { Impersonation(user: $0, groups: groups) } }
}

extension MeteorShower {
    /// Reads the visitor of a request: the proxy's headers count only from a peer inside `trustedProxies`.
    /// Users the API server reserves (`system:` names) are never passed on: the page does not act as components.
    func visitor(_ request: Request, _ context: ShowerContext) -> Visitor {
        let peer = context.remoteAddress?.ipAddress ?? "unknown"
        let trusted = options.trustedProxies.contains { $0.contains(peer) }
        func header(_ name: String) -> String? {
            guard let field = HTTPField.Name(name) else { return nil }
            let values = request.headers[values: field].map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            return values.isEmpty ? nil : values.joined(separator: ",")
        }
        var visitor = Visitor(user: nil, groups: [], peer: peer, secure: false)
        guard trusted else {
            if header(options.userHeader) != nil {
                logger.warning("shower: ignored a user header from a peer that is not a trusted proxy", metadata: ["peer": "\(peer)"])
            }
            return visitor
        }
        visitor.secure = header("X-Forwarded-Proto")?.lowercased() == "https"
        guard let user = header(options.userHeader), !user.contains(",") else { return visitor }
        if user.hasPrefix("system:") {
            logger.warning("shower: refused to act as a system user the proxy named", metadata: ["user": "\(user)"])
            return visitor
        }
        visitor.user = user
        let asserted = (header(options.groupsHeader) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        visitor.groups = asserted.filter { options.forwardedGroups.contains($0) }
        return visitor
    }
}
