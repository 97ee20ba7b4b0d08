import AsyncHTTPClient
import Foundation
import KubeModels
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// One finished request, for metrics (`rest_client_requests_total{code,method}` and latency).
public struct RequestMetric: Sendable {
    public var method: String
    public var path: String
    public var code: Int
    public var latency: Duration
}

/// A check every write (any verb but GET and HEAD) made by a task passes before it is sent: a non-nil answer
/// is why the write must not go out, and the client throws `KubeError.fenced` with it instead. Task-local, so it
/// covers what a task and its child tasks and unstructured `Task {}`s write, through any client; leader election
/// sets it around the leader's work, so a leader that has not renewed its lease in time (a process paused and
/// woken, a starved event loop) writes nothing, even from a task that outlives its cancellation.
public enum WriteFence {
    @TaskLocal public static var check: (@Sendable () -> String?)?
}

/// Who a client's requests act as: Kubernetes user impersonation (`Impersonate-User`, one `Impersonate-Group` per
/// group, `Impersonate-Uid`). The API server checks that the client's own identity may `impersonate` each of them,
/// then authorizes the request as the impersonated user, so RBAC decides what a person may do, not the program
/// acting for them.
public struct Impersonation: Sendable, Equatable {
    public var user: String
    public var groups: [String]
    public var uid: String?

    public init(user: String, groups: [String] = [], uid: String? = nil) {
        self.user = user
        self.groups = groups
        self.uid = uid
    }

    var headers: [(String, String)] {
        [("Impersonate-User", user)] + groups.map { ("Impersonate-Group", $0) } + (uid.map { [("Impersonate-Uid", $0)] } ?? [])
    }
}

/// The Kubernetes API client: HTTP(S) to the API server with authentication, a client-side rate limit,
/// retries for throttling and transient errors, typed errors from metav1.Status, and streaming watches.
public final class KubeClient: Sendable {
    public struct Options: Sendable {
        /// Client-side rate limit. Generous by default: the API server's own priority and fairness is the limit.
        public var qps: Double = 500
        public var burst: Int = 1000
        /// Retries for 429 (any verb, honouring Retry-After) and 5xx or connection errors (reads only).
        public var maxRetries: Int = 8
        public var initialBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(5)
        public var requestTimeout: Duration = .seconds(60)
        /// How long to keep trying to connect (AsyncHTTPClient retries refused connections until then).
        public var connectTimeout: Duration = .seconds(10)
        public var userAgent = "meteor-operator/0.1"
        /// The local clock `serverClock` corrects (a test skews it).
        public var localClock: @Sendable () -> Date = { Date() }
        public var metrics: (@Sendable (RequestMetric) -> Void)?
        public var logger = Logger(label: "kube-client")

        public init() {}
    }

    public let configuration: ClusterConfiguration
    public let options: Options
    /// The API server's clock, from its responses' `Date` headers.
    public let serverClock: ServerClock
    /// Who this client acts as; nil for its own identity.
    public let impersonation: Impersonation?
    let http: HTTPClient
    /// False for a view made by `impersonating(_:)`: the client it came from owns the connections.
    let ownsHTTP: Bool
    let credentials: CredentialProvider
    let limiter: TokenBucketRateLimiter
    let baseURL: String

    public init(configuration: ClusterConfiguration, options: Options = Options()) throws {
        self.configuration = configuration
        self.options = options
        serverClock = ServerClock(local: options.localClock)
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = configuration.caCertificatePEM {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
            } catch {
                throw KubeError.configuration("\(configuration.source): certificate-authority is not valid PEM: \(error)")
            }
        }
        if configuration.insecureSkipTLSVerify {
            options.logger.warning("TLS verification of the API server is disabled (insecure-skip-tls-verify in \(configuration.source))")
            tls.certificateVerification = .none
        }
        if case .clientCertificate(let cert, let key) = configuration.credentials {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(cert.utf8)).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem))
            } catch {
                throw KubeError.configuration("\(configuration.source): client certificate or key is not valid PEM: \(error)")
            }
        }
        var httpConfig = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow, timeout: .init(connect: .init(options.connectTimeout)))
        httpConfig.httpVersion = .automatic
        httpConfig.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfig)
        ownsHTTP = true
        impersonation = nil
        credentials = CredentialProvider(configuration.credentials)
        limiter = TokenBucketRateLimiter(qps: options.qps, burst: options.burst)
        var base = configuration.server.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        baseURL = base
    }

    /// Loads configuration like kubectl (flag, KUBECONFIG, in-cluster, ~/.kube/config) and connects.
    public convenience init(kubeconfig: String? = nil, context: String? = nil, options: Options = Options()) throws {
        try self.init(configuration: KubeConfigLoader.load(.init(kubeconfigPath: kubeconfig, context: context)), options: options)
    }

    /// The same client acting as `who`: its connections, credentials and rate limit, with every request sent as
    /// that user. Shutting the view down does nothing; the client it came from owns the connections.
    public func impersonating(_ who: Impersonation) -> KubeClient {
        KubeClient(sharing: self, impersonation: who)
    }

    init(sharing other: KubeClient, impersonation: Impersonation) {
        configuration = other.configuration
        options = other.options
        serverClock = other.serverClock
        http = other.http
        ownsHTTP = false
        credentials = other.credentials
        limiter = other.limiter
        baseURL = other.baseURL
        self.impersonation = impersonation
    }

    public func shutdown() async throws {
        if ownsHTTP { try await http.shutdown() }
    }

    /// The headers every request carries: what it accepts, who sends it, and as whom.
    func identify(_ request: inout HTTPClientRequest, accept: String, token: String?) {
        request.headers.add(name: "Accept", value: accept)
        request.headers.add(name: "User-Agent", value: options.userAgent)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in impersonation?.headers ?? [] { request.headers.add(name: name, value: value) }
    }

    public var defaultNamespace: String { configuration.namespace }

    // MARK: Typed and dynamic access

    public func api<K: KubeResource>(_ type: K.Type, namespace: String? = nil) -> Api<K> {
        Api(client: self, namespace: namespace)
    }

    public func dynamic(_ resourceType: ResourceType, namespace: String? = nil) -> DynamicApi {
        DynamicApi(client: self, resourceType: resourceType, namespace: namespace)
    }

    // MARK: Requests

    public struct RawResponse: Sendable {
        public var code: Int
        public var headers: [(String, String)]
        public var body: [UInt8]

        public var warnings: [String] {
            headers.filter { $0.0.lowercased() == "warning" }.map(\.1)
        }
    }

    static func isIdempotent(_ method: HTTPMethod) -> Bool { method == .GET || method == .HEAD }

    func url(_ path: String, _ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return baseURL + path }
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+,;")
        let q = query.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.1)" }.joined(separator: "&")
        return baseURL + path + "?" + q
    }

    /// Sends a request and returns the response, or throws the API error it carried. A write the task's
    /// `WriteFence` refuses is not sent (`KubeError.fenced`); the fence is asked last, just before each attempt.
    /// `headers` go out as given, after the client's own (a test's raw impersonation headers, say).
    public func send(
        _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], body: [UInt8]? = nil, contentType: String = "application/json",
        accept: String = "application/json", headers extra: [(String, String)] = []
    ) async throws -> RawResponse {
        var attempt = 0
        var refreshedCredentials = false
        while true {
            try await limiter.acquire()
            var request = HTTPClientRequest(url: url(path, query))
            request.method = method
            identify(&request, accept: accept, token: try await credentials.token(forceRefresh: refreshedCredentials && attempt > 0))
            for (name, value) in extra { request.headers.add(name: name, value: value) }
            if let body {
                request.headers.add(name: "Content-Type", value: contentType)
                request.body = .bytes(ByteBuffer(bytes: body))
            }
            // Asked after every await before the send (the rate limiter, the credentials), so that a process
            // frozen in one of them finds its fence closed when it wakes.
            if !Self.isIdempotent(method), let fence = WriteFence.check, let why = fence() {
                throw KubeError.fenced("\(method.rawValue) \(path): \(why)")
            }
            let started = ContinuousClock.now
            let response: HTTPClientResponse
            var bytes: [UInt8]
            do {
                response = try await http.execute(request, timeout: .init(options.requestTimeout))
                var buffer = try await response.body.collect(upTo: 256 * 1024 * 1024)
                bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
            } catch {
                options.metrics?(RequestMetric(method: method.rawValue, path: path, code: 0, latency: ContinuousClock.now - started))
                if Self.isIdempotent(method), attempt < options.maxRetries, !(error is CancellationError) {
                    try await Task.sleep(for: backoff(attempt))
                    attempt += 1
                    continue
                }
                throw KubeError.transport("\(method.rawValue) \(path): \(error)")
            }
            let code = Int(response.status.code)
            serverClock.observe(dateHeader: response.headers.first(name: "Date"))
            options.metrics?(RequestMetric(method: method.rawValue, path: path, code: code, latency: ContinuousClock.now - started))
            let headers = response.headers.map { ($0.name, $0.value) }
            if (200..<300).contains(code) { return RawResponse(code: code, headers: headers, body: bytes) }

            if code == 401, !refreshedCredentials, Self.rotates(configuration.credentials) {
                refreshedCredentials = true
                attempt += 1
                continue
            }
            let retryAfter = response.headers.first(name: "Retry-After").flatMap(Int.init)
            let retriable = code == 429 || (Self.isIdempotent(method) && [500, 502, 503, 504].contains(code))
            if retriable, attempt < options.maxRetries {
                let wait = retryAfter.map { Duration.seconds($0) } ?? backoff(attempt)
                options.logger.debug("retrying after \(code)", metadata: ["path": "\(path)", "attempt": "\(attempt + 1)"])
                try await Task.sleep(for: min(wait, .seconds(30)))
                attempt += 1
                continue
            }
            throw Self.error(code: code, body: bytes)
        }
    }

    static func rotates(_ c: ClusterConfiguration.Credentials) -> Bool {
        switch c {
        case .tokenFile, .exec: return true
        default: return false
        }
    }

    func backoff(_ attempt: Int) -> Duration {
        let base = options.initialBackoff * (1 << min(attempt, 16))
        let capped = min(base, options.maxBackoff)
        // Full jitter keeps many retrying clients from moving in lockstep.
        return capped * Double.random(in: 0.5...1.0)
    }

    static func error(code: Int, body: [UInt8]) -> KubeError {
        if let v = try? JSONValue.parse(body), v["kind"]?.stringValue == "Status", let status: Status = try? v.decode() {
            return KubeError.from(status, httpCode: code)
        }
        let text = String(decoding: body.prefix(512), as: UTF8.self)
        return KubeError.from(
            Status(message: text.isEmpty ? "HTTP \(code)" : text, reason: code == 404 ? StatusReason.notFound : nil, code: code), httpCode: code)
    }

    /// Sends a request whose body and response are JSON values.
    public func json(
        _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], body: JSONValue? = nil, contentType: String = "application/json"
    ) async throws -> JSONValue {
        let response = try await send(method, path, query: query, body: body?.serialized(), contentType: contentType)
        do {
            return try JSONValue.parse(response.body)
        } catch {
            throw KubeError.decoding("\(method.rawValue) \(path): \(error)")
        }
    }

    // MARK: Watch

    /// Opens a watch and yields its events as they arrive. An ERROR event ends the stream with its error
    /// (`KubeError.gone` for 410 Expired); an HTTP 410 does the same.
    /// With `idleTimeout`, a stream that delivers no complete event for that long ends with `KubeError.watchIdle`
    /// (the request's own deadline stops counting once the headers are in).
    public func watchEvents(
        _ path: String, query: [(String, String)], timeoutSeconds: Int?, idleTimeout: Duration? = nil
    ) -> WatchStream<(WatchEventType, JSONValue)> {
        WatchStream.make { [self] yield in
            do {
                try await limiter.acquire()
                var request = HTTPClientRequest(url: url(path, query))
                identify(&request, accept: "application/json", token: try await credentials.token())
                let started = ContinuousClock.now
                let deadline = Duration.seconds((timeoutSeconds ?? 3600) + 60)
                let response = try await http.execute(request, timeout: .init(deadline))
                let code = Int(response.status.code)
                serverClock.observe(dateHeader: response.headers.first(name: "Date"))
                options.metrics?(RequestMetric(method: "WATCH", path: path, code: code, latency: ContinuousClock.now - started))
                guard code == 200 else {
                    let body = try await response.body.collect(upTo: 1024 * 1024)
                    if code == 401 { _ = try? await credentials.token(forceRefresh: true) }
                    throw Self.error(code: code, body: Array(body.readableBytesView))
                }
                let activity = WatchActivity()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        var decoder = WatchLineDecoder()
                        for try await chunk in response.body {
                            for event in try decoder.feed(chunk.readableBytesView) {
                                activity.last.withLock { $0 = .now }
                                try await yield(try Self.event(event))
                            }
                        }
                        if let last = try decoder.finish() { try await yield(try Self.event(last)) }
                    }
                    if let idleTimeout {
                        group.addTask {
                            while true {
                                let deadline = activity.last.withLock { $0 } + idleTimeout
                                if ContinuousClock.now >= deadline { throw KubeError.watchIdle(path: path, after: idleTimeout) }
                                try await Task.sleep(until: deadline)
                            }
                        }
                    }
                    // The first to end decides: the stream's end, its error, or the idle deadline.
                    try await group.next()
                    group.cancelAll()
                }
            } catch let e as KubeError {
                throw e
            } catch is CancellationError {
                return
            } catch {
                throw KubeError.transport("watch \(path): \(error)")
            }
        }
    }

    /// One decoded watch event; an ERROR event is thrown as its error.
    static func event(_ event: JSONValue) throws -> (WatchEventType, JSONValue) {
        guard let typeText = event["type"]?.stringValue, let type = WatchEventType(rawValue: typeText), let object = event["object"] else {
            throw KubeError.decoding("watch event without type or object: \(event.serializedString().prefix(200))")
        }
        if type == .error {
            let status: Status = (try? object.decode()) ?? Status(message: object.serializedString(), code: 500)
            throw KubeError.from(status, httpCode: status.code ?? 500)
        }
        return (type, object)
    }
}

/// When a watch last delivered a complete event, for its idle deadline.
final class WatchActivity: Sendable {
    let last = Mutex(ContinuousClock.now)
}
