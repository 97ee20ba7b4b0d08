import AsyncHTTPClient
import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import Logging
import MeteorCore
import MeteorShower
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Yams

/// The Shower served in-process beside the operator, spoken to over HTTP as a browser (or an attacker) would.
public struct ShowerHarness: Sendable {
    /// Whose credentials the page's own requests carry.
    public enum Identity: Sendable {
        /// The operator's client (a cluster admin in tests): what the page does, not who may do it, is tested.
        case operatorClient
        /// A ServiceAccount holding exactly `config/shower`'s grants (impersonate users; read Events and Meteors in
        /// the namespace), with `people` bound to `meteor-editor` in the namespace: real RBAC on the real control
        /// plane, the same rules as an authorizer on the embedded server. Nobody else may touch Meteors.
        case showerServiceAccount(people: [String])
    }

    public let env: MeteorEnvironment
    public let shower: MeteorShower
    /// The client the page's own requests go through (its identity).
    public let pageClient: KubeClient
    public let base: String
    public let http: HTTPClient

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func with(
        on backend: Backend = .embedded, allowSubmit: Bool = true, allowAnonymous: Bool = false, burst: Int = 3,
        trustedProxies: [String] = ["127.0.0.1/32"], identity: Identity = .operatorClient,
        configure: (inout MeteorShower.Options) -> Void = { _ in }, _ body: (ShowerHarness) async throws -> Void
    ) async throws {
        try await MeteorEnvironment.with(on: backend) { env in
            var options = MeteorShower.Options(bindAddress: "127.0.0.1:0", namespace: env.namespace)
            options.allowSubmit = allowSubmit
            options.allowAnonymous = allowAnonymous
            options.submitBurst = burst
            options.submitsPerMinute = 1
            options.trustedProxies = trustedProxies.compactMap(AddressRange.init)
            configure(&options)
            let client: KubeClient
            switch identity {
            case .operatorClient: client = env.client
            case .showerServiceAccount(let people): client = try await showerServiceAccount(env.cluster, people: people)
            }
            let shower = MeteorShower(options: options, client: client, meteors: env.reconciler.meteors, logger: Logger(label: "shower"))
            let group = ServiceGroup(configuration: .init(services: [shower], logger: Logger(label: "shower")))
            let running = Task { try await group.run() }
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            do {
                guard let port = await shower.waitUntilListening() else { throw Failure(description: "the Shower never listened") }
                try await body(ShowerHarness(env: env, shower: shower, pageClient: client, base: "http://127.0.0.1:\(port)", http: http))
            } catch {
                try? await http.shutdown()
                await group.triggerGracefulShutdown()
                _ = try? await running.value
                if client !== env.client { try? await client.shutdown() }
                throw error
            }
            try await http.shutdown()
            await group.triggerGracefulShutdown()
            _ = try? await running.value
            if client !== env.client { try? await client.shutdown() }
        }
    }

    /// The ServiceAccount's name, and the user it authenticates as.
    public static let serviceAccount = "meteor-shower"
    public static func serviceAccountUser(_ namespace: String) -> String { "system:serviceaccount:\(namespace):\(serviceAccount)" }

    /// A client with `config/shower`'s grants and nothing more. On the real control plane the shipped
    /// `shower_role.yaml` is applied (renamed for this namespace) and the ServiceAccount's token requested; on the
    /// embedded server an authorizer holds the same rules.
    static func showerServiceAccount(_ cluster: TestCluster, people: [String]) async throws -> KubeClient {
        let ns = cluster.namespace
        let user = serviceAccountUser(ns)
        if let kit = cluster.kit {
            var documents = try Yams.load_all(
                yaml: String(contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("config/shower/shower_role.yaml"), encoding: .utf8)
            ).compactMap { $0 as? [String: Any] }
            documents = documents.map { forNamespace($0, ns) }
            documents.append(["apiVersion": "v1", "kind": "ServiceAccount", "metadata": ["name": serviceAccount, "namespace": ns]])
            _ = try await kit.kubectlOK("apply", "-f", "-", input: try Yams.dump(object: ["apiVersion": "v1", "kind": "List", "items": documents]))
            _ = try await kit.kubectlOK(
                "apply", "-f", TestCluster.repositoryDirectory.appendingPathComponent("config/rbac/meteor_user_roles.yaml").path)
            for person in people {
                _ = try await kit.kubectlOK(
                    "-n", ns, "create", "rolebinding", "meteor-editor-\(person)", "--clusterrole=meteor-editor", "--user=\(person)")
            }
            let token = try await kit.kubectlOK("-n", ns, "create", "token", serviceAccount, "--duration=1h").trimmingCharacters(
                in: .whitespacesAndNewlines)
            return try kit.client(token: token)
        }
        let server = cluster.server
        let token = "shower-\(UUID().uuidString)"
        server.addToken(token, for: UserInfo(name: user, groups: ["system:serviceaccounts", "system:serviceaccounts:\(ns)", UserInfo.authenticated]))
        let editors = Set(people)
        server.authorize { a in
            if a.user.name == user {
                return (a.verb == "impersonate" && a.resource == "users" && a.apiGroup == "")
                    || (a.namespace == ns && a.apiGroup == "" && a.resource == "events" && a.verb == "list")
                    || (a.namespace == ns && a.apiGroup == "meteor.zone" && a.resource == "meteors" && a.subresource == nil && a.verb == "get")
            }
            if a.user == .admin { return true }
            // meteor-editor in the namespace, bound to each of `people`.
            return editors.contains(a.user.name) && a.namespace == ns && a.apiGroup == "meteor.zone" && a.resource == "meteors"
        }
        var configuration = TestCluster.clusterConfiguration(server)
        configuration.credentials = .token(token)
        return try KubeClient(configuration: configuration)
    }

    /// A document of `shower_role.yaml` for the test's namespace: namespaced objects moved there, cluster-scoped ones
    /// named for it (so parallel tests do not share them), subjects pointing at the namespace's ServiceAccount.
    static func forNamespace(_ doc: [String: Any], _ ns: String) -> [String: Any] {
        var d = doc
        var metadata = d["metadata"] as? [String: Any] ?? [:]
        if metadata["namespace"] != nil { metadata["namespace"] = ns } else { metadata["name"] = "\(metadata["name"] ?? "")-\(ns)" }
        d["metadata"] = metadata
        if var ref = d["roleRef"] as? [String: Any], ref["kind"] as? String == "ClusterRole" {
            ref["name"] = "\(ref["name"] ?? "")-\(ns)"
            d["roleRef"] = ref
        }
        if let subjects = d["subjects"] as? [[String: Any]] {
            d["subjects"] = subjects.map { s in
                var s = s
                s["name"] = serviceAccount
                s["namespace"] = ns
                return s
            }
        }
        return d
    }

    public struct Reply: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: String
    }

    public func get(_ path: String, headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        return try await send(request)
    }

    public func post(_ path: String, form: [(String, String)], headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        let encoded = form.map {
            "\($0.0.addingPercentEncoding(withAllowedCharacters: allowed)!)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed)!)"
        }.joined(separator: "&")
        request.body = .bytes(ByteBuffer(string: encoded))
        return try await send(request)
    }

    public func send(_ request: HTTPClientRequest) async throws -> Reply {
        let response = try await http.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 4 * 1024 * 1024)
        return Reply(status: Int(response.status.code), headers: response.headers, body: String(buffer: body))
    }

    /// A browser session: the CSRF cookie and token a GET of the home page hands out.
    public func session(user: String? = nil) async throws -> (cookie: String, token: String, headers: [(String, String)]) {
        let page = try await get("/", headers: user.map { [("X-Forwarded-User", $0)] } ?? [])
        guard let setCookie = page.headers.first(name: "Set-Cookie") else { throw Failure(description: "the home page set no cookie") }
        let cookie = String(setCookie.split(separator: ";")[0])
        let token = String(cookie.split(separator: "=", maxSplits: 1)[1])
        var headers = [("Cookie", cookie)]
        if let user { headers.append(("X-Forwarded-User", user)) }
        return (cookie, token, headers)
    }

    public func submit(
        url: String, ref: String = "main", pipelines: [String] = ["jupyterbook", "jupyterhub"], ttl: String = "3600", user: String? = "alice"
    ) async throws -> Reply {
        let s = try await session(user: user)
        return try await post(
            "/meteors", form: [("csrf", s.token), ("url", url), ("ref", ref), ("ttl", ttl)] + pipelines.map { ("pipelines[]", $0) },
            headers: s.headers)
    }
}
