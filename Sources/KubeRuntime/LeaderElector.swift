import Foundation
import KubeClient
import KubeModels
import Logging
import Metrics
import Synchronization

/// Leader election on a coordination.k8s.io/v1 Lease, with client-go's timing rules: a leader that cannot renew
/// within `renewDeadline` stops its work, and since `renewDeadline < leaseDuration` it has stopped before any
/// other replica may take the lease. A leader that shuts down releases the lease so a successor takes over at once.
public final class LeaderElector: Sendable {
    public struct Configuration: Sendable {
        public var leaseName: String
        public var namespace: String
        public var identity: String
        public var leaseDuration: Duration
        public var renewDeadline: Duration
        public var retryPeriod: Duration

        public init(
            leaseName: String, namespace: String, identity: String = LeaderElector.defaultIdentity(), leaseDuration: Duration = .seconds(15),
            renewDeadline: Duration = .seconds(10), retryPeriod: Duration = .seconds(2)
        ) {
            self.leaseName = leaseName
            self.namespace = namespace
            self.identity = identity
            self.leaseDuration = leaseDuration
            self.renewDeadline = renewDeadline
            self.retryPeriod = retryPeriod
        }
    }

    /// The pod name (POD_NAME, or HOSTNAME in a pod), else hostname plus a random suffix.
    public static func defaultIdentity(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let pod = environment["POD_NAME"], !pod.isEmpty { return pod }
        let host = ProcessInfo.processInfo.hostName
        return "\(host)_\(UUID().uuidString.lowercased())"
    }

    public let configuration: Configuration
    let leases: Api<Lease>
    let logger: Logger
    /// Yielded by `resign()`: a replica shutting down stops campaigning.
    let resignation = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let gauge: Gauge?
    /// The last lease record seen and when (local clock): expiry is judged from when we saw a change, as
    /// client-go does, so clock skew between replicas does not matter.
    let observed = Mutex<(record: Lease.Spec?, at: ContinuousClock.Instant)>((nil, .now))
    /// Until when (local monotonic clock) this replica may write as the leader: `renewDeadline` after its last
    /// successful acquire or renewal was sent. nil while not leading (`isLeader` is whether it is set).
    let writableUntil = Mutex<ContinuousClock.Instant?>(nil)

    public init(
        client: KubeClient, configuration: Configuration, metricsFactory: (any MetricsFactory)? = nil,
        logger: Logger = Logger(label: "leader-election")
    ) {
        precondition(configuration.renewDeadline < configuration.leaseDuration, "renewDeadline must be shorter than leaseDuration")
        self.configuration = configuration
        leases = client.api(Lease.self, namespace: configuration.namespace)
        var l = logger
        l[metadataKey: "lease"] = "\(configuration.namespace)/\(configuration.leaseName)"
        l[metadataKey: "identity"] = "\(configuration.identity)"
        self.logger = l
        gauge = metricsFactory.map { Gauge(label: "leader_election_master_status", dimensions: [("name", configuration.leaseName)], factory: $0) }
        gauge?.record(0)
    }

    public var isLeader: Bool { writableUntil.withLock { $0 != nil } }

    /// Why a write must not go out now (nil: it may): the `WriteFence` around the leader's work. The deadline is
    /// the one the renew loop stops at, judged on the monotonic clock, which runs on while a process is stopped:
    /// a leader paused past its lease (SIGSTOP, a frozen VM) refuses every write the moment it wakes, before its
    /// renew loop has run, and whatever its work left running after cancellation writes nothing either. (A write
    /// already past this check when the process froze can still go out; only the server could fence that.)
    public func fenceReason() -> String? {
        guard let until = writableUntil.withLock({ $0 }) else {
            return "not the leader of lease \(configuration.namespace)/\(configuration.leaseName)"
        }
        if ContinuousClock.now >= until {
            return
                "lease \(configuration.namespace)/\(configuration.leaseName) not renewed within \(configuration.renewDeadline); it may have passed to another replica"
        }
        return nil
    }

    /// Stops campaigning: a follower's `run` returns `.cancelled` at once (an attempt in flight, which may wait
    /// long on an API server that has gone away, is cancelled), without ever leading. A leader is unaffected:
    /// its work ends when it is drained, then the lease is released.
    public func resign() { resignation.continuation.yield() }

    public enum Outcome: Sendable { case lostLease, cancelled }

    /// Campaigns until elected, runs `work` while leading, and returns when leadership is lost (after `work` has
    /// been cancelled and has returned), or when `work` returns or the calling task is cancelled (then the lease
    /// is released).
    @discardableResult
    public func run(whileLeading work: @escaping @Sendable () async -> Void) async -> Outcome {
        let elected = await unlessStopped(by: resignation.stream) { () -> ContinuousClock.Instant? in
            while !Task.isCancelled {
                let sent = ContinuousClock.now
                if await self.tryAcquireOrRenew() { return Task.isCancelled ? nil : sent }
                try? await Task.sleep(for: self.jittered(self.configuration.retryPeriod))
            }
            return nil
        }
        // Cancelled or resigned while campaigning: nothing to release (an acquire cut off in flight that the
        // server applied leaves a lease that expires, as a crash would).
        guard !Task.isCancelled, let acquiredAt = elected else { return .cancelled }
        setLeading(until: acquiredAt + configuration.renewDeadline)
        logger.info("became leader")
        let outcome: Outcome = await withTaskGroup(of: Outcome.self) { group in
            // Whichever ends first decides: the work finishing (shutdown) or renewals failing (lost lease).
            group.addTask {
                await WriteFence.$check.withValue({ self.fenceReason() }) { await work() }
                return .cancelled
            }
            group.addTask { await self.renewLoop(from: acquiredAt) }
            let result = await group.next() ?? .cancelled
            group.cancelAll()
            // Wait for the work to stop before anything else: nobody may reconcile after we stop leading.
            while await group.next() != nil {}
            return result
        }
        setLeading(until: nil)
        if outcome == .cancelled {
            // The calling task is cancelled; the release runs in its own task so its request is not.
            await Task { await self.release() }.value
        } else {
            logger.warning("lost leadership")
        }
        return outcome
    }

    /// Renews every retry period; returns `.lostLease` once renewals have failed for `renewDeadline`.
    ///
    /// The deadline counts from when the last successful renewal was *sent* (the server may have stamped it any
    /// time after that), and the loop wakes at the deadline rather than at the next retry period: a follower's
    /// clock starts when it sees that renewal, so stopping any later than this eats into the margin between
    /// `renewDeadline` and `leaseDuration` that keeps two leaders apart.
    private func renewLoop(from acquiredAt: ContinuousClock.Instant) async -> Outcome {
        var lastRenew = acquiredAt
        while !Task.isCancelled {
            let untilDeadline = lastRenew + configuration.renewDeadline - ContinuousClock.now
            try? await Task.sleep(for: max(.zero, min(configuration.retryPeriod, untilDeadline)))
            if Task.isCancelled { return .cancelled }
            // A hung request must not keep us leading past the deadline: each attempt gets only the time left.
            let sent = ContinuousClock.now
            let left = lastRenew + configuration.renewDeadline - sent
            if left > .zero, await attempt(within: left) {
                lastRenew = sent
                setLeading(until: sent + configuration.renewDeadline)
            } else if ContinuousClock.now - lastRenew >= configuration.renewDeadline {
                return .lostLease
            }
        }
        return .cancelled
    }

    /// One acquire-or-renew that counts as failed if it takes longer than `limit`.
    private func attempt(within limit: Duration) async -> Bool {
        await Self.result(within: limit) { await self.tryAcquireOrRenew() } ?? false
    }

    /// `body`'s result, or nil (and `body` cancelled) if it takes longer than `limit`.
    static func result<T: Sendable>(within limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { await body() }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Leading, and may write until `until` (nil: no longer leading).
    private func setLeading(until: ContinuousClock.Instant?) {
        writableUntil.withLock { $0 = until }
        gauge?.record(until == nil ? 0 : 1)
    }

    func jittered(_ d: Duration) -> Duration { d * Double.random(in: 1.0...1.2) }

    static func now() -> String { KubeTime.formatMicro(Date()) }

    /// One attempt: create the lease, renew ours, or take over an expired or released one.
    func tryAcquireOrRenew() async -> Bool {
        let me = configuration.identity
        let seconds = Int32(configuration.leaseDuration.components.seconds)
        do {
            guard var lease = try await leases.getOptional(configuration.leaseName) else {
                let spec = Lease.Spec(
                    holderIdentity: me, leaseDurationSeconds: seconds, acquireTime: Self.now(), renewTime: Self.now(), leaseTransitions: 0)
                _ = try await leases.create(
                    Lease(metadata: ObjectMeta(name: configuration.leaseName, namespace: configuration.namespace), spec: spec))
                observe(spec)
                return true
            }
            let spec = lease.spec ?? Lease.Spec()
            let observedAt = observe(spec)
            let holder = spec.holderIdentity ?? ""
            if !holder.isEmpty, holder != me {
                let duration = Duration.seconds(Int64(spec.leaseDurationSeconds ?? seconds))
                if ContinuousClock.now < observedAt + duration { return false }
            }
            var next = spec
            if holder != me {
                next.acquireTime = Self.now()
                next.leaseTransitions = (spec.leaseTransitions ?? 0) + 1
            }
            next.holderIdentity = me
            next.leaseDurationSeconds = seconds
            next.renewTime = Self.now()
            lease.spec = next
            let updated = try await leases.replace(lease)
            observe(updated.spec ?? next)
            return true
        } catch {
            logger.debug("lease attempt failed", metadata: ["error": "\(error)"])
            return false
        }
    }

    @discardableResult
    private func observe(_ spec: Lease.Spec) -> ContinuousClock.Instant {
        observed.withLock { o in
            if o.record != spec {
                o.record = spec
                o.at = .now
            }
            return o.at
        }
    }

    /// Gives the lease up (holder cleared) so a follower acquires it on its next try. A GET and a PUT, given at
    /// most `releaseTimeout`: an API server that has gone away must not hold a replica that is shutting down
    /// (the lease then expires, as after a crash).
    func release() async {
        if await Self.result(within: releaseTimeout, { await self.releaseNow() }) == nil {
            logger.warning("cannot release lease in time; it will expire", metadata: ["limit": "\(releaseTimeout)"])
        }
    }

    var releaseTimeout: Duration { min(configuration.renewDeadline, .seconds(5)) }

    private func releaseNow() async {
        do {
            guard var lease = try await leases.getOptional(configuration.leaseName), lease.spec?.holderIdentity == configuration.identity else {
                return
            }
            lease.spec?.holderIdentity = nil
            lease.spec?.leaseDurationSeconds = 1
            lease.spec?.renewTime = Self.now()
            _ = try await leases.replace(lease)
            logger.info("released lease")
        } catch {
            logger.warning("cannot release lease", metadata: ["error": "\(error)"])
        }
    }
}
