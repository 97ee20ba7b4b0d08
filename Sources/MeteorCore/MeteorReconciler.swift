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
    public let meteors: Informer
    public let pipelineRuns: Informer
    /// Deployments, Services, Ingresses and ImageStreams the operator made (label `app.kubernetes.io/managed-by`).
    public let sites: [String: Informer]
    /// Argo CD Applications the operator made, in Argo CD's namespace (when edge delivery is on).
    public let applications: Informer?
    /// The cluster admin's EdgeTrustPolicies (when edge delivery is on).
    public let trustPolicies: Informer?
    /// Argo CD's cluster Secrets, trimmed to name and labels (when edge delivery is on).
    public let clusters: Informer?
    let events: EventRecorder
    let edgeMemory = EdgeMemory()
    /// This reconciler's own writes, until its caches show them.
    let recent = RecentWrites()
    /// Reconciles in a row that an API error ended, per Meteor (cleared by a reconcile that succeeds).
    let failedRequests = Mutex<[ObjectKey: Int]>([:])
    /// Impact metrics (nil when no metrics factory is given).
    public let metrics: MeteorMetrics?
    let configuration: Configuration
    let prerequisites: BuildPrerequisites
    let logger: Logger

    public init(
        client: KubeClient, meteors: Informer, pipelineRuns: Informer, sites: [String: Informer] = [:], applications: Informer? = nil,
        trustPolicies: Informer? = nil, clusters: Informer? = nil, events: EventRecorder, configuration: Configuration = Configuration(),
        metrics: MeteorMetrics? = nil, logger: Logger = Logger(label: "meteor")
    ) {
        self.trustPolicies = trustPolicies
        self.clusters = clusters
        prerequisites = BuildPrerequisites(client: client, settings: configuration.build, cacheFor: configuration.prerequisiteRecheck)
        self.metrics = metrics
        self.client = client
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
    ) async -> (MeteorReconciler, Controller) {
        let meteors = manager.informer(for: Meteor.resourceType, namespace: namespace)
        let runs = manager.informer(
            for: PipelineRunBuilder.resourceType, namespace: namespace, labelSelector: "\(MeteorLabels.managedBy)=\(MeteorLabels.managedByValue)",
            transform: PipelineRunBuilder.trimmedForCache)
        let events = EventRecorder(client: manager.client, component: "meteor-operator", logger: logger)
        let managed = "\(MeteorLabels.managedBy)=\(MeteorLabels.managedByValue)"
        var siteTypes = [BookSite.deploymentType, BookSite.serviceType]
        if configuration.ingressClass != nil { siteTypes.append(BookSite.ingressType) }
        if configuration.publishImageStreams { siteTypes.append(NotebookImage.imageStreamType) }
        // Image-puller RoleBindings beside Meteors whose notebook images Open Data Hub's namespace pulls.
        if configuration.publishImageStreams, let shared = configuration.notebookImageNamespace, shared != namespace {
            siteTypes.append(NotebookImage.roleBindingType)
        }
        var sites: [String: Informer] = [:]
        for t in siteTypes {
            let home = t == NotebookImage.imageStreamType ? configuration.notebookImageNamespace ?? namespace : namespace
            sites[t.kind] = manager.informer(for: t, namespace: home, labelSelector: managed)
        }
        let applications = configuration.edge.map {
            manager.informer(for: ArgoApplicationBuilder.resourceType, namespace: $0.argocdNamespace, labelSelector: managed)
        }
        let trustPolicies = configuration.edge.map { _ in manager.informer(for: EdgeTrustPolicy.resourceType) }
        let clusters = configuration.edge.flatMap { $0.clusterSelectors ? $0 : nil }.map {
            manager.informer(
                for: ArgoClusters.secretType, namespace: $0.argocdNamespace, labelSelector: ArgoClusters.labelSelector,
                transform: ArgoClusters.trimmedForCache)
        }
        let metrics = MeteorMetrics(factory: manager.metricsFactory)
        await metrics.observe(meteors: meteors, pipelineRuns: runs)
        let reconciler = MeteorReconciler(
            client: manager.client, meteors: meteors, pipelineRuns: runs, sites: sites, applications: applications, trustPolicies: trustPolicies,
            clusters: clusters, events: events, configuration: configuration, metrics: metrics, logger: logger)
        var options = Controller.Options()
        options.workers = workers
        options.generationChangedOnly = false
        options.onReconciled = onReconciled
        let controller = Controller(name: "meteor", for: meteors, options: options, metricsFactory: manager.metricsFactory, logger: logger) { key in
            try await reconciler.reconcile(key)
        }
        await controller.owns(runs)
        for informer in sites.values { await controller.owns(informer) }
        for informer in [meteors, runs] + Array(sites.values) + (applications.map { [$0] } ?? []) { await reconciler.recent.track(informer) }
        // Applications (in Argo CD's namespace) and shared ImageStreams (in Open Data Hub's) find their Meteor
        // through labels, not ownerReferences.
        let byLabels: @Sendable (JSONValue) -> [ObjectKey] = { o in
            guard let ns = o[path: "metadata", "labels", MeteorLabels.meteorNamespace]?.stringValue,
                let name = o[path: "metadata", "labels", MeteorLabels.meteor]?.stringValue
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
        } catch let e as KubeError where e.isNotFound && e.status?.details?.kind == Meteor.resourceType.plural && e.status?.details?.name == key.name
        {
            // Deleted while we worked on it (a status write found it gone): nothing left to do, not a failure;
            // the delete event has already been queued.
            failedRequests.withLock { _ = $0.removeValue(forKey: key) }
            logger.debug("Meteor deleted during reconcile", metadata: ["object": "\(key)"])
            return .done
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

    /// The build settings for new runs in `namespace`: the ServiceAccount resolved, the push Secret there.
    func buildSettings(namespace: String) async throws -> BuildSettings {
        switch try await prerequisites.check(namespace: namespace) {
        case .ready(let account):
            var settings = configuration.build
            settings.serviceAccount = account
            return settings
        case .missing(let message):
            throw PrerequisiteMissing(message: message)
        }
    }

    /// The settings for a new run of `meteor`: its namespace's (`buildSettings`), once its git Secret, if it
    /// names one, is there and usable.
    func newRunSettings(_ meteor: Meteor) async throws -> BuildSettings {
        let settings = try await buildSettings(namespace: meteor.namespace ?? "default")
        _ = try await gitCredentials(meteor)
        return settings
    }

    /// How the operator reaches a private repository: `spec.gitSecretRef`'s Secret, read as its type says.
    public enum GitAccess: Sendable {
        /// `kubernetes.io/basic-auth` (username, password or token), for http(s) URLs.
        case basic(GitRemote.Credentials)
        /// `kubernetes.io/ssh-auth` (ssh-privatekey, known_hosts), for ssh URLs.
        case ssh(GitSSHRemote.Credentials)
    }

    /// `spec.gitSecretRef`'s credentials; nil without one. A missing Secret, one of the wrong type for the URL, or
    /// one without the keys its type needs is a missing prerequisite, named in the status.
    func gitCredentials(_ meteor: Meteor) async throws -> GitAccess? {
        let overSSH = GitSSHRemote.Address(meteor.spec.url) != nil
        guard let ref = meteor.spec.gitSecretRef else {
            if overSSH {
                throw PrerequisiteMissing(
                    message:
                        "\(meteor.spec.url) is an ssh address: name a kubernetes.io/ssh-auth Secret (ssh-privatekey, known_hosts) in spec.gitSecretRef"
                )
            }
            return nil
        }
        let namespace = meteor.namespace ?? "default"
        let wanted =
            overSSH
            ? "a kubernetes.io/ssh-auth Secret with ssh-privatekey and known_hosts (ssh-keyscan HOST)"
            : "a kubernetes.io/basic-auth Secret with the repository's username and password or access token"
        guard let secret = try await client.api(Secret.self, namespace: namespace).getOptional(ref.name) else {
            throw PrerequisiteMissing(message: "Secret \(ref.name) (spec.gitSecretRef) does not exist in namespace \(namespace): create \(wanted)")
        }
        if overSSH {
            guard secret.type == "kubernetes.io/ssh-auth", let key = secret.value("ssh-privatekey"), let hosts = secret.value("known_hosts"),
                !hosts.isEmpty
            else {
                throw PrerequisiteMissing(
                    message:
                        "Secret \(ref.name) (spec.gitSecretRef) in namespace \(namespace) is not \(wanted), which the ssh address \(meteor.spec.url) needs"
                )
            }
            return .ssh(
                GitSSHRemote.Credentials(privateKey: String(decoding: key, as: UTF8.self), knownHosts: String(decoding: hosts, as: UTF8.self)))
        }
        guard secret.type == "kubernetes.io/basic-auth", let username = secret.value("username"), let password = secret.value("password") else {
            throw PrerequisiteMissing(
                message:
                    "Secret \(ref.name) (spec.gitSecretRef) in namespace \(namespace) is not \(wanted), which the address \(meteor.spec.url) needs")
        }
        return .basic(GitRemote.Credentials(username: String(decoding: username, as: UTF8.self), password: String(decoding: password, as: UTF8.self)))
    }

    /// The refs of the Meteor's repository, over ssh or http(s) as its URL says, with its credentials.
    func listRefs(_ meteor: Meteor) async throws -> [GitRemote.Ref] {
        switch try await gitCredentials(meteor) {
        case .ssh(let credentials)?:
            guard let address = GitSSHRemote.Address(meteor.spec.url) else {
                throw GitRemote.Failure(message: "\(meteor.spec.url) is not an ssh address")
            }
            return try await GitSSHRemote(address: address, credentials: credentials, egress: egress).refs()
        case .basic(let credentials)?:
            return try await gitRemote(meteor.spec.url, credentials: credentials).refs()
        case nil:
            return try await gitRemote(meteor.spec.url).refs()
        }
    }

    /// `Ready=False` with `reason` and `message` (for a 403, the API server's words: they name the verb, the
    /// resource and the namespace), and a Warning Event once per change. Best effort: the status write may be
    /// refused too.
    func report(_ key: ObjectKey, reason: String, message: String) async {
        guard let raw = recent.read(key, kind: Meteor.resourceType.kind, from: meteors),
            let meteor = try? ResourceCodec.decode(Meteor.self, from: raw, keepOriginal: false)
        else { return }
        var status = meteor.status ?? Meteor.Status()
        var conditions = status.conditions ?? []
        let now = configuration.now?() ?? client.serverClock.now()
        let changed = ObjectHelpers.setCondition(
            &conditions,
            Condition(
                type: MeteorStatusVocabulary.readyCondition, status: .false, observedGeneration: meteor.metadata.generation ?? 1,
                lastTransitionTime: now, reason: reason, message: message))
        guard changed else { return }
        logger.error("cannot build", metadata: ["object": "\(key)", "reason": "\(reason)", "message": "\(message)"])
        await events.record(raw, type: .warning, reason: reason, message: message)
        status.conditions = conditions
        do {
            try await writeStatus(status, of: raw, api: client.dynamic(Meteor.resourceType, namespace: key.namespace))
        } catch {
            logger.warning("cannot report in status", metadata: ["object": "\(key)", "error": "\(error)"])
        }
    }

    func reconcileMeteor(_ key: ObjectKey) async throws -> ReconcileAction {
        guard var raw = recent.read(key, kind: Meteor.resourceType.kind, from: meteors) else { return .done }
        let meteor: Meteor
        do {
            meteor = try ResourceCodec.decode(Meteor.self, from: raw, keepOriginal: false)
        } catch {
            logger.error("cannot decode Meteor", metadata: ["object": "\(key)", "error": "\(error)"])
            return .done
        }
        let api = client.dynamic(Meteor.resourceType, namespace: key.namespace)

        if raw[path: "metadata", "deletionTimestamp"] != nil {
            // Children in this namespace go with the Meteor through their ownerReferences; Argo CD Applications
            // live in Argo's namespace, so they are deleted here before the finalizer lets the Meteor go.
            if let edge = configuration.edge {
                try await pruneApplications(meteor, keep: [], settings: edge)
                edgeMemory.forget(uid: meteor.metadata.uid ?? "")
            }
            try await pruneSharedImageStreams(meteor)
            try await ObjectHelpers.removeFinalizer(MeteorLabels.finalizer, from: raw, api: api)
            return .done
        }
        // Only Meteors that make objects their ownerReferences cannot reach (Applications in Argo CD's namespace,
        // ImageStreams in Open Data Hub's) carry the finalizer; the garbage collector takes the rest, one write less.
        if reachesOtherNamespaces(meteor), !ObjectHelpers.hasFinalizer(raw, MeteorLabels.finalizer) {
            raw = try await ObjectHelpers.addFinalizer(MeteorLabels.finalizer, to: raw, api: api)
            recent.record(raw)
        }

        let now = configuration.now?() ?? client.serverClock.now()
        let generation = meteor.metadata.generation ?? 1
        var expiration: Date?
        // A TTL outside the schema's range (stored under a laxer CRD) is reported as InvalidSpec, never acted on.
        if let ttl = meteor.spec.ttl, ttl > 0, ttl <= 31_536_000, let created = meteor.metadata.creationTimestamp {
            expiration = created.addingTimeInterval(TimeInterval(ttl))
        }
        if let expiration, now >= expiration {
            do {
                try await api.delete(meteor.name, params: DeleteParams(propagationPolicy: .background, preconditionUID: meteor.metadata.uid))
                // After the delete, so a second reconcile from a cache that still shows the Meteor (its delete
                // gets a 404) does not say it again; counted before the Event, so whoever sees the Event sees the count.
                metrics?.expired()
                await events.record(
                    raw, type: .normal, reason: "Expired",
                    message: "TTL of \(meteor.spec.ttl ?? 0)s reached; deleting the Meteor and everything it made")
            } catch let e as KubeError where e.isNotFound {}
            return .done
        }

        var status = meteor.status ?? Meteor.Status()
        status.observedGeneration = generation
        status.expirationTimestamp = expiration
        var conditions = status.conditions ?? []

        var problems = SpecValidation.problems(meteor.spec)
        if configuration.edge == nil, let i = meteor.spec.requestedPipelines.firstIndex(of: Pipeline.edge.rawValue) {
            problems.append(
                SpecProblem(
                    field: "spec.pipelines[\(i)]",
                    message: "edge delivery needs Argo CD (argoproj.io/v1alpha1 Application), which this cluster does not serve"))
        }
        if let edge = configuration.edge, !edge.clusterSelectors, let i = meteor.spec.edge?.targets.firstIndex(where: { $0.clusterSelector != nil }) {
            problems.append(
                SpecProblem(
                    field: "spec.edge.targets[\(i)].clusterSelector",
                    message:
                        "choosing clusters by label is off on this operator: the cluster admin enables it with --edge-cluster-selectors and config/rbac/argocd_cluster_reader_role.yaml (it lets the operator list Argo CD's cluster Secrets)"
                ))
        }
        if !problems.isEmpty {
            let message = problems.map(\.description).joined(separator: "; ")
            let changed = ObjectHelpers.setCondition(
                &conditions,
                Condition(
                    type: MeteorStatusVocabulary.readyCondition, status: .false, observedGeneration: generation, lastTransitionTime: now,
                    reason: MeteorStatusVocabulary.invalidSpec, message: message))
            if changed { await events.record(raw, type: .warning, reason: MeteorStatusVocabulary.invalidSpec, message: message) }
            status.conditions = conditions
            status.phase = MeteorStatusVocabulary.failed
            status.pipelines = nil
            status.stage = nil
            status.images = nil
            status.imageIndexes = nil
            status.deployments = nil
            try await writeStatus(status, of: raw, api: api)
            return requeue(until: expiration, now: now)
        }

        let requested = meteor.spec.requestedPipelines.compactMap(Pipeline.init(rawValue:))
        let pipelines = requested.filter { $0 != .edge }
        let runs = client.dynamic(PipelineRunBuilder.resourceType, namespace: key.namespace)
        var entries: [Meteor.PipelineStatus] = []
        var states: [(Pipeline, PipelineRunState?)] = []
        var created: [String] = []
        // Looked up once, for the first run this reconcile creates.
        var runSettings: BuildSettings?
        for pipeline in pipelines {
            let runName = PipelineRunBuilder.name(meteor: meteor.name, pipeline: pipeline, generation: generation)
            var run = ownRun(ObjectKey(namespace: key.namespace, name: runName), of: meteor)
            if run == nil {
                if runSettings == nil { runSettings = try await newRunSettings(meteor) }
                let body = PipelineRunBuilder.build(meteor: meteor, owner: raw, pipeline: pipeline, settings: runSettings!)
                do {
                    run = try await runs.create(
                        body,
                        params: WriteParams(fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? "Strict" : nil))
                    recent.record(run)
                    created.append("\(runName) (\(pipeline.rawValue))")
                } catch let e as KubeError where e.isAlreadyExists {
                    // Created by an earlier attempt (another process's, after a restart) the cache has not seen yet,
                    // or a run of a deleted Meteor of this name the garbage collector has yet to remove: its
                    // deletion, or the cache catching up, brings this Meteor back.
                }
            }
            var entry = Meteor.PipelineStatus(name: pipeline.rawValue, pipelineRunName: runName)
            let state = run.map { PipelineRunState($0).requiringDigest(runName: runName) }
            if let state {
                entry.ready = state.outcome == .succeeded ? "True" : state.outcome == .failed ? "False" : "Unknown"
                entry.reason = state.reason
                entry.message =
                    state.outcome == .failed ? ObjectHelpers.truncated(state.message, maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes) : nil
                entry.startTime = state.startTime
                entry.completionTime = state.completionTime
                entry.image = state.results["IMAGE_URL"]
                entry.digest = state.results["IMAGE_DIGEST"]
                entry.url = state.results["URL"]
            } else {
                entry.ready = "Unknown"
                entry.reason = "Pending"
            }
            entries.append(entry)
            states.append((pipeline, state))
        }
        if !created.isEmpty {
            // One event for the runs one reconcile starts.
            await events.record(
                raw, type: .normal, reason: "PipelineRunCreated",
                message: "Created PipelineRun\(created.count > 1 ? "s" : "") \(created.joined(separator: ", ")) at \(meteor.spec.ref)")
        }
        var edgeOutcome: EdgeOutcome?
        if requested.contains(.edge), let edge = meteor.spec.edge, let settings = configuration.edge {
            edgeOutcome = try await reconcileEdge(meteor, edge, raw: raw, previous: status, settings: settings, now: now)
        } else if let settings = configuration.edge {
            try await pruneApplications(meteor, keep: [], settings: settings)
        }
        try await retireSuperseded(meteor: meteor, keep: Set(entries.map(\.pipelineRunName)).union(edgeOutcome?.runNames ?? []), runs: runs)
        var publishRetry: Duration?
        for i in entries.indices where entries[i].ready == "True" {
            guard let pipeline = Pipeline(rawValue: entries[i].name), let image = entries[i].image else { continue }
            switch pipeline {
            case .jupyterbook:
                entries[i].url = try await serveBook(meteor, owner: raw, image: image, digest: entries[i].digest)
            case .jupyterhub where configuration.publishImageStreams:
                do {
                    try await ensure(
                        NotebookImage.imageStream(
                            meteor, owner: raw, image: image, digest: entries[i].digest, namespace: configuration.notebookImageNamespace),
                        NotebookImage.imageStreamType)
                    if let shared = configuration.notebookImageNamespace, shared != (meteor.namespace ?? "default"),
                        NotebookImage.isInOpenShiftRegistry(image)
                    {
                        try await ensure(
                            NotebookImage.imagePullerRoleBinding(meteor, owner: raw, pullersNamespace: shared), NotebookImage.roleBindingType,
                            fields: ["subjects"])
                    }
                } catch let e as KubeError where !e.isConflict {
                    // The image is built; only its listing in Open Data Hub failed (its namespace missing, say).
                    // Said in the status and an Event, retried later; the book and the status are not held up.
                    let target = configuration.notebookImageNamespace ?? meteor.namespace ?? "default"
                    let why = e.status?.message ?? "\(e)"
                    entries[i].message = "Built, but not listed in Open Data Hub: the ImageStream in namespace \(target) could not be written: \(why)"
                    await events.record(raw, type: .warning, reason: "NotebookImageNotPublished", message: entries[i].message!)
                    publishRetry = .seconds(60)
                }
            default:
                break
            }
        }

        var failed: [String] = []
        var succeeded: [String] = []
        var running: [String] = []
        for (pipeline, state) in states {
            let condition: Condition
            switch state?.outcome {
            case .succeeded?:
                succeeded.append(pipeline.rawValue)
                condition = Condition(
                    type: pipeline.conditionType, status: .true, observedGeneration: generation, lastTransitionTime: now, reason: "Succeeded",
                    message: "PipelineRun \(entries.first { $0.name == pipeline.rawValue }!.pipelineRunName) succeeded")
            case .failed?:
                failed.append(pipeline.rawValue)
                let detail = state!.message.isEmpty ? state!.reason : state!.message
                condition = Condition(
                    type: pipeline.conditionType, status: .false, observedGeneration: generation, lastTransitionTime: now, reason: "PipelineFailed",
                    message: String(detail.prefix(4000)))
            default:
                running.append(pipeline.rawValue)
                condition = Condition(
                    type: pipeline.conditionType, status: .unknown, observedGeneration: generation, lastTransitionTime: now,
                    reason: "PipelineRunning",
                    message: "PipelineRun \(entries.first { $0.name == pipeline.rawValue }!.pipelineRunName) is \(state?.reason ?? "Pending")")
            }
            ObjectHelpers.setCondition(&conditions, condition)
        }
        if let edgeOutcome {
            for condition in edgeOutcome.conditions { ObjectHelpers.setCondition(&conditions, condition) }
            if edgeOutcome.conditions.contains(where: { $0.status == .false }) {
                failed.append(Pipeline.edge.rawValue)
            } else if edgeOutcome.conditions.allSatisfy({ $0.status == .true }) {
                succeeded.append(Pipeline.edge.rawValue)
            } else {
                running.append(Pipeline.edge.rawValue)
            }
        }
        let ready: Condition
        if !failed.isEmpty {
            status.phase = MeteorStatusVocabulary.failed
            let edgeFailure = edgeOutcome?.conditions.first { $0.status == .false }
            let why = Dictionary(states.compactMap { p, s in s?.failure.map { (p.rawValue, $0) } }, uniquingKeysWith: { a, _ in a })
            let detail = failed.map {
                $0 == Pipeline.edge.rawValue
                    ? "edge (\(edgeFailure.map { "\($0.type): \($0.reason)" } ?? ""))" : why[$0].map { [name = $0] in "\(name) (\($0))" } ?? $0
            }
            ready = Condition(
                type: MeteorStatusVocabulary.readyCondition, status: .false, observedGeneration: generation, lastTransitionTime: now,
                reason: failed == [Pipeline.edge.rawValue] ? (edgeFailure?.reason ?? "EdgeFailed") : "PipelineFailed",
                message: "Failed: \(detail.joined(separator: ", "))")
        } else if running.isEmpty {
            status.phase = MeteorStatusVocabulary.ready
            ready = Condition(
                type: MeteorStatusVocabulary.readyCondition, status: .true, observedGeneration: generation, lastTransitionTime: now,
                reason: "Succeeded", message: "All pipelines succeeded: \(succeeded.joined(separator: ", "))")
        } else {
            status.phase = MeteorStatusVocabulary.building
            ready = Condition(
                type: MeteorStatusVocabulary.readyCondition, status: .false, observedGeneration: generation, lastTransitionTime: now,
                reason: "Building", message: "Waiting for: \(running.joined(separator: ", "))")
        }
        let readyChanged = ObjectHelpers.setCondition(&conditions, ready)
        // Conditions of pipelines no longer requested go away.
        var wanted = Set(pipelines.map(\.conditionType) + [MeteorStatusVocabulary.readyCondition])
        if edgeOutcome != nil {
            wanted.formUnion([MeteorStatusVocabulary.imagesBuilt, MeteorStatusVocabulary.imagesVerified, MeteorStatusVocabulary.deployed])
        }
        conditions.removeAll { !wanted.contains($0.type) }
        status.conditions = conditions
        status.pipelines = entries
        status.release = edgeOutcome?.release
        status.images = edgeOutcome.map(\.images)
        status.imageIndexes = edgeOutcome.flatMap { $0.indexes.isEmpty ? nil : $0.indexes }
        status.deployments = edgeOutcome.map(\.deployments)
        status.targets = edgeOutcome.map(\.targets)
        status.rollout = edgeOutcome?.rollout
        status.stage = Meteor.Stage(
            running: running.isEmpty ? nil : running, succeeded: succeeded.isEmpty ? nil : succeeded, failed: failed.isEmpty ? nil : failed)
        if readyChanged {
            if !failed.isEmpty {
                await events.record(raw, type: .warning, reason: ready.reason, message: ready.message)
            } else if running.isEmpty {
                await events.record(raw, type: .normal, reason: "Ready", message: ready.message)
            }
        }
        try await writeStatus(status, of: raw, api: api)
        let expiry = requeue(until: expiration, now: now)
        if let retry = [edgeOutcome?.requeueAfter, publishRetry].compactMap({ $0 }).min() {
            if case .requeueAfter(let d) = expiry, d < retry { return expiry }
            return .requeueAfter(retry)
        }
        return expiry
    }

    /// The cached (or just written) PipelineRun `key` if this Meteor controls it. A run of the same name owned by
    /// another uid belongs to an earlier Meteor of this name (deleted and created again, or a store that was
    /// lost and refilled), whose results are not this one's: it counts as absent.
    func ownRun(_ key: ObjectKey, of meteor: Meteor) -> JSONValue? {
        guard let run = recent.read(key, kind: PipelineRunBuilder.resourceType.kind, from: pipelineRuns) else { return nil }
        guard let uid = meteor.metadata.uid, let owner = ObjectHelpers.controllerOf(run)?["uid"]?.stringValue else { return run }
        return owner == uid ? run : nil
    }

    /// The remote for a repository URL, through `EdgeSettings.hostOverrides` when its host has one.
    func gitRemote(_ url: String, credentials: GitRemote.Credentials? = nil) -> GitRemote {
        guard let overrides = configuration.edge?.hostOverrides, !overrides.isEmpty, let components = URLComponents(string: url),
            let host = components.host, let origin = overrides[components.port.map { "\(host):\($0)" } ?? host] ?? overrides["*"]
        else { return GitRemote(url: url, credentials: credentials, egress: egress) }
        return GitRemote(url: origin + "/" + host + components.path, credentials: credentials, egress: egress)
    }

    /// Runs the built site and returns the URL it is served at.
    func serveBook(_ meteor: Meteor, owner: JSONValue, image: String, digest: String?) async throws -> String {
        try await ensure(BookSite.deployment(meteor, owner: owner, image: image, digest: digest), BookSite.deploymentType)
        try await ensure(BookSite.service(meteor, owner: owner), BookSite.serviceType)
        if let ingressClass = configuration.ingressClass, let domain = configuration.ingressDomain {
            try await ensure(BookSite.ingress(meteor, owner: owner, ingressClass: ingressClass, domain: domain), BookSite.ingressType)
            return BookSite.url(meteor: meteor, ingressDomain: domain)
        }
        return BookSite.url(meteor: meteor)
    }

    /// Creates a child, or patches its spec back when it drifted; reads the current one from the cache.
    func ensure(_ desired: JSONValue, _ type: ResourceType, fields: [String] = ["spec"]) async throws {
        let key = ObjectKey(desired)
        let api = client.dynamic(type, namespace: key.namespace)
        guard let informer = sites[type.kind], let current = recent.read(key, kind: type.kind, from: informer) else {
            do {
                recent.record(try await api.create(desired, params: WriteParams(fieldManager: "meteor-operator")))
            } catch let e as KubeError where e.isAlreadyExists {}
            return
        }
        // Only the fields we set are compared, inside lists too: defaults the API server or other controllers add
        // (a container's imagePullPolicy, a Service's clusterIP) are left alone and cost no write.
        var patch: JSONObject = [:]
        for field in fields {
            let wanted = desired[field] ?? .object([:])
            if !ObjectHelpers.satisfies(current[field], wanted) { patch[field] = wanted }
        }
        if !patch.isEmpty {
            recent.record(try await api.patch(key.name, .merge(.object(patch)), params: WriteParams(fieldManager: "meteor-operator")))
        }
    }

    /// Whether the Meteor makes objects outside its namespace, which only its finalizer can clean up.
    func reachesOtherNamespaces(_ meteor: Meteor) -> Bool {
        let requested = meteor.spec.requestedPipelines
        if requested.contains(Pipeline.edge.rawValue), configuration.edge != nil { return true }
        guard requested.contains(Pipeline.jupyterhub.rawValue), configuration.publishImageStreams, let shared = configuration.notebookImageNamespace
        else { return false }
        return shared != (meteor.namespace ?? "default")
    }

    /// Deletes the Meteor's ImageStreams in the shared notebook-image namespace (found by its uid label).
    func pruneSharedImageStreams(_ meteor: Meteor) async throws {
        guard configuration.publishImageStreams, let shared = configuration.notebookImageNamespace, shared != (meteor.namespace ?? "default"),
            let informer = sites[NotebookImage.imageStreamType.kind], let uid = meteor.metadata.uid
        else { return }
        for stream in informer.store.list(
            namespace: shared, labelSelector: LabelSelector([.init(key: MeteorLabels.meteorUID, op: .equals, values: [uid])]))
        {
            guard let name = stream[path: "metadata", "name"]?.stringValue else { continue }
            do {
                _ = try await client.dynamic(NotebookImage.imageStreamType, namespace: shared).delete(
                    name, params: DeleteParams(preconditionUID: stream[path: "metadata", "uid"]?.stringValue))
                recent.forget(kind: NotebookImage.imageStreamType.kind, ObjectKey(stream))
            } catch let e as KubeError where e.isNotFound {}
        }
    }

    func requeue(until expiration: Date?, now: Date) -> ReconcileAction {
        guard let expiration else { return .done }
        // At most a day ahead: the expiry is re-checked then (and a far-off date never overflows a Duration).
        let seconds = min(max(0, expiration.timeIntervalSince(now)), 86_400)
        return .requeueAfter(.milliseconds(Int64(seconds * 1000) + 1))
    }

    func writeStatus(_ status: Meteor.Status, of raw: JSONValue, api: DynamicApi) async throws {
        let desired = try JSONValue(encoding: status)
        recent.record(try await ObjectHelpers.patchStatusIfChanged(raw, status: desired, api: api))
    }

    /// Superseded runs (owned by this Meteor, not in `keep`): per pipeline, the newest `keepSupersededRuns` are
    /// kept (cancelled if still running: their results would describe a spec or release no longer wanted) and
    /// the rest are deleted, running or not, with their workspaces (Tekton's TaskRuns and the PVC are the run's
    /// children). Deleting rather than cancelling the older ones keeps a Meteor changed many times at a bounded
    /// number of runs even while Tekton is slow to cancel. Edge runs are cancelled, never deleted: the release
    /// they built may still be the one deployed (its verification reads them).
    func retireSuperseded(meteor: Meteor, keep: Set<String>, runs: DynamicApi) async throws {
        guard let uid = meteor.metadata.uid else { return }
        var superseded: [String: [(created: String, name: String, run: JSONValue)]] = [:]
        var toCancel: [(name: String, run: JSONValue)] = []
        // The store's owner index: the runs this Meteor (this uid, not an earlier one of its name) controls.
        for run in pipelineRuns.store.owned(by: uid) {
            guard let name = run[path: "metadata", "name"]?.stringValue, !keep.contains(name),
                (ObjectHelpers.controllerOf(run)?["uid"]?.stringValue) == uid, run[path: "metadata", "namespace"]?.stringValue == meteor.namespace,
                run[path: "metadata", "deletionTimestamp"] == nil
            else { continue }
            let labels = run[path: "metadata", "labels"]
            if labels?[MeteorLabels.edgeImage] != nil || labels?[MeteorLabels.gate] != nil {
                toCancel.append((name, run))
            } else {
                superseded[labels?[MeteorLabels.pipeline]?.stringValue ?? "", default: []].append(
                    (run[path: "metadata", "creationTimestamp"]?.stringValue ?? "", name, run))
            }
        }
        var toDelete: [String] = []
        for (_, members) in superseded {
            // Newest first (RFC 3339 in UTC sorts as text; the name breaks ties within a second).
            let newestFirst = members.sorted { ($0.created, $0.name) > ($1.created, $1.name) }
            let kept = max(0, configuration.keepSupersededRuns)
            toCancel += newestFirst.prefix(kept).map { ($0.name, $0.run) }
            toDelete += newestFirst.dropFirst(kept).map(\.name)
        }
        for old in toCancel where PipelineRunState(old.run).outcome == .running && old.run[path: "spec", "status"]?.stringValue != "Cancelled" {
            do {
                _ = try await runs.patch(old.name, .merge(["spec": ["status": "Cancelled"]]))
            } catch let e as KubeError where e.isNotFound {}
        }
        for old in toDelete {
            do {
                try await runs.delete(old, params: DeleteParams(propagationPolicy: .background))
                logger.info("pruned a superseded PipelineRun", metadata: ["object": "\(meteor.namespace ?? "")/\(old)"])
            } catch let e as KubeError where e.isNotFound {}
        }
    }
}
