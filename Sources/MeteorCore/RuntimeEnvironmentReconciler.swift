import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import Logging

/// Turns a CustomRuntimeEnvironment into one PipelineRun (its build type's Pipeline) and, once it succeeds, a
/// notebook image listed in Open Data Hub, reported in its status. It builds with the Meteor reconciler's machinery
/// (`builds`): the same caches, build settings, ImageStream publishing, followed refs and shared builds, so a
/// GitRepository environment and a Meteor of the same repository and commit share one build.
public final class RuntimeEnvironmentReconciler: Sendable {
    public let environments: DynamicInformer
    let builds: MeteorReconciler

    init(environments: DynamicInformer, builds: MeteorReconciler) {
        self.environments = environments
        self.builds = builds
    }

    /// Wires the CustomRuntimeEnvironment informer and controller into `manager`, beside `builds`' (whose runs and
    /// ImageStream informers it shares). `namespace` nil watches all namespaces.
    @discardableResult
    public static func register(
        with manager: Manager, builds: MeteorReconciler, namespace: String?, workers: Int = 2,
        onReconciled: (@Sendable (ObjectKey, Bool) -> Void)? = nil, logger: Logger = Logger(label: "meteor")
    ) async -> (RuntimeEnvironmentReconciler, Controller<JSONValue>) {
        let environments = manager.informer(for: CustomRuntimeEnvironment.resourceType, namespace: namespace)
        let reconciler = RuntimeEnvironmentReconciler(environments: environments, builds: builds)
        var options = ControllerOptions()
        options.workers = workers
        options.generationChangedOnly = false
        options.onReconciled = onReconciled
        let controller = Controller(
            name: "customruntimeenvironment", for: environments, options: options, metricsFactory: manager.metricsFactory, logger: logger
        ) { key in
            try await reconciler.reconcile(key)
        }
        await controller.owns(builds.pipelineRuns)
        let kind = CustomRuntimeEnvironment.resourceType.kind
        await controller.watches(builds.pipelineRuns) { run in
            run.ownerReferences.filter { $0.kind == kind && $0.controller != true }.map {
                ObjectKey(namespace: run.objectKey.namespace, name: $0.name)
            }
        }
        if let streams = builds.sites[NotebookImage.imageStreamType.kind] {
            await controller.owns(streams)
            await controller.watches(streams) { o in
                let labels = o.labels
                guard let ns = labels[MeteorLabels.meteorNamespace], let name = labels[MeteorLabels.runtimeEnvironment] else { return [] }
                return [ObjectKey(namespace: ns, name: name)]
            }
        }
        await builds.cache.reads(from: environments)
        manager.add(controller)
        return (reconciler, controller)
    }

    var cache: CachedClient { builds.cache }
    var configuration: MeteorReconciler.Configuration { builds.configuration }

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileAction {
        guard let raw = cache.get(key, from: environments) else { return .done }
        let cre: CustomRuntimeEnvironment
        do {
            cre = try ResourceCodec.decode(CustomRuntimeEnvironment.self, from: raw, keepOriginal: false)
        } catch {
            if raw.isBeingDeleted, ObjectHelpers.hasFinalizer(raw, MeteorLabels.finalizer) {
                try await builds.pruneSharedImageStreams(namespace: key.namespace, uid: raw[path: "metadata", "uid"]?.stringValue)
                try await cache.removeFinalizer(MeteorLabels.finalizer, from: raw, CustomRuntimeEnvironment.resourceType)
                return .done
            }
            try await fail(
                raw, reason: MeteorStatusVocabulary.invalidSpec, message: "The operator cannot read this CustomRuntimeEnvironment: \(error)")
            throw TerminalError(error)
        }
        do {
            return try await cache.finalizer(
                MeteorLabels.finalizer, on: raw, CustomRuntimeEnvironment.resourceType, needed: listsInAnotherNamespace(cre)
            ) { event in
                switch event {
                case .cleanup:
                    try await builds.pruneSharedImageStreams(namespace: cre.namespace, uid: cre.metadata.uid)
                    return .done
                case .apply(let raw):
                    return try await converge(cre, raw: raw)
                }
            }
        } catch let missing as MeteorReconciler.PrerequisiteMissing {
            try await fail(raw, reason: MeteorStatusVocabulary.buildPrerequisiteMissing, message: missing.message, phase: .pending)
            return .requeueAfter(configuration.prerequisiteRecheck)
        } catch let e as KubeError where e.code == 403 {
            // RBAC narrower than the work: said where users look (the phase kept) and looked at again as a missing
            // prerequisite is, so the environment builds soon after the grant instead of after a backoff grown to
            // minutes while it was refused.
            try? await fail(
                raw, reason: MeteorStatusVocabulary.forbidden, message: "The operator was refused a request it needs: \(e.status?.message ?? "\(e)")",
                phase: nil)
            return .requeueAfter(configuration.prerequisiteRecheck)
        }
    }

    /// Whether its ImageStream goes to a namespace an ownerReference cannot reach (only its finalizer cleans it up).
    func listsInAnotherNamespace(_ cre: CustomRuntimeEnvironment) -> Bool {
        guard configuration.publishImageStreams, let shared = configuration.notebookImageNamespace else { return false }
        return shared != (cre.namespace ?? "default")
    }

    /// Checked, built (or joined to a shared build), listed, and summarised in the status.
    func converge(_ cre: CustomRuntimeEnvironment, raw: JSONValue) async throws -> ReconcileAction {
        let now = builds.now()
        var status = cre.status ?? CustomRuntimeEnvironment.Status()
        status.observedGeneration = cre.metadata.generation ?? 1
        let problems = RuntimeEnvironmentBuilder.problems(cre.spec)
        if !problems.isEmpty {
            status.pipelines = nil
            status.image = nil
            status.digest = nil
            try await write(
                status, raw, phase: .failed, ready: .false, reason: MeteorStatusVocabulary.invalidSpec, message: problems.joined(separator: "; "),
                now: now)
            return .done
        }
        // A git repository's ref is followed like a Meteor's (when refs are followed at all).
        let followed: FollowedRef =
            cre.spec.buildType == .gitRepository
            ? try await builds.followRef(cre.spec.repository ?? "", ref: cre.spec.ref, previous: status.commit, now: now, access: { nil })
            : .build(commit: nil, lookAgain: nil)
        if case .unresolved(let reason, let message, let retry) = followed {
            try await write(status, raw, phase: followed.refNotFound ? .failed : .pending, ready: .false, reason: reason, message: message, now: now)
            return .requeueAfter(retry)
        }
        let commit = followed.commit
        if let commit { status.commit = commit }

        let (runName, run, created) = try await run(cre, raw: raw, commit: commit)
        if created {
            await builds.events.record(
                raw, type: .normal, reason: .pipelineRunCreated,
                message: "Created PipelineRun \(runName) (\(cre.spec.buildType.buildName))\(commit.map { " at \($0)" } ?? "")")
        }
        try await builds.retireSuperseded(uid: cre.metadata.uid, namespace: cre.namespace, keep: [runName])
        let state = run.map { PipelineRunState($0).requiringDigest(runName: runName) }
        var entry = MeteorSummary.Run(pipeline: .jupyterhub, runName: runName, state: state).entry
        entry.name = cre.spec.buildType.buildName
        entry.commit = commit
        entry.sharedWith = run.flatMap { SharedBuild.sharers(of: $0, except: cre.metadata.uid) }
        status.pipelines = [entry]

        var retry = followed.lookAgain
        let phase: CustomRuntimeEnvironment.Phase
        let ready: Condition.Status
        let reason: String
        let message: String
        switch state?.outcome {
        case .succeeded?:
            let image = entry.image ?? ""
            status.image = entry.digest.map { NotebookImage.pinned(image, to: $0) } ?? image
            status.digest = entry.digest
            phase = .succeeded
            if configuration.publishImageStreams,
                let problem = try await builds.listNotebookImage(source(cre, commit: commit), owner: raw, image: image, digest: entry.digest)
            {
                // The Warning Event comes with Ready turning False (`write`).
                (ready, reason, message) = (.false, MeteorEventReason.notebookImageNotPublished.rawValue, problem)
                retry = [retry, .seconds(60)].compactMap { $0 }.min()
            } else {
                (ready, reason, message) = (.true, "Succeeded", "Built \(status.image ?? image) (PipelineRun \(runName))")
            }
        case .failed?:
            phase = .failed
            (ready, reason, message) = (
                .false, "PipelineFailed", state!.failureText(maxBytes: MeteorStatusVocabulary.maxConditionMessageBytes)
            )
        default:
            phase = run == nil ? .pending : .running
            (ready, reason, message) = (.unknown, "PipelineRunning", "PipelineRun \(runName) is \(state?.reason ?? "Pending")")
        }
        try await write(status, raw, phase: phase, ready: ready, reason: reason, message: message, now: now)
        return retry.map { .requeueAfter($0) } ?? .done
    }

    /// The build's run: at a followed commit a shared build (`SharedBuild`), else this generation's own run.
    func run(_ cre: CustomRuntimeEnvironment, raw: JSONValue, commit: String?) async throws -> (String, JSONValue?, Bool) {
        var settings: BuildSettings?
        let namespace = cre.namespace ?? "default"
        let newSettings = { try await self.builds.buildSettings(namespace: namespace) }
        if let commit {
            let params = RuntimeEnvironmentBuilder.params(cre, image: "", ref: commit)
            let key = SharedBuild.key(
                pipelineRef: cre.spec.buildType.tektonPipeline, params: params, settings: configuration.build, secrets: [nil])
            let name = SharedBuild.runName(build: Pipeline.jupyterhub.shortName, commit: commit, key: key)
            let (run, created) = try await builds.sharedRun(name, namespace: namespace, owner: raw, settings: &settings, newSettings: newSettings) {
                RuntimeEnvironmentBuilder.build(cre, owner: raw, settings: $0, name: name, commit: commit)
            }
            return (name, run, created)
        }
        let name = RuntimeEnvironmentBuilder.runName(cre)
        let (run, created) = try await builds.createRunIfMissing(
            name, namespace: namespace, ownerUID: cre.metadata.uid, settings: &settings, newSettings: newSettings
        ) {
            RuntimeEnvironmentBuilder.build(cre, owner: raw, settings: $0)
        }
        return (name, run, created)
    }

    /// How Open Data Hub lists the environment's image.
    func source(_ cre: CustomRuntimeEnvironment, commit: String?) -> NotebookImage.Source {
        let spec = cre.spec
        let origin: String
        let description: String
        switch spec.buildType {
        case .packageList:
            origin = spec.baseImage ?? ""
            description = "Packages \((spec.packageVersions ?? []).joined(separator: ", "))"
        case .imageImport:
            origin = spec.fromImage ?? ""
            description = "Imported from \(origin)"
        case .gitRepository:
            origin = spec.repository ?? ""
            description = "Built from \(origin) at \(spec.ref)"
        }
        return NotebookImage.Source(
            kind: CustomRuntimeEnvironment.resourceType.kind, name: cre.name, namespace: cre.namespace ?? "default", uid: cre.metadata.uid,
            ownerLabel: MeteorLabels.runtimeEnvironment, build: spec.buildType.buildName,
            displayName: cre.metadata.annotations?["opendatahub.io/notebook-image-name"] ?? "\(cre.name) (Custom Runtime Environment)",
            description: cre.metadata.annotations?["opendatahub.io/notebook-image-desc"] ?? description, origin: origin,
            ref: commit ?? spec.gitRef ?? "", streamName: "\(cre.name)-runtime", tag: "g\(cre.metadata.generation ?? 1)")
    }

    /// Writes phase and Ready (an Event when Ready turns to True or False) into `status`, when they changed.
    func write(
        _ status: CustomRuntimeEnvironment.Status, _ raw: JSONValue, phase: CustomRuntimeEnvironment.Phase, ready: Condition.Status, reason: String,
        message: String, now: Date
    ) async throws {
        var status = status
        status.phase = phase
        var conditions = status.conditions ?? []
        let changed = ObjectHelpers.setCondition(
            &conditions,
            Condition(
                type: MeteorStatusVocabulary.readyCondition, status: ready, observedGeneration: status.observedGeneration ?? 1,
                lastTransitionTime: now,
                reason: reason, message: ObjectHelpers.truncated(message, maxBytes: MeteorStatusVocabulary.maxConditionMessageBytes)))
        status.conditions = conditions
        if changed, ready != .unknown {
            await builds.events.record(raw, type: ready == .true ? .normal : .warning, reason: reason, message: message)
        }
        let desired = try JSONValue(encoding: status)
        _ = try await ignoreNotFound { try await cache.patchStatusIfChanged(raw, CustomRuntimeEnvironment.resourceType, status: desired) }
    }

    /// Ready=False with `reason` on a CustomRuntimeEnvironment that may not decode: only its conditions and `phase`
    /// (nil: as it is) change.
    func fail(_ raw: JSONValue, reason: String, message: String, phase: CustomRuntimeEnvironment.Phase? = .failed) async throws {
        var status = (try? raw["status"]?.decode(as: CustomRuntimeEnvironment.Status.self)) ?? CustomRuntimeEnvironment.Status()
        if status.conditions == nil { status.conditions = try? raw[path: "status", "conditions"]?.decode(as: [Condition].self) }
        try await write(status, raw, phase: phase ?? status.phase ?? .pending, ready: .false, reason: reason, message: message, now: builds.now())
    }
}
