import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import KubeModels
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import KubeTLS
import Synchronization

/// A Kubernetes-compatible API server in memory, on loopback, for tests and the sandbox. Real clients
/// (kubectl, client libraries, this project's client) talk to it over HTTP or HTTPS exactly as they would to
/// kube-apiserver.
public final class EmbeddedAPIServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a generated self-signed certificate.
        public var tls: Bool
        /// Require `Authorization: Bearer <token>` (health and version endpoints stay public).
        public var token: String?
        /// How many changes watches can resume from before they answer 410 Expired.
        public var historyLimit: Int
        public var bookmarkInterval: Duration
        public var defaultWatchTimeout: Duration
        public var logLevel: Logger.Level

        public init(
            host: String = "127.0.0.1", port: Int = 0, tls: Bool = false, token: String? = nil,
            historyLimit: Int = 50_000, bookmarkInterval: Duration = .seconds(5),
            defaultWatchTimeout: Duration = .seconds(1800), logLevel: Logger.Level = .error
        ) {
            self.host = host
            self.port = port
            self.tls = tls
            self.token = token
            self.historyLimit = historyLimit
            self.bookmarkInterval = bookmarkInterval
            self.defaultWatchTimeout = defaultWatchTimeout
            self.logLevel = logLevel
        }
    }

    public let configuration: Configuration
    let core: APIServerCore
    let faults = FaultInjector()
    let authentication: Authentication
    let certificate: SelfSignedCertificate?
    let running = Mutex<(task: Task<Void, any Error>?, gc: Task<Void, Never>?, group: ServiceGroup?, port: Int)>((nil, nil, nil, 0))

    public init(configuration: Configuration = Configuration()) throws {
        self.configuration = configuration
        authentication = Authentication(token: configuration.token)
        let store = ObjectStore(historyLimit: configuration.historyLimit)
        core = APIServerCore(store: store, registry: ResourceRegistry())
        core.bootstrap()
        certificate = configuration.tls ? try SelfSignedCertificate() : nil
    }

    /// From now on, accepts exactly these bearer tokens (the configured one is the first): new requests are
    /// judged by them, streams already open go on. Only for a server configured with a token.
    public func acceptTokens(_ accepted: Set<String>) {
        precondition(authentication.requiresToken, "acceptTokens needs a server configured with a token")
        authentication.state.withLock { s in
            s.users = s.users.filter { $0.value != .admin }
            for token in accepted { s.users[token] = .admin }
        }
    }

    /// A bearer token that authenticates as `user` (a ServiceAccount's, a person's), on a server with or without
    /// a configured token.
    public func addToken(_ token: String, for user: UserInfo) {
        authentication.state.withLock { $0.users[token] = user }
    }

    /// Decides every later request (resource requests and impersonation), as RBAC does on a real cluster; nil
    /// allows everything again.
    public func authorize(with authorizer: Authorizer?) {
        authentication.state.withLock { $0.authorizer = authorizer }
    }

    /// The bound port (after `start`).
    public var port: Int { running.withLock { $0.port } }

    public var url: String { "\(configuration.tls ? "https" : "http")://\(configuration.host):\(port)" }

    /// PEM of the serving certificate, to trust as the cluster CA.
    public var caCertificatePEM: String? { certificate?.certificatePEM }

    /// Starts serving; returns once the listener is bound.
    public func start() async throws {
        faults.rearm()
        let port = running.withLock { $0.port == 0 ? configuration.port : $0.port }
        let handler = APIRequestHandler(
            core: core, faults: faults, authentication: authentication,
            serverAddress: { [weak self] in "\(self?.configuration.host ?? "127.0.0.1"):\(self?.port ?? 0)" },
            bookmarkInterval: configuration.bookmarkInterval, defaultWatchTimeout: configuration.defaultWatchTimeout)
        var logger = Logger(label: "embedded-apiserver")
        logger.logLevel = configuration.logLevel
        let serverBuilder: HTTPServerBuilder
        if let certificate {
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(certificate.certificatePEM.utf8)).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(certificate.privateKeyPEM.utf8), format: .pem)))
            tls.applicationProtocols = ["h2", "http/1.1"]
            serverBuilder = try .http2Upgrade(tlsConfiguration: tls)
        } else {
            serverBuilder = .http1()
        }
        let (bound, boundContinuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            responder: APIServerResponder(handler: handler), server: serverBuilder,
            configuration: .init(address: .hostname(configuration.host, port: port), serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                boundContinuation.yield(channel.localAddress?.port ?? 0)
                boundContinuation.finish()
            },
            logger: logger)
        // Run under a ServiceGroup so stop() can shut the server down gracefully instead of cancelling it.
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task {
            defer { boundContinuation.finish() }
            try await group.run()
        }
        var boundPort = 0
        for await p in bound { boundPort = p }
        guard boundPort > 0 else {
            task.cancel()
            _ = try await task.value
            throw ServerError(message: "embedded API server failed to bind \(configuration.host):\(port)")
        }
        let gc = Task { await GarbageCollector(core: core).run() }
        running.withLock { $0 = (task, gc, group, boundPort) }
    }

    struct ServerError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// Stops serving: open watches end, the listener closes. The store is kept.
    public func stop() async {
        let (task, gc, group) = running.withLock { r in
            let t = (r.task, r.gc, r.group)
            r.task = nil
            r.gc = nil
            r.group = nil
            return t
        }
        faults.stopping.withLock { $0 = true }
        core.store.closeAllWatches()
        faults.releaseHeld(stopping: true)
        await group?.triggerGracefulShutdown()
        _ = try? await task?.value
        gc?.cancel()
        core.signalGC()
    }

    /// Restarts on the same port, keeping the store or starting from an empty one (objects gone, old
    /// resourceVersions compacted, CRDs kept so their kinds stay served).
    public func restart(emptyStore: Bool = false) async throws {
        await stop()
        if emptyStore {
            core.store.reset { $0 == APIServerCore.crdKey }
            core.bootstrap()
        }
        try await start()
    }

    // MARK: Fault injection

    /// Injects a fault into the next matching requests.
    public func inject(_ fault: InjectedFault) { faults.faults.withLock { $0.append(fault) } }

    /// How many requests injected faults have hit so far (what a test compares with what the client did).
    public var injectedFaultsServed: Int { faults.served.withLock { $0 } }

    public func clearFaults() { faults.faults.withLock { $0.removeAll() } }

    /// Lets every request held by an `InjectedFault(.hold)` proceed.
    public func releaseHeldRequests() { faults.releaseHeld() }

    public var heldRequestCount: Int { faults.held.withLock { $0.requests.count } }

    /// Returns once a request is held by an `InjectedFault(.hold)`, or the caller is cancelled (event-driven, for tests).
    public func waitForHeldRequest() async { await faults.waitForHeld() }

    /// Cuts every open watch stream (clients see the stream end and resume).
    public func cutWatches() { core.store.closeAllWatches() }

    /// The next `count` watches answer one ERROR event with 410 Expired (HTTP 200, as kube-apiserver does).
    public func expireNextWatches(_ count: Int = 1) { inject(InjectedFault(.expiredWatch, verb: "watch", count: count)) }

    /// Compacts the history: watches and list continuations from older versions get 410.
    public func compact() { core.store.compact() }

    public var openWatchCount: Int { core.store.watcherCount }

    public var requestLog: [RequestRecord] { faults.log.withLock { $0 } }

    /// Returns once a request matching `predicate` has been served, or the caller is cancelled (event-driven, for tests).
    public func waitForRequest(_ predicate: @escaping @Sendable (RequestRecord) -> Bool) async { await faults.waitForRequest(predicate) }

    public func clearRequestLog() { faults.log.withLock { $0.removeAll() } }

    public var currentResourceVersion: UInt64 { core.store.currentRV }

    /// Runs one garbage-collection pass now (tests that need it synchronously).
    public func collectGarbage() {
        let gc = GarbageCollector(core: core)
        for _ in 0..<8 where gc.sweep() {}
    }

    // MARK: Convenience

    /// Creates (or replaces) CRDs from YAML documents, as `kubectl apply` of a CRD file would.
    public func installCRDs(yaml: String) throws {
        for doc in try YAML.parseAll(yaml) where doc["kind"]?.stringValue == "CustomResourceDefinition" {
            guard let r = core.registry.lookup(key: APIServerCore.crdKey) else { continue }
            let name = doc[path: "metadata", "name"]?.stringValue ?? ""
            let scope = RequestScope(resource: r, version: "v1", namespace: nil, name: name)
            if let existing = core.store.get(r.key, "/" + name) {
                var body = doc
                body[path: "metadata", "resourceVersion"] = .string(String(existing.rv))
                _ = try core.update(scope, body: body, options: WriteOptions(fieldManager: "embedded-apiserver"))
            } else {
                _ = try core.create(
                    RequestScope(resource: r, version: "v1", namespace: nil), body: doc, options: WriteOptions(fieldManager: "embedded-apiserver"))
            }
        }
    }

    /// A kubeconfig for this server (CA data and token included when configured).
    public func kubeconfig(context: String = "embedded", namespace: String = "default") -> String {
        var cluster = "    server: \(url)\n"
        if let ca = caCertificatePEM {
            cluster += "    certificate-authority-data: \(Data(ca.utf8).base64EncodedString())\n"
        }
        var user = "  user: {}\n"
        if let token = configuration.token { user = "  user:\n    token: \(token)\n" }
        return """
            apiVersion: v1
            kind: Config
            clusters:
            - name: \(context)
              cluster:
            \(cluster)contexts:
            - name: \(context)
              context:
                cluster: \(context)
                user: \(context)
                namespace: \(namespace)
            current-context: \(context)
            users:
            - name: \(context)
            \(user)
            """
    }
}
