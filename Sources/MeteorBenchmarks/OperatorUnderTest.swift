import AsyncHTTPClient
import Foundation
import NIOCore
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore
import ServiceLifecycle
import Synchronization

/// The operator being measured: in this process (a Manager with the Meteor reconciler, as `meteor-operator run`
/// sets it up) or as a separate `meteor-operator run` process. Either way its API requests are counted from its own
/// `rest_client_requests_total`.
public final class OperatorUnderTest: Sendable {
    enum Mode {
        case inProcess(manager: Manager, group: ServiceGroup, task: Task<Void, any Error>, client: KubeClient)
        case process(Process, metricsPort: Int, healthPort: Int)
    }
    let mode: Mode
    let firstReconcile: FirstSignal
    let writes: WriteCounter

    /// Writes by "METHOD resource" (in-process only: a separate process reports methods, not resources).
    final class WriteCounter: Sendable {
        let counts = Mutex<[String: Int]>([:])
        func count(_ m: RequestMetric) {
            guard m.method != "GET", m.method != "WATCH" else { return }
            let segments = m.path.split(separator: "/")
            var rest = Array(segments.dropFirst(segments.first == "api" ? 2 : 3))
            if rest.first == "namespaces", rest.count >= 3 { rest = Array(rest.dropFirst(2)) }
            let resource = (rest.first.map(String.init) ?? "?") + (rest.count >= 3 ? "/" + rest[2] : "")
            let key = "\(m.method) \(resource)"
            let ready: [CheckedContinuation<Void, Never>] = counts.withLock { c in
                c[key, default: 0] += 1
                return waiters.withLock { w in
                    let n = c[key] ?? 0
                    let done = w.filter { $0.value.key == key && n >= $0.value.count }
                    for id in done.keys { w[id] = nil }
                    return done.values.map(\.continuation)
                }
            }
            for c in ready { c.resume() }
        }

        let waiters = Mutex<[UUID: (key: String, count: Int, continuation: CheckedContinuation<Void, Never>)]>([:])

        /// Returns once `key` ("PATCH meteors/status") has been counted `count` times, or when cancelled. A write is
        /// counted when its response has come back, which may be after a watcher has seen its effect.
        func wait(for key: String, atLeast count: Int) async {
            let id = UUID()
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = counts.withLock { counts -> Bool in
                        if (counts[key] ?? 0) >= count || Task.isCancelled { return true }
                        waiters.withLock { $0[id] = (key, count, c) }
                        return false
                    }
                    if now { c.resume() }
                }
            } onCancel: {
                waiters.withLock { $0.removeValue(forKey: id) }?.continuation.resume()
            }
        }
    }

    public func writesByResource() -> [String: Int] { writes.counts.withLock { $0 } }
    /// Whether `writesByResource` counts anything (in-process only).
    var countsResources: Bool { if case .inProcess = mode { return true }; return false }
    public let started: ContinuousClock.Instant

    final class FirstSignal: Sendable {
        let state = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        func fire() {
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                if s.done { return [] }
                s.done = true
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume() }
        }
        func wait() async {
            await withCheckedContinuation { c in
                let done = state.withLock { s -> Bool in
                    if s.done { return true }
                    s.waiters.append(c)
                    return false
                }
                if done { c.resume() }
            }
        }
    }

    init(mode: Mode, firstReconcile: FirstSignal, started: ContinuousClock.Instant, writes: WriteCounter = WriteCounter()) {
        self.mode = mode
        self.writes = writes
        self.firstReconcile = firstReconcile
        self.started = started
    }

    /// Starts the operator on `namespace` with `workers` concurrent reconciles and no client-side rate limit.
    public static func start(target: BenchTarget, workers: Int, binary: String?, logger: Logger) async throws -> OperatorUnderTest {
        let started = ContinuousClock.now
        let first = FirstSignal()
        if let binary {
            let metricsPort = try freePort(), healthPort = try freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "run", "--kubeconfig", target.kubeconfigPath, "--namespace", target.namespace, "--concurrency", String(workers), "--qps", "0",
                "--metrics-bind-address", "127.0.0.1:\(metricsPort)", "--health-probe-bind-address", "127.0.0.1:\(healthPort)", "--log-format",
                "text",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let op = OperatorUnderTest(
                mode: .process(process, metricsPort: metricsPort, healthPort: healthPort), firstReconcile: first, started: started)
            // A separate process has no hook: watch its reconcile counter (a benchmark may poll; tests do not).
            Task {
                while process.isRunning {
                    if let text = try? await op.scrape(), ClientProfile.Exposition(text).sum("controller_runtime_reconcile_total") > 0 {
                        first.fire(); return
                    }
                    // Every 10 ms (at 2 ms the scraping took a tenth of the bench process, which serves the list).
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            return op
        }
        let metrics = RuntimeMetrics(histogramBuckets: MeteorMetrics.histogramBuckets)
        var options = KubeClient.Options()
        options.qps = 0
        let writes = WriteCounter()
        let hook = metrics.clientHook
        options.metrics = { m in
            hook(m)
            writes.count(m)
        }
        options.userAgent = "meteor-operator/bench"
        let client = try KubeClient(configuration: target.cluster, options: options)
        var managerOptions = Manager.Options()
        managerOptions.metricsBindAddress = nil
        managerOptions.healthProbeBindAddress = nil
        var quiet = logger
        quiet.logLevel = .warning
        let manager = Manager(client: client, options: managerOptions, metrics: metrics, logger: quiet)
        _ = await MeteorReconciler.register(
            with: manager, namespace: target.namespace, workers: workers, onReconciled: { _, _ in first.fire() }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [manager], logger: quiet))
        let task = Task { try await group.run() }
        return OperatorUnderTest(
            mode: .inProcess(manager: manager, group: group, task: task, client: client), firstReconcile: first, started: started, writes: writes)
    }

    /// Until the first reconcile has finished.
    public func waitForFirstReconcile() async { await firstReconcile.wait() }

    /// Until the informer caches have synced (`/readyz` for a process).
    public func waitForSync() async throws {
        switch mode {
        case .inProcess(let manager, _, _, _):
            await manager.waitForInformersSynced()
        case .process(let process, _, let healthPort):
            while process.isRunning {
                if let r = try? await HTTPGet.get("http://127.0.0.1:\(healthPort)/readyz"), r.status == 200 { return }
                try await Task.sleep(for: .milliseconds(2))
            }
            throw BenchError("the operator process exited")
        }
    }

    public func scrape() async throws -> String {
        switch mode {
        case .inProcess(let manager, _, _, _): return manager.metrics.render()
        case .process(_, let port, _): return try await HTTPGet.get("http://127.0.0.1:\(port)/metrics").body
        }
    }

    /// Requests so far by HTTP method.
    public func requestsByMethod() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for sample in ClientProfile.Exposition(try await scrape()).samples where sample.name == "rest_client_requests_total" {
            guard let method = sample.labels["method"] else { continue }
            out[method, default: 0] += Int(sample.value)
        }
        return out
    }

    public var pid: String {
        switch mode {
        case .inProcess: return "self"
        case .process(let p, _, _): return String(p.processIdentifier)
        }
    }

    public var scope: String {
        switch mode {
        case .inProcess: return "process (operator, bench client and embedded server together)"
        case .process: return "operator process"
        }
    }

    public func stop() async {
        switch mode {
        case .inProcess(_, let group, let task, let client):
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            try? await client.shutdown()
        case .process(let p, _, _):
            if p.isRunning {
                p.interrupt()
                p.waitUntilExit()
            }
        }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw BenchError("bind() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A plain GET over loopback (metrics and readiness of an operator process).
enum HTTPGet {
    static func get(_ url: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 32 << 20)
        return (Int(response.status.code), String(buffer: body))
    }
}
