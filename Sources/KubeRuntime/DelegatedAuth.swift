import KubeClient
import KubeModels
import Synchronization

/// Who may read an endpoint, decided by the API server: the caller's bearer token is checked with a TokenReview and
/// its right to `get` the path with a SubjectAccessReview — controller-runtime's secure metrics
/// (`filters.WithAuthenticationAndAuthorization`), kube-rbac-proxy's check. Verdicts are kept for `ttl` (by
/// token and path) so a scraper's every visit does not cost two API requests.
public final class DelegatedAuth: Sendable {
    public enum Verdict: Sendable, Equatable {
        case allowed(user: String)
        /// No token, or one the API server does not know.
        case unauthenticated
        /// A known user without the right.
        case forbidden(user: String)
    }

    let client: KubeClient
    let ttl: Duration
    let capacity: Int
    let cache = Mutex<[String: (verdict: Verdict, at: ContinuousClock.Instant)]>([:])

    public init(client: KubeClient, ttl: Duration = .seconds(10), capacity: Int = 1024) {
        self.client = client
        self.ttl = ttl
        self.capacity = capacity
    }

    /// The verdict for a request with this `Authorization` header on `path`. Throws when the API server cannot be
    /// asked (the caller answers 500, as controller-runtime does).
    public func check(authorization: String?, path: String, verb: String = "get") async throws -> Verdict {
        guard let header = authorization, header.hasPrefix("Bearer "), case let token = String(header.dropFirst(7)), !token.isEmpty else {
            return .unauthenticated
        }
        let key = "\(verb) \(path) \(token)"
        let now = ContinuousClock.now
        if let hit = cache.withLock({ $0[key] }), now - hit.at < ttl { return hit.verdict }
        let verdict = try await ask(token: token, path: path, verb: verb)
        cache.withLock { all in
            if all.count >= capacity { all = all.filter { now - $0.value.at < ttl } }
            if all.count >= capacity { all.removeAll() }
            all[key] = (verdict, now)
        }
        return verdict
    }

    func ask(token: String, path: String, verb: String) async throws -> Verdict {
        let review = try await client.json(
            .POST, "/apis/authentication.k8s.io/v1/tokenreviews",
            body: [
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": ["token": .string(token)],
            ])
        guard review[path: "status", "authenticated"]?.boolValue == true, let user = review[path: "status", "user"],
            let name = user["username"]?.stringValue
        else {
            return .unauthenticated
        }
        var spec: JSONObject = ["user": .string(name), "nonResourceAttributes": ["path": .string(path), "verb": .string(verb)]]
        for field in ["groups", "uid", "extra"] { if let v = user[field] { spec[field] = v } }
        let access = try await client.json(
            .POST, "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body: [
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": .object(spec),
            ])
        return access[path: "status", "allowed"]?.boolValue == true ? .allowed(user: name) : .forbidden(user: name)
    }
}
