import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import Synchronization

/// Turns a Meteor into PipelineRuns and reports their progress in its status.
///
/// Level-triggered: every call reads the Meteor and its PipelineRuns from the informer caches and converges, so
/// it can run any number of times, after any restart. PipelineRun names are deterministic per generation, so a
/// crash between "create" and "record" never starts a second build. A spec change (new generation) starts new
/// runs and cancels the previous generation's unfinished ones (`spec.status: Cancelled`), since their results
/// would describe a spec that no longer exists.
public final class MeteorReconciler: Sendable {
    public struct Configuration: Sendable {
        public var build = BuildSettings()
        /// Create children with `fieldValidation=Strict`, so a field the installed Tekton does not know fails loudly.
        public var strictFieldValidation = false
        /// The clock TTLs and condition times are judged by; nil: the API server's (`KubeClient.serverClock`),
        /// so that a skewed operator clock neither expires Meteors early nor late. Tests move time with it.
        public var now: (@Sendable () -> Date)?
        /// Serve JupyterBook sites through an Ingress of this class, at `<name>.<namespace>.<ingressDomain>`.
        public var ingressClass: String?
        public var ingressDomain: String?
        /// Publish notebook images as Open Data Hub ImageStreams (set when the cluster serves image.openshift.io/v1).
        public var publishImageStreams = false
        /// Where the ImageStreams go: Open Data Hub's spawner and dashboard list only those in their own namespace
        /// (`opendatahub`, `redhat-ods-applications`). nil: the Meteor's namespace.
        public var notebookImageNamespace: String?
        /// Edge delivery through Argo CD; nil when the cluster has no Argo CD (edge Meteors then get InvalidSpec).
        public var edge: EdgeSettings?
        /// Finished superseded PipelineRuns kept per pipeline (edge runs are not pruned), newest first; older ones are
        /// deleted with their workspace PVCs, so a Meteor changed many times does not pile up builds and storage.
        public var keepSupersededRuns = 1
        /// How long a namespace's ServiceAccount and push Secret lookup is trusted, and how soon a Meteor that
        /// lacked one is looked at again.
        public var prerequisiteRecheck: Duration = .seconds(30)
        /// Where the operator may connect for what a Meteor names (its repository, its images' registries).
        public var egress = EgressPolicy()
        /// Follow branches: resolve `spec.ref` to a commit, build that commit (one build per commit, shared by every
        /// Meteor and CustomRuntimeEnvironment of a namespace asking for it), and read a branch again this often to
        /// build where it moved (a push webhook reads it at once). nil: each generation builds `spec.ref` as named.
        public var followRefs: Duration?
        public init() {}
    }

    /// The egress policy with what the admin configured allowed as named: the builds' image registry, insecure
    /// registries and mirrors (`EdgeSettings`).
    var egress: EgressPolicy {
        var policy = configuration.egress
        if let registry = configuration.build.imageRepositoryPrefix.split(separator: "/").first { policy.allow(endpoint: String(registry)) }
        if let edge = configuration.edge {
            for registry in edge.insecureRegistries { policy.allow(endpoint: registry) }
            for origin in edge.hostOverrides.values { policy.allow(originOf: origin) }
        }
        return policy
    }

    public let client: KubeClient
    public let meteors: DynamicInformer
    public let pipelineRuns: DynamicInformer
    /// Deployments, Services, Ingresses and ImageStreams the operator made (label `app.kubernetes.io/managed-by`).
    public let sites: [String: DynamicInformer]
    /// Argo CD Applications the operator made, in Argo CD's namespace (when edge delivery is on).
    public let applications: DynamicInformer?
    /// The cluster admin's EdgeTrustPolicies (when edge delivery is on).
    public let trustPolicies: Informer<EdgeTrustPolicy>?
    /// Argo CD's cluster Secrets, trimmed to name and labels (when edge delivery is on).
    public let clusters: DynamicInformer?
    let events: EventRecorder
    let edgeMemory = EdgeMemory()
    /// The commits followed refs name (`Configuration.followRefs`); nil when refs are built as named.
    public let refs: FollowedRefs?
    /// Reads from the caches, writes through to the API server (remembered until the caches show them), as
    /// `meteor-operator`, with the configured field validation for what the operator makes.
    let cache: CachedClient
    /// Reconciles in a row that an API error ended, per Meteor (cleared by a reconcile that succeeds).
    let failedRequests = Mutex<[ObjectKey: Int]>([:])
    /// Impact metrics (nil when no metrics factory is given).
    public let metrics: MeteorMetrics?
    let configuration: Configuration
    let prerequisites: BuildPrerequisites
    let logger: Logger

    public init(
        client: KubeClient, meteors: DynamicInformer, pipelineRuns: DynamicInformer, sites: [String: DynamicInformer] = [:],
        applications: DynamicInformer? = nil,
        trustPolicies: Informer<EdgeTrustPolicy>? = nil, clusters: DynamicInformer? = nil, events: EventRecorder,
        configuration: Configuration = Configuration(),
        metrics: MeteorMetrics? = nil, logger: Logger = Logger(label: "meteor")
    ) {
        self.trustPolicies = trustPolicies
        self.clusters = clusters
        refs = configuration.followRefs.map(FollowedRefs.init(interval:))
        prerequisites = BuildPrerequisites(client: client, settings: configuration.build, cacheFor: configuration.prerequisiteRecheck)
        self.metrics = metrics
        self.client = client
        cache = CachedClient(client: client, fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? .strict : nil)
        self.meteors = meteors
        self.pipelineRuns = pipelineRuns
        self.sites = sites
        self.applications = applications
        self.events = events
        self.configuration = configuration
        self.logger = logger
    }

    /// Wires the informers and the controller into a manager. `namespace` nil watches all namespaces.
    public static func register(
        with manager: Manager, namespace: String?, workers: Int = 4, configuration: Configuration = Configuration(),
        onReconciled: (@Sendable (ObjectKey, Bool) -> Void)? = nil, logger: Logger = Logger(label: "meteor")
    ) async -> (MeteorReconciler, Controller<JSONValue>) {
        let meteors = manager.informer(for: Meteor.resourceType, namespace: namespace)
        let runs = manager.informer(
            for: PipelineRunBuilder.resourceType, namespace: namespace, labelSelector: MeteorLabels.managedByOperator,
            transform: PipelineRunBuilder.cacheTransform)
        let events = EventRecorder(client: manager.client, component: "meteor-operator", logger: logger)
        let managed = MeteorLabels.managedByOperator
        var siteTypes = [BookSite.deploymentType, BookSite.serviceType]
        if configuration.ingressClass != nil { siteTypes.append(BookSite.ingressType) }
        if configuration.publishImageStreams { siteTypes.append(NotebookImage.imageStreamType) }
        // Image-puller RoleBindings beside Meteors whose notebook images Open Data Hub's namespace pulls.
        if configuration.publishImageStreams, let shared = configuration.notebookImageNamespace, shared != namespace {
            siteTypes.append(NotebookImage.roleBindingType)
        }
        var sites: [String: DynamicInformer] = [:]
        for t in siteTypes {
            let home = t == NotebookImage.imageStreamType ? configuration.notebookImageNamespace ?? namespace : namespace
            sites[t.kind] = manager.informer(for: t, namespace: home, labelSelector: managed)
        }
        let applications = configuration.edge.map {
            manager.informer(for: ArgoApplicationBuilder.resourceType, namespace: $0.argocdNamespace, labelSelector: managed)
        }
        let trustPolicies = configuration.edge.map { _ in manager.informer(for: EdgeTrustPolicy.resourceType, as: EdgeTrustPolicy.self) }
        let clusters = configuration.edge.flatMap { $0.clusterSelectors ? $0 : nil }.map {
            manager.informer(
                for: ArgoClusters.secretType, namespace: $0.argocdNamespace, labelSelector: ArgoClusters.labelSelector,
                transform: ArgoClusters.cacheTransform)
        }
        let metrics = MeteorMetrics(factory: manager.metricsFactory)
        await metrics.observe(meteors: meteors, pipelineRuns: runs)
        let reconciler = MeteorReconciler(
            client: manager.client, meteors: meteors, pipelineRuns: runs, sites: sites, applications: applications, trustPolicies: trustPolicies,
            clusters: clusters, events: events, configuration: configuration, metrics: metrics, logger: logger)
        var options = ControllerOptions()
        options.workers = workers
        options.generationChangedOnly = false
        options.onReconciled = onReconciled
        let controller = Controller(name: "meteor", for: meteors, options: options, metricsFactory: manager.metricsFactory, logger: logger) { key in
            try await reconciler.reconcile(key)
        }
        await controller.owns(runs)
        // Builds shared with others (`SharedBuild`) name this Meteor as an owner without control.
        await controller.watches(runs) { run in
            run.ownerReferences.filter { $0.kind == Meteor.resourceType.kind && $0.controller != true }.map {
                ObjectKey(namespace: run.objectKey.namespace, name: $0.name)
            }
        }
        for informer in sites.values { await controller.owns(informer) }
        for informer in [meteors, runs] + Array(sites.values) + (applications.map { [$0] } ?? []) { await reconciler.cache.reads(from: informer) }
        // Applications (in Argo CD's namespace) and shared ImageStreams (in Open Data Hub's) find their Meteor
        // through labels, not ownerReferences.
        let byLabels: @Sendable (JSONValue) -> [ObjectKey] = { o in
            let labels = o.labels
            guard let ns = labels[MeteorLabels.meteorNamespace], let name = labels[MeteorLabels.meteor]
            else { return [] }
            return [ObjectKey(namespace: ns, name: name)]
        }
        if let applications { await controller.watches(applications, map: byLabels) }
        // A trust policy changed (a key added, rotated, revoked): every edge Meteor is judged again.
        if let trustPolicies {
            await controller.watches(trustPolicies) { _ in
                meteors.store.list().filter { $0[path: "spec", "edge"] != nil }.map { ObjectKey($0) }
            }
        }
        // A cluster registered, relabelled or removed: Meteors whose targets select clusters by label are judged again.
        if let clusters {
            await controller.watches(clusters) { _ in
                meteors.store.list().filter { m in (m[path: "spec", "edge", "targets"]?.arrayValue ?? []).contains { $0["clusterSelector"] != nil } }
                    .map { ObjectKey($0) }
            }
        }
        if configuration.notebookImageNamespace != nil, let streams = sites[NotebookImage.imageStreamType.kind] {
            await controller.watches(streams, map: byLabels)
        }
        manager.add(controller)
        return (reconciler, controller)
    }

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileAction {
        do {
            let action = try await reconcileMeteor(key)
            failedRequests.withLock { _ = $0.removeValue(forKey: key) }
            return action
        } catch let e as KubeError where Self.isReportable(e) {
            // Refused: said where users look, then retried with the controller's backoff, so the Meteor converges
            // once the cause is gone. A missing permission (403: RBAC edited, a narrower Role) and other client
            // errors (422 on an object we made, a quota) at once; a server error or throttling ("range is full"
            // for a Service IP) once it has come back `reportAfterFailures` times running, so a restarting API
            // server does not flip a Ready Meteor.
            let failures = failedRequests.withLock { f -> Int in
                f[key, default: 0] += 1
                return f[key, default: 0]
            }
            if e.code == 403 {
                await report(
                    key, reason: MeteorStatusVocabulary.forbidden,
                    message: "The operator was refused a request it needs: \(e.status?.message ?? "\(e)")")
            } else if (e.code ?? 500) < 500 && e.code != 429 || failures >= Self.reportAfterFailures, Self.reportsCount(failures) {
                // The count is rewritten at 1, 2, 3, then 4, 8, 16, …: each rewrite is a status write, and a write
                // that changed the Meteor queues it again at once, past the controller's backoff.
                await report(
                    key, reason: MeteorStatusVocabulary.apiRequestFailed,
                    message: "The API server refused a request the operator needs (\(failures) time\(failures == 1 ? "" : "s") running): \(e)")
            }
            throw e
        } catch let missing as PrerequisiteMissing {
            // Nothing the operator can fix: said in the status, looked at again shortly (a Secret created later).
            await report(key, reason: MeteorStatusVocabulary.buildPrerequisiteMissing, message: missing.message)
            return .requeueAfter(configuration.prerequisiteRecheck)
        }
    }

    /// How many reconciles in a row a server error (5xx, 429) must fail before the Meteor's status says so.
    static let reportAfterFailures = 3

    /// Whether the `failures`-th failure in a row is written to the status: the first three, then powers of two.
    static func reportsCount(_ failures: Int) -> Bool { failures <= 3 || failures & (failures - 1) == 0 }

    /// API errors worth a status: not a conflict (optimistic concurrency, retried at once), not a missing object
    /// (a child deleted under us, recreated on the next pass), not a transport failure (no answer at all: the
    /// status write would not get through either).
    static func isReportable(_ e: KubeError) -> Bool {
        guard let code = e.code else { return false }
        return code != 409 && code != 404
    }

    /// A build needs something its namespace lacks (`BuildPrerequisites`).
    struct PrerequisiteMissing: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// `Ready=False` with `reason` and `message` (for a 403, the API server's words: they name the verb, the
    /// resource and the namespace), and a Warning Event once per change. Written to the Meteor as cached, without
    /// decoding it (a Meteor the operator cannot read is reported too), touching only its conditions and, when
    /// given, its phase. Best effort: the status write may be refused too.
    func report(_ key: ObjectKey, reason: String, message: String, phase: MeteorPhase? = nil) async {
        guard let raw = cache.get(key, from: meteors) else { return }
        var conditions = (try? raw[path: "status", "conditions"]?.decode(as: [Condition].self)) ?? []
        let changed = ObjectHelpers.setCondition(
            &conditions,
            Condition(
                type: MeteorStatusVocabulary.readyCondition, status: .false, observedGeneration: raw[path: "metadata", "generation"]?.intValue ?? 1,
                lastTransitionTime: now(), reason: reason, message: message))
        guard changed else { return }
        logger.error("cannot build", metadata: ["object": "\(key)", "reason": "\(reason)", "message": "\(message)"])
        await events.record(raw, type: .warning, reason: reason, message: message)
        do {
            var status = raw["status"] ?? .object([:])
            status["conditions"] = try JSONValue(encoding: conditions)
            if let phase { status["phase"] = .string(phase.rawValue) }
            _ = try await ignoreNotFound { try await cache.patchStatusIfChanged(raw, Meteor.resourceType, status: status) }
        } catch {
            logger.warning("cannot report in status", metadata: ["object": "\(key)", "error": "\(error)"])
        }
    }

    /// The clock TTLs and condition times are judged by (`Configuration.now`).
    func now() -> Date { configuration.now?() ?? client.serverClock.now() }

    /// One Meteor, in named steps: its deletion (the finalizer), its TTL, its spec, its runs, its edge delivery,
    /// superseded runs, what its builds publish, and the status that summarises them.
    func reconcileMeteor(_ key: ObjectKey) async throws -> ReconcileAction {
        guard let raw = cache.get(key, from: meteors) else { return .done }
        let meteor: Meteor
        do {
            meteor = try ResourceCodec.decode(Meteor.self, from: raw, keepOriginal: false)
        } catch {
            // Being deleted under the finalizer: what it made is found by its UID, so it is cleaned up and let go
            // all the same, never left stuck.
            if raw.isBeingDeleted, ObjectHelpers.hasFinalizer(raw, MeteorLabels.finalizer),
                let metadata = try? (raw["metadata"] ?? [:]).decode(as: ObjectMeta.self)
            {
                try await cleanUp(Meteor(metadata: metadata, spec: Meteor.Spec(url: "", ref: "")))
                try await cache.removeFinalizer(MeteorLabels.finalizer, from: raw, Meteor.resourceType)
                return .done
            }
            // Stored under a laxer CRD in a shape no reconcile can read: said in the status, not retried until
            // the Meteor changes.
            await report(
                key, reason: MeteorStatusVocabulary.invalidSpec, message: "The operator cannot read this Meteor: \(error)", phase: .failed)
            throw TerminalError(error)
        }
        // Only Meteors that make objects their ownerReferences cannot reach (Applications in Argo CD's namespace,
        // ImageStreams in Open Data Hub's) carry the finalizer; the garbage collector takes the rest, one write less.
        return try await cache.finalizer(MeteorLabels.finalizer, on: raw, Meteor.resourceType, needed: reachesOtherNamespaces(meteor)) { event in
            switch event {
            case .cleanup:
                try await cleanUp(meteor)
                return .done
            case .apply(let raw):
                return try await converge(meteor, raw: raw)
            }
        }
    }

    /// A live Meteor: expired, refused, or built, published and summarised in its status.
    func converge(_ meteor: Meteor, raw: JSONValue) async throws -> ReconcileAction {
        let now = self.now()
        let expiration = MeteorExpiry.expiration(of: meteor)
        if try await expireIfDue(meteor, raw: raw, expiration: expiration, now: now) { return .done }
        var status = meteor.status ?? Meteor.Status()
        status.observedGeneration = meteor.metadata.generation ?? 1
        status.expirationTimestamp = expiration

        let problems = SpecValidation.problems(meteor.spec, edge: configuration.edge)
        if !problems.isEmpty {
            let summary = MeteorSummary.invalid(status, problems: problems, now: now)
            if summary.readyChanged {
                await events.record(raw, type: .warning, reason: summary.ready.reason, message: summary.ready.message)
            }
            try await writeStatus(summary.status, of: raw)
            return MeteorExpiry.requeue(until: expiration, now: now)
        }

        // The commit the ref names, when refs are followed (edge delivery follows releases instead).
        let followed: FollowedRef =
            meteor.spec.requestedPipelines.contains(where: { $0 != Pipeline.edge.rawValue })
            ? try await followRef(
                meteor.spec.url, ref: meteor.spec.ref, previous: status.commit, now: now, access: { try await gitCredentials(meteor) })
            : .build(commit: nil, lookAgain: nil)
        if case .unresolved(let reason, let message, let retry) = followed {
            await report(ObjectKey(raw), reason: reason, message: message, phase: followed.refNotFound ? .failed : nil)
            return .requeueAfter(retry)
        }
        let commit = followed.commit
        if let commit { status.commit = commit }
        var runs = try await runPipelines(meteor, raw: raw, commit: commit)
        let edge = try await deliverEdge(meteor, raw: raw, previous: status, now: now)
        try await retireSuperseded(meteor, keep: Set(runs.map(\.entry.pipelineRunName)).union(edge?.runNames ?? []))
        let publishRetry = try await publish(&runs, meteor: meteor, raw: raw)

        let summary = MeteorSummary.summarise(status, runs: runs, edge: edge, now: now)
        if summary.readyChanged, summary.status.phase != .building {
            let failed = summary.status.phase == .failed
            await events.record(
                raw, type: failed ? .warning : .normal, reason: failed ? summary.ready.reason : MeteorEventReason.ready.rawValue,
                message: summary.ready.message)
        }
        try await writeStatus(summary.status, of: raw)
        return MeteorExpiry.requeue(
            until: expiration, now: now, orRetryAfter: [edge?.requeueAfter, publishRetry, followed.lookAgain].compactMap { $0 }.min())
    }
}
