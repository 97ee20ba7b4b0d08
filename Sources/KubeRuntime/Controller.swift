import Foundation
import KubeModels
import Logging
import Metrics
import Synchronization

/// What a reconcile asks for next (kube-rs's `Action`, controller-runtime's `Result`).
public enum ReconcileAction: Sendable, Equatable {
    /// Converged; wait for the next change.
    case done
    /// Run again after the key's backoff.
    case requeue
    /// Run again after this long (e.g. a TTL expiry).
    case requeueAfter(Duration)
}

/// What a manager runs of a controller, whatever its primary caches.
public protocol RunnableController: Sendable {
    /// Registers the primary's handler (before the informers run).
    func enqueuePrimaryChanges() async
    func run() async
    func shutDown() async
}

/// An error retrying cannot fix (an object the reconciler cannot read, say): the key is not requeued until its
/// object changes again. Counted in `controller_runtime_terminal_reconcile_errors_total` as well as the error
/// total, as controller-runtime's `reconcile.TerminalError`; the reconciler says it where users look first.
public struct TerminalError: Error, CustomStringConvertible {
    public let underlying: any Error
    public init(_ underlying: any Error) { self.underlying = underlying }
    public var description: String { "\(underlying)" }
}

/// Reconciles one object by key: reads what it needs (from caches), converges, says what next.
public typealias Reconcile = @Sendable (ObjectKey) async throws -> ReconcileAction

/// How a controller runs: workers, which primary changes count, retry backoff, the clock, a reconcile hook.
public struct ControllerOptions: Sendable {
    public var workers = 2
    /// Skip primary updates that do not change `metadata.generation` (status-only writes, label edits).
    public var generationChangedOnly = false
    public var rateLimiter: any RetryRateLimiter<ObjectKey> = MaxOfRateLimiter<ObjectKey>.controllerDefault
    public var clock: any RuntimeClock = SystemClock()
    /// Called after each reconcile with its key and whether it succeeded (tracing, benchmarks).
    public var onReconciled: (@Sendable (ObjectKey, Bool) -> Void)?
    public init() {}
}

/// A controller: a primary resource's informer, owned and watched secondary informers mapping to primary keys,
/// a rate-limited work queue and N workers. Errors are retried with the queue's backoff. Generic over what the
/// primary informer caches (kube-rs's `Controller<K>`); secondaries may cache anything.
public final class Controller<K: CachedResource>: RunnableController {
    public typealias Options = ControllerOptions

    public let name: String
    public let primary: Informer<K>
    public let queue: WorkQueue<ObjectKey>
    let options: Options
    let reconcile: Reconcile
    let logger: Logger
    let metrics: ControllerMetrics?
    let secondaries = Mutex<[any RunnableInformer]>([])
    let active = Mutex(0)
    let stopping = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    public init(
        name: String, for primary: Informer<K>, options: Options = Options(), metricsFactory: (any MetricsFactory)? = nil,
        logger: Logger = Logger(label: "controller"), reconcile: @escaping Reconcile
    ) {
        self.name = name
        self.primary = primary
        self.options = options
        self.reconcile = reconcile
        var l = logger
        l[metadataKey: "controller"] = "\(name)"
        self.logger = l
        metrics = metricsFactory.map { ControllerMetrics(controller: name, factory: $0) }
        queue = WorkQueue(
            rateLimiter: options.rateLimiter, clock: options.clock, metrics: metricsFactory.map { QueueMetrics(name: name, factory: $0) })
    }

    /// Queues the primary's changes: registers its handler. Call before the informers run.
    public func enqueuePrimaryChanges() async {
        let queue = self.queue
        let generationOnly = options.generationChangedOnly
        await primary.addHandler { event in
            if generationOnly, case .updated(let old, let new) = event, old.generation == new.generation,
                old.isBeingDeleted == new.isBeingDeleted, old.resourceVersion != new.resourceVersion
            {
                return
            }
            await queue.add(event.object.objectKey)
        }
    }

    /// Objects of `informer` enqueue their controller owner when it is of the primary's kind (found by the
    /// ownerReference with `controller: true`), across kinds other projects define.
    public func owns<O: CachedResource>(_ informer: Informer<O>) async {
        let primaryType = primary.resourceType
        await watches(informer) { o in
            guard let ref = o.controllerOwner, ref.kind == primaryType.kind, Self.group(of: ref.apiVersion) == primaryType.group else { return [] }
            return [ObjectKey(namespace: primaryType.namespaced ? o.objectKey.namespace : nil, name: ref.name)]
        }
    }

    static func group(of apiVersion: String) -> String {
        apiVersion.contains("/") ? String(apiVersion.split(separator: "/")[0]) : ""
    }

    /// Objects of `informer` enqueue whatever primary keys `map` returns.
    public func watches<O: CachedResource>(_ informer: Informer<O>, map: @escaping @Sendable (O) -> [ObjectKey]) async {
        secondaries.withLock { $0.append(informer) }
        let queue = self.queue
        await informer.addHandler { event in
            var keys = Set(map(event.object))
            if case .updated(let old, _) = event { keys.formUnion(map(old)) }
            for k in keys { await queue.add(k) }
        }
    }
}

/// controller-runtime's controller metrics, by the same names.
struct ControllerMetrics: Sendable {
    let factory: any MetricsFactory
    let controller: String
    let errors: Counter
    let terminalErrors: Counter
    let time: Metrics.Timer
    let maxConcurrent: Gauge
    let activeWorkers: Gauge
    let results: [String: Counter]

    init(controller: String, factory: any MetricsFactory) {
        self.factory = factory
        self.controller = controller
        let dims = [("controller", controller)]
        errors = Counter(label: "controller_runtime_reconcile_errors_total", dimensions: dims, factory: factory)
        terminalErrors = Counter(label: "controller_runtime_terminal_reconcile_errors_total", dimensions: dims, factory: factory)
        time = Metrics.Timer(label: "controller_runtime_reconcile_time_seconds", dimensions: dims, preferredDisplayUnit: .seconds, factory: factory)
        maxConcurrent = Gauge(label: "controller_runtime_max_concurrent_reconciles", dimensions: dims, factory: factory)
        activeWorkers = Gauge(label: "controller_runtime_active_workers", dimensions: dims, factory: factory)
        var r: [String: Counter] = [:]
        for result in ["success", "error", "requeue", "requeue_after"] {
            r[result] = Counter(label: "controller_runtime_reconcile_total", dimensions: dims + [("result", result)], factory: factory)
        }
        results = r
    }

    func result(_ name: String) { results[name]?.increment() }
}
