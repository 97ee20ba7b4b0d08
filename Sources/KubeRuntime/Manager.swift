import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import KubeTLS
import NIOCore
import NIOSSL
import KubeClient
import KubeModels
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization

/// The registry and factory all runtime metrics go to, served at `/metrics`.
public final class RuntimeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory

    /// `histogramBuckets`: buckets for histograms of the application's own (by metric name).
    public init(histogramBuckets: [String: [Duration]] = [:]) {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        for (name, buckets) in histogramBuckets { f.durationHistogramBuckets[name] = buckets }
        let reconcileBuckets: [Duration] = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5,
            5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
        ].map { .milliseconds(Int64($0 * 1000)) }
        f.durationHistogramBuckets["controller_runtime_reconcile_time_seconds"] = reconcileBuckets
        let queueBuckets: [Duration] = (0..<10).map { .nanoseconds(Int64(pow(10.0, Double($0)) * 1000)) }
        f.durationHistogramBuckets["workqueue_queue_duration_seconds"] = queueBuckets
        f.durationHistogramBuckets["workqueue_work_duration_seconds"] = queueBuckets
        factory = f
    }

    /// The hook to give `KubeClient.Options.metrics`: `rest_client_requests_total{code,method}` and latency.
    public var clientHook: @Sendable (RequestMetric) -> Void {
        let factory = self.factory
        return { m in
            Counter(
                label: "rest_client_requests_total",
                dimensions: [("code", m.code == 0 ? "<error>" : String(m.code)), ("method", m.method), ("host", "")], factory: factory
            ).increment()
            Metrics.Timer(
                label: "rest_client_request_duration_seconds", dimensions: [("verb", m.method)], preferredDisplayUnit: .seconds, factory: factory
            )
            .recordInterval(m.latency)
        }
    }

    public func render() -> String { registry.emitToString() }
}

/// Wires informers, controllers, leader election, metrics and health probes, and runs them as one service:
/// controller-runtime's manager. SIGTERM/SIGINT (through swift-service-lifecycle) drain in-flight reconciles,
/// stop watches and release the lease.
public final class Manager: Service, Sendable {
    public struct Options: Sendable {
        /// `HOST:PORT` for `/metrics`; nil or "0" turns it off.
        public var metricsBindAddress: String? = ":8080"
        /// Serve `/metrics` over HTTPS to callers the API server authenticates (TokenReview) and authorizes to
        /// `get` the path (SubjectAccessReview), as controller-runtime's `--metrics-secure`.
        public var metricsSecure = false
        /// A directory with `tls.crt` and `tls.key` for secure metrics (a Secret mounted there); nil: a self-signed
        /// certificate made at start.
        public var metricsCertificateDirectory: String?
        /// `HOST:PORT` for `/healthz` and `/readyz`; nil or "0" turns it off.
        public var healthProbeBindAddress: String? = ":8081"
        public var leaderElection: LeaderElector.Configuration?
        /// Each informer's client-side watch idle deadline (`WatchOptions.idleTimeout`).
        public var watchIdleTimeout: Duration? = WatchOptions.defaultIdleTimeout
        /// `/readyz` fails while an informer has heard nothing from the API server for this long (its watches
        /// failing, or none of them delivering even a bookmark).
        public var informerStaleAfter: Duration = .seconds(300)
        public init() {}
    }

    public let client: KubeClient
    public let options: Options
    public let metrics: RuntimeMetrics
    let logger: Logger
    let informers = Mutex<[String: any RunnableInformer]>([:])
    let controllers = Mutex<[any RunnableController]>([])
    let bound = Mutex<(metrics: Int?, health: Int?)>((nil, nil))
    let boundSignal = AsyncStream<Void>.makeStream()
    public let elector: LeaderElector?

    public init(
        client: KubeClient, options: Options = Options(), metrics: RuntimeMetrics = RuntimeMetrics(), logger: Logger = Logger(label: "manager")
    ) {
        self.client = client
        self.options = options
        self.metrics = metrics
        self.logger = logger
        elector = options.leaderElection.map { LeaderElector(client: client, configuration: $0, metricsFactory: metrics.factory, logger: logger) }
    }

    /// The shared dynamic informer for a resource (one list/watch however many controllers use it), per namespace,
    /// label selector and cache transform.
    public func informer(
        for type: ResourceType, namespace: String? = nil, labelSelector: LabelSelector? = nil, transform: CacheTransform? = .dropManagedFields
    ) -> DynamicInformer {
        informer(for: type, as: JSONValue.self, namespace: namespace, labelSelector: labelSelector, transform: transform)
    }

    /// The shared informer for a resource decoded as `K`; the type is part of its identity with the namespace, the
    /// label selector and the transform.
    public func informer<K: CachedResource>(
        for type: ResourceType, as: K.Type, namespace: String? = nil, labelSelector: LabelSelector? = nil,
        transform: CacheTransform? = .dropManagedFields
    ) -> Informer<K> {
        let key = "\(type)|\(K.self)|\(namespace ?? "*")|\(labelSelector?.description ?? "")|\(transform?.name ?? "")"
        return informers.withLock { all in
            if let i = all[key] as? Informer<K> { return i }
            let i = Informer<K>(
                api: client.dynamic(type, namespace: namespace), labelSelector: labelSelector, transform: transform,
                watchIdleTimeout: options.watchIdleTimeout, logger: logger)
            all[key] = i
            return i
        }
    }

    public func add(_ controller: some RunnableController) { controllers.withLock { $0.append(controller) } }

    public var metricsFactory: any MetricsFactory { metrics.factory }

    /// Ready once every informer has its first list in cache, and while none has been without word from the API
    /// server for longer than `informerStaleAfter`.
    public var isReady: Bool { unreadiness == nil }

    /// Why `/readyz` fails, or nil when ready.
    public var unreadiness: String? {
        let all = informers.withLock { $0.values.sorted { "\($0.resourceType)" < "\($1.resourceType)" } }
        if let waiting = all.first(where: { !$0.hasSynced }) { return "informer \(waiting.resourceType) not synced" }
        for informer in all {
            if let silence = informer.silence, silence > options.informerStaleAfter {
                return "informer \(informer.resourceType) has heard nothing from the API server for \(silence.components.seconds)s"
            }
        }
        return nil
    }

    /// Ports actually bound (useful with port 0).
    public var boundPorts: (metrics: Int?, health: Int?) { bound.withLock { $0 } }

    /// Returns once the probe and metrics servers listen.
    public func waitForServers() async {
        let expected = [options.metricsBindAddress, options.healthProbeBindAddress].compactMap { Self.parseBindAddress($0) }.count
        for await _ in boundSignal.stream {
            let b = bound.withLock { $0 }
            if [b.metrics, b.health].compactMap({ $0 }).count >= expected { return }
        }
    }

    /// Returns once every informer the manager runs has finished its first list.
    public func waitForInformersSynced() async {
        for i in informers.withLock({ Array($0.values) }) { await i.waitForSync() }
    }

    /// `HOST:PORT` as the bind-address flags take it (an empty host listens on every address); nil for `0`, empty
    /// or anything that is not that (the server is then off).
    public static func parseBindAddress(_ address: String?) -> (host: String, port: Int)? {
        guard let address, address != "0", !address.isEmpty, let colon = address.lastIndex(of: ":"),
            let port = Int(address[address.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        let host = String(address[..<colon])
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    /// Runs until graceful shutdown (SIGTERM/SIGINT through a ServiceGroup) or a lost lease. Shutdown stops
    /// handing out work (and a follower's campaign), lets in-flight reconciles finish, releases the lease, then
    /// stops watches and servers. Cancellation (a ServiceGroup's `maximumGracefulShutdownDuration` running out)
    /// cancels the reconciles still in flight.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                if let (host, port) = Self.parseBindAddress(self.options.healthProbeBindAddress) {
                    group.addTask { await self.serve(host: host, port: port, isMetrics: false) }
                }
                if let (host, port) = Self.parseBindAddress(self.options.metricsBindAddress) {
                    group.addTask { await self.serve(host: host, port: port, isMetrics: true) }
                }
                for c in self.controllers.withLock({ $0 }) { await c.enqueuePrimaryChanges() }
                for i in self.informers.withLock({ Array($0.values) }) {
                    group.addTask { await i.run() }
                }
                group.addTask {
                    let controllers = self.controllers.withLock { $0 }
                    let work: @Sendable () async -> Void = {
                        if controllers.isEmpty {
                            try? await gracefulShutdown()
                            return
                        }
                        await withTaskGroup(of: Void.self) { g in
                            for c in controllers { g.addTask { await c.run() } }
                        }
                    }
                    if let elector = self.elector {
                        // Followers keep their caches warm and stay live; only the leader reconciles.
                        let outcome = await elector.run(whileLeading: work)
                        if outcome == .lostLease { self.logger.critical("leader election lost; stopping") }
                    } else {
                        await work()
                    }
                }
                // The controllers' task ends first (drained on shutdown, or a lost lease); the rest stop then.
                await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.logger.info("shutting down: draining in-flight reconciles")
            self.elector?.resign()
            let controllers = self.controllers.withLock { $0 }
            Task { for c in controllers { await c.shutDown() } }
        }
        logger.info("manager stopped")
    }

    /// The metrics server's TLS configuration: the mounted certificate, or a self-signed one.
    func metricsTLS() throws -> TLSConfiguration {
        let pem: (certificate: String, key: String)
        if let dir = options.metricsCertificateDirectory {
            do {
                pem = (try String(contentsOfFile: dir + "/tls.crt", encoding: .utf8), try String(contentsOfFile: dir + "/tls.key", encoding: .utf8))
            } catch {
                throw ServeError(message: "metrics certificate: cannot read \(dir)/tls.crt and tls.key: \(error)")
            }
        } else {
            let generated = try SelfSignedCertificate(commonName: "meteor-operator-metrics", hosts: ["localhost", ProcessInfo.processInfo.hostName])
            pem = (generated.certificatePEM, generated.privateKeyPEM)
        }
        return TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(pem.certificate.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(pem.key.utf8), format: .pem)))
    }

    struct ServeError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    private func serve(host: String, port: Int, isMetrics: Bool) async {
        let router = Router()
        var server: HTTPServerBuilder = .http1()
        if isMetrics {
            let metrics = self.metrics
            if options.metricsSecure {
                do {
                    server = try .tls(tlsConfiguration: metricsTLS())
                } catch {
                    logger.error("metrics server failed", metadata: ["error": "\(error)"])
                    return
                }
                router.add(middleware: DelegatedAuthMiddleware(auth: DelegatedAuth(client: client), logger: logger))
            }
            router.get("/metrics") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
            }
        } else {
            router.get("/healthz") { _, _ in "ok" }
            router.get("/readyz") { _, _ -> Response in
                if let why = self.unreadiness {
                    return Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: why)))
                }
                return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok")))
            }
        }
        var quiet = Logger(label: "probe-server")
        quiet.logLevel = .warning
        let app = Application(
            router: router, server: server, configuration: .init(address: .hostname(host, port: port), serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                let p = channel.localAddress?.port
                self.bound.withLock { b in if isMetrics { b.metrics = p } else { b.health = p } }
                self.boundSignal.continuation.yield()
            },
            logger: quiet)
        do {
            try await app.run()
        } catch {
            if !Task.isCancelled { logger.error("\(isMetrics ? "metrics" : "health") server failed", metadata: ["error": "\(error)"]) }
        }
    }
}

/// Lets a request through when `DelegatedAuth` allows it: 401 without a valid token, 403 for a user without the
/// right, 500 when the API server cannot be asked.
struct DelegatedAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let auth: DelegatedAuth
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let verdict: DelegatedAuth.Verdict
        do {
            verdict = try await auth.check(authorization: request.headers[.authorization], path: request.uri.path)
        } catch {
            logger.warning("metrics: could not authorize a scrape", metadata: ["error": "\(error)"])
            return Response(
                status: .internalServerError, body: .init(byteBuffer: ByteBuffer(string: "Authorization error (the API server could not be asked)\n"))
            )
        }
        switch verdict {
        case .allowed: return try await next(request, context)
        case .unauthenticated: return Response(status: .unauthorized, body: .init(byteBuffer: ByteBuffer(string: "Unauthorized\n")))
        case .forbidden(let user):
            return Response(
                status: .forbidden, body: .init(byteBuffer: ByteBuffer(string: "Forbidden (user=\(user), verb=get, resource=, subresource=)\n")))
        }
    }
}
