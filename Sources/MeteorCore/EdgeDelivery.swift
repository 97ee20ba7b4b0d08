import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import Synchronization

/// How the operator delivers edge images; nil in `MeteorReconciler.Configuration.edge` turns edge delivery off
/// (the cluster does not serve Argo CD's Application).
public struct EdgeSettings: Sendable {
    /// Argo CD's namespace, where Applications are created, and the AppProject they belong to.
    public var argocdNamespace = "argocd"
    public var project = "meteor"
    /// Registries (`host:port`) reached over plain HTTP, e.g. a loopback registry in tests.
    public var insecureRegistries: Set<String> = []
    /// Registry and git hosts whose requests go to another origin (host → `http://127.0.0.1:PORT`, `*` for every
    /// host): mirrors in air-gapped clusters, the stand-ins in the sandbox.
    public var hostOverrides: [String: String] = [:]
    /// Check release remotes this often whatever `spec.edge.release.interval` says (the sandbox's quick loop).
    public var releaseIntervalOverride: Int64?
    /// How soon an image whose verification failed is verified again (a signature may arrive after the build,
    /// from Tekton Chains).
    public var verificationRetry: Duration = .seconds(30)
    /// Seconds between checks of a release's git remote when `spec.edge.release.interval` is absent, and the
    /// least the operator accepts.
    public var defaultReleaseInterval: Int64 = 300
    public var minimumReleaseInterval: Int64 = 10
    /// Targets may choose Argo CD clusters by label (`clusterSelector`): the operator watches Argo CD's cluster
    /// Secrets (trimmed to name and labels as they arrive), which needs `config/rbac/argocd_cluster_reader_role.yaml`.
    /// Off by default: listing Secrets in Argo CD's namespace can read device credentials.
    public var clusterSelectors = false

    public init() {}
}

/// The edge part of a Meteor's status and the conditions that summarise it.
struct EdgeOutcome {
    var release: EdgeRelease?
    var images: [EdgeImageStatus] = []
    var indexes: [EdgeImageIndexStatus] = []
    var deployments: [EdgeDeploymentStatus] = []
    var targets: [EdgeTargetStatus] = []
    var rollout: EdgeRolloutStatus?
    var conditions: [Condition] = []
    var runNames: Set<String> = []
    var requeueAfter: Duration?
}

/// Why there is no release to deliver (or only the last known one).
struct ReleaseProblem: Sendable {
    var reason: String
    var message: String
}

/// In-memory state that saves the network: when each release's remote was last read, and when each unverified
/// digest was last tried. Lost on restart, which only means one early check.
final class EdgeMemory: Sendable {
    struct ReleaseCheck { var checked: Date; var pattern: String; var release: EdgeRelease?; var problem: ReleaseProblem? }
    let releases = Mutex<[String: ReleaseCheck]>([:])
    let verifications = Mutex<[String: Date]>([:])
    /// Digests verified since start (by Meteor UID and pinned reference), with the key's fingerprint: a reconcile
    /// that runs before the cache shows the status it wrote does not verify again.
    let verified = Mutex<[String: String]>([:])
    /// Targets whose delivery was stopped because their manifests ran unpinned images (by Meteor UID and target),
    /// with what they were given then: not delivered again until the commit or the pinned image changes.
    let unpinnedStops = Mutex<[String: EdgeDelivered]>([:])

    /// Drops what is remembered for a deleted Meteor.
    func forget(uid: String) {
        let prefix = uid + "/"
        releases.withLock { _ = $0.removeValue(forKey: uid) }
        verifications.withLock { $0 = $0.filter { !$0.key.hasPrefix(prefix) } }
        verified.withLock { $0 = $0.filter { !$0.key.hasPrefix(prefix) } }
        unpinnedStops.withLock { $0 = $0.filter { !$0.key.hasPrefix(prefix) } }
    }
}

extension MeteorReconciler {
    func reconcileEdge(
        _ meteor: Meteor, _ edge: Edge, raw: JSONValue, previous: Meteor.Status, settings: EdgeSettings, now: Date
    ) async throws -> EdgeOutcome {
        let generation = meteor.metadata.generation ?? 1
        let trust = self.trust
        var outcome = EdgeOutcome()
        func condition(_ type: String, _ status: Condition.Status, _ reason: String, _ message: String) {
            outcome.conditions.append(
                Condition(type: type, status: status, observedGeneration: generation, lastTransitionTime: now, reason: reason, message: message))
        }

        // Where each target runs: its cluster, or every cluster its selector matches (resolved once: a fleet's cluster
        // Secrets are read from the cache here, not per image or per step).
        let namespace = meteor.namespace ?? "default"
        let placements = EdgePlacement.resolve(edge, clusters: argoClusters)
        let application = { (p: EdgePlacement) in p.application(meteorNamespace: namespace, meteor: meteor.name) }
        // `status.deployments`: targets that name one cluster (a selector's devices are counted in `status.targets`).
        func namedDeployments(_ found: [String: EdgeDeploymentStatus]) -> [EdgeDeploymentStatus] {
            placements.filter { !$0.selected }.compactMap { found[application($0)] }
        }

        // 1. Which revision: the newest release tag, or spec.ref.
        let build: EdgeBuild
        if let release = edge.release {
            let interval =
                settings.releaseIntervalOverride ?? max(settings.minimumReleaseInterval, release.interval ?? settings.defaultReleaseInterval)
            outcome.requeueAfter = .seconds(interval)
            let (current, problem, fresh) = await currentRelease(meteor, release, interval: interval, previous: previous.release, now: now)
            if let problem, fresh {
                await events.record(raw, type: .warning, reason: problem.reason, message: problem.message)
            }
            guard let current else {
                let problem = problem ?? ReleaseProblem(reason: "NoMatchingTag", message: "no tag matches \(release.tagPattern)")
                condition(MeteorStatusVocabulary.imagesBuilt, .false, problem.reason, problem.message)
                condition(MeteorStatusVocabulary.imagesVerified, .unknown, "AwaitingImages", "No release to build yet")
                condition(MeteorStatusVocabulary.deployed, .unknown, "AwaitingVerification", "No release to deploy yet")
                outcome.deployments = namedDeployments(deploymentStatus(meteor, placements, settings: settings))
                outcome.rollout = previous.rollout
                return outcome
            }
            outcome.release = current
            build = EdgeBuild(ref: current.tag, release: current, generation: generation)
        } else {
            build = EdgeBuild(ref: meteor.spec.ref, release: nil, generation: generation)
        }

        // 2. One PipelineRun per image.
        let runsApi = client.dynamic(PipelineRunBuilder.resourceType, namespace: meteor.namespace)
        let earlier = Dictionary((previous.images ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var built = 0, failed = 0
        var started: [String] = []
        var runSettings: BuildSettings?
        for image in edge.images {
            let runName = EdgePipelineRunBuilder.name(meteor: meteor.name, image: image.name, build: build)
            outcome.runNames.insert(runName)
            var run = ownRun(ObjectKey(namespace: meteor.namespace, name: runName), of: meteor)
            if run == nil {
                if runSettings == nil { runSettings = try await newRunSettings(meteor) }
                let body = EdgePipelineRunBuilder.build(meteor: meteor, owner: raw, image: image, build: build, settings: runSettings!)
                do {
                    run = try await runsApi.create(
                        body,
                        params: WriteParams(fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? "Strict" : nil))
                    recent.record(run)
                    started.append("\(runName) (\(image.name), \(image.platform))")
                } catch let e as KubeError where e.isAlreadyExists {}
            }
            var status = EdgeImageStatus(name: image.name, platform: image.platform, repository: image.repository)
            status.pipelineRunName = runName
            let state = run.map(PipelineRunState.init)
            switch state?.outcome {
            case .succeeded?:
                built += 1
                status.digest = state!.results["IMAGE_DIGEST"]
                status.commit = Self.builtCommit(state!, build: build)
                if let problem = Self.builtImageProblem(state!, image: image, build: build, runName: runName) {
                    status.reason = problem.reason
                    status.message = problem.message
                } else {
                    status = try await verify(
                        status, image: image, earlier: earlier[image.name], edge: edge, placements: placements, meteor: meteor, raw: raw,
                        settings: settings, trust: trust, now: now)
                }
            case .failed?:
                failed += 1
                status.reason = "BuildFailed"
                status.message = ObjectHelpers.truncated(
                    state!.message.isEmpty ? state!.reason : state!.message, maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes)
            default:
                status.reason = "Building"
                status.message = "PipelineRun \(runName) is \(state?.reason ?? "Pending")"
            }
            outcome.images.append(status)
        }

        if !started.isEmpty {
            await events.record(
                raw, type: .normal, reason: "PipelineRunCreated",
                message: "Created edge PipelineRun\(started.count > 1 ? "s" : "") \(started.joined(separator: ", ")) at \(build.ref)")
        }
        let total = edge.images.count
        if failed > 0 {
            let names = outcome.images.filter { $0.reason == "BuildFailed" }.map(\.name)
            condition(MeteorStatusVocabulary.imagesBuilt, .false, "BuildFailed", "Failed to build: \(names.joined(separator: ", "))")
        } else if built == total {
            condition(MeteorStatusVocabulary.imagesBuilt, .true, "Built", "Built \(total) image(s) at \(build.ref)")
        } else {
            condition(MeteorStatusVocabulary.imagesBuilt, .unknown, "Building", "Built \(built) of \(total) image(s) at \(build.ref)")
        }

        let verified = outcome.images.filter(\.verified)
        let rejected = outcome.images.filter { !$0.verified && $0.digest != nil && $0.reason != nil }
        if !rejected.isEmpty {
            let reasons = Set(rejected.compactMap(\.reason))
            condition(
                MeteorStatusVocabulary.imagesVerified, .false, reasons.count == 1 ? reasons.first! : "VerificationFailed",
                rejected.map { "\($0.name) (\($0.pinnedReference ?? $0.repository)): \($0.message ?? $0.reason ?? "")" }.joined(separator: "; "))
            outcome.requeueAfter = min(outcome.requeueAfter ?? settings.verificationRetry, settings.verificationRetry)
        } else if verified.count == total {
            condition(
                MeteorStatusVocabulary.imagesVerified, .true, "Verified",
                "Verified \(total) image(s) with key \(verified.first?.keyFingerprint ?? "")")
        } else {
            condition(MeteorStatusVocabulary.imagesVerified, .unknown, "AwaitingImages", "Verified \(verified.count) of \(total) image(s)")
        }

        // 3. A repository several platforms share gets one image index at the build's tag.
        let (indexes, indexFailed) = await publishIndexes(
            edge, images: outcome.images, tag: build.imageTag, previous: previous.imageIndexes ?? [], meteor: meteor, raw: raw, settings: settings)
        outcome.indexes = indexes
        if indexFailed { outcome.requeueAfter = min(outcome.requeueAfter ?? settings.verificationRetry, settings.verificationRetry) }

        // 4. Where each target runs (its cluster, or every cluster its selector matches) and what it is given: the
        // verified digest where its cluster trusts the key it verified with; a staged rollout (`spec.edge.rollout`)
        // gives it only once its stage starts, and gives a rolled-back stage what last ran healthy there. A target
        // whose new image is not verified keeps what it runs, unless the key that signed that is no longer trusted.
        let byName = Dictionary(outcome.images.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let wanted = { (target: Edge.Target) -> EdgeDelivered? in
            guard let status = byName[target.image], status.verified, let pinned = status.pinnedReference, let commit = status.commit else {
                return nil
            }
            return EdgeDelivered(target: target.name, image: pinned, revision: commit, images: target.images, keyFingerprint: status.keyFingerprint)
        }
        let trusted = { (p: EdgePlacement, delivered: EdgeDelivered) -> Bool in
            guard let image = edge.images.first(where: { $0.name == p.target.image }), let fingerprint = delivered.keyFingerprint else {
                return false
            }
            return trust.trusts(fingerprint, repository: image.repository, cluster: p.cluster, namespace: namespace)
        }
        var allowed: Set<String>?
        var rollBack: Set<String> = []
        var lastHealthy: [String: EdgeDelivered] = [:]
        if let rollout = edge.rollout {
            let plan = try await planRollout(
                rollout, meteor: meteor, edge: edge, raw: raw, placements: placements, wanted: wanted, previous: previous.rollout,
                release: build.release.map { "\($0.tag) (\($0.commit ?? build.ref))" } ?? build.ref, settings: settings, now: now)
            outcome.rollout = plan.status
            if let run = plan.status.gateRun { outcome.runNames.insert(run) }
            if let after = plan.requeueAfter { outcome.requeueAfter = min(outcome.requeueAfter ?? after, after) }
            allowed = plan.deliver
            rollBack = plan.rollBack
            for d in plan.status.lastHealthy ?? [] { lastHealthy[d.target] = d }
        }
        var untrustedTargets: [String] = []
        var refused: [String] = []
        var deployed: Set<String> = []
        var desired: [(JSONValue, String)] = []
        for p in placements {
            guard let image = edge.images.first(where: { $0.name == p.target.image }) else { continue }
            let name = application(p)
            let given: EdgeDelivered?
            if rollBack.contains(p.target.name) {
                given = lastHealthy[p.target.name].flatMap { trusted(p, $0) ? $0 : nil }
                if given == nil, let app = placedApplication(p, of: meteor, settings: settings), app[path: "metadata", "deletionTimestamp"] == nil {
                    // It never ran a release healthy (or what it ran is no longer trusted there): nothing to return to.
                    try await deleteApplication(app, settings: settings)
                }
            } else if allowed.map({ $0.contains(p.target.name) }) ?? true, let delivered = wanted(p.target) {
                guard trusted(p, delivered) else {
                    untrustedTargets.append(
                        "\(p.target.name) (\(p.cluster)): key \(delivered.keyFingerprint ?? "") is not trusted for \(image.repository) there")
                    continue
                }
                if let problem = await extraImagesProblem(p, edge: edge, meteor: meteor, trust: trust, settings: settings) {
                    refused.append("\(p.target.name) (\(p.cluster)): \(problem)")
                    continue
                }
                if let stoppedFor = edgeMemory.unpinnedStops.withLock({ $0["\(meteor.metadata.uid ?? "")/\(name)"] }),
                    stoppedFor.sameDelivery(as: delivered)
                {
                    refused.append(
                        "\(p.target.name) (\(p.cluster)): delivery stopped, its manifests ran images not pinned and verified; waiting for a new commit or spec.edge.targets[].images"
                    )
                    continue
                }
                given = delivered
            } else {
                given = nil
            }
            guard let given else { continue }
            deployed.insert(name)
            desired.append(
                (
                    ArgoApplicationBuilder.build(
                        meteor: meteor, placement: p, image: image, pinnedImage: given.image, extraImages: given.images ?? [],
                        keyFingerprint: given.keyFingerprint, revision: given.revision, namespace: settings.argocdNamespace, project: settings.project
                    ),
                    p.cluster
                ))
        }
        // A fleet's Applications are written a few at a time: one at a time, 500 took tens of seconds on a real
        // kube-apiserver (each create waits for etcd).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, (app, cluster)) in desired.enumerated() {
                if i >= Self.concurrentApplicationWrites { try await group.next() }
                group.addTask { try await self.ensureApplication(app, meteor: meteor, raw: raw, cluster: cluster) }
            }
            try await group.waitForAll()
        }
        let untrusted = try await stopUntrustedDelivery(meteor, edge, trust: trust, keep: deployed, raw: raw, settings: settings)
        let unpinned = try await stopUnpinnedDelivery(meteor, raw: raw, settings: settings)
        try await pruneApplications(meteor, keep: Set(placements.map(application)), settings: settings)
        let found = deploymentStatus(meteor, placements, settings: settings)
        outcome.deployments = namedDeployments(found)
        outcome.targets = edge.targets.map { t in
            let mine = placements.filter { $0.target.name == t.name }
            return EdgeTargetStatus.summarise(t, deployments: mine.compactMap { found[application($0)] }, desired: mine.count)
        }

        let current = placements.filter { p in
            guard let d = found[application(p)], let w = wanted(p.target) else { return false }
            return d.image == w.image && d.syncStatus == "Synced" && d.healthStatus == "Healthy"
        }
        let degraded = placements.compactMap { found[application($0)] }.filter { $0.healthStatus == "Degraded" }
        let unplaced = edge.targets.filter { t in !placements.contains { $0.target.name == t.name } }
        let clusters = Set(placements.map(\.cluster)).sorted()
        if !untrusted.isEmpty || !unpinned.isEmpty || !untrustedTargets.isEmpty || !refused.isEmpty {
            let reason = refused.isEmpty && unpinned.isEmpty ? "KeyNotTrusted" : "UnverifiedImage"
            condition(
                MeteorStatusVocabulary.deployed, .false, reason,
                ObjectHelpers.truncated((untrusted + unpinned + untrustedTargets + refused).joined(separator: "; "), maxBytes: 4096))
        } else if let halted = outcome.rollout?.halted {
            condition(
                MeteorStatusVocabulary.deployed, .false, "RolledBack",
                "\(halted.message); stage \(halted.stage) returned to what last ran healthy there, and \(outcome.rollout?.release ?? "the release") is not delivered further"
            )
        } else if !degraded.isEmpty {
            condition(
                MeteorStatusVocabulary.deployed, .false, "Degraded",
                degraded.prefix(5).map { "\($0.application) on \($0.cluster) is Degraded\($0.message.map { ": \($0)" } ?? "")" }.joined(
                    separator: "; ") + (degraded.count > 5 ? "; and \(degraded.count - 5) more" : ""))
        } else if !unplaced.isEmpty {
            condition(
                MeteorStatusVocabulary.deployed, .unknown, "NoMatchingClusters",
                unplaced.map { "target \($0.name) selects no Argo CD cluster (\((try? $0.clusterSelector?.labelSelector())?.description ?? ""))" }
                    .joined(separator: "; "))
        } else if current.count == placements.count, outcome.rollout.map({ $0.completed == true }) ?? true {
            condition(
                MeteorStatusVocabulary.deployed, .true, "Synced",
                "Deployed to \(clusters.count <= 5 ? clusters.joined(separator: ", ") : "\(clusters.count) clusters"): synced and healthy")
        } else if verified.count < total {
            condition(
                MeteorStatusVocabulary.deployed, .unknown, "AwaitingVerification",
                "Deployed \(current.count) of \(placements.count) target(s); waiting for verified images")
        } else if let rollout = outcome.rollout, rollout.completed != true {
            condition(
                MeteorStatusVocabulary.deployed, .unknown, rollout.paused == true ? "RolloutPaused" : "RollingOut", rollout.waiting ?? "Rolling out")
        } else {
            let pending = placements.filter { p in !current.contains(p) }.prefix(5).map { p in
                found[application(p)].map { "\($0.application): \($0.syncStatus ?? "Unknown")/\($0.healthStatus ?? "Unknown")" }
                    ?? "\(application(p)): not created"
            }
            condition(
                MeteorStatusVocabulary.deployed, .unknown, "Progressing",
                "Deployed \(current.count) of \(placements.count) target(s); " + pending.joined(separator: ", "))
        }
        return outcome
    }

    /// How many Application writes one reconcile has in flight.
    static let concurrentApplicationWrites = 8

    /// Publishes an OCI image index at `repository:tag` for each repository that images of several platforms
    /// share, once every one of them is verified: the tag each build pushed for its own platform then serves all
    /// of them. Deployments do not wait for it (they pin each image by its digest); a refused push is a Warning
    /// Event and a message in the entry, retried. An index already published for the same digests is not pushed
    /// again.
    func publishIndexes(
        _ edge: Edge, images: [EdgeImageStatus], tag: String, previous: [EdgeImageIndexStatus], meteor: Meteor, raw: JSONValue, settings: EdgeSettings
    ) async -> ([EdgeImageIndexStatus], failed: Bool) {
        let byName = Dictionary(images.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [EdgeImageIndexStatus] = []
        var failed = false
        for (repository, group) in Dictionary(grouping: edge.images, by: \.repository).sorted(by: { $0.key < $1.key }) where group.count > 1 {
            let statuses = group.compactMap { byName[$0.name] }
            guard statuses.count == group.count, statuses.allSatisfy(\.verified) else { continue }
            let manifests = statuses.compactMap { s in s.digest.map { EdgeImageIndexStatus.Manifest(platform: s.platform, digest: $0) } }.sorted {
                $0.platform < $1.platform
            }
            let reference = "\(repository):\(tag)"
            if let earlier = previous.first(where: { $0.reference == reference && $0.manifests == manifests && $0.digest != nil }) {
                out.append(earlier)
                continue
            }
            do {
                let digest = try await pushIndex(
                    repository: repository, tag: tag, manifests: manifests, namespace: meteor.namespace, settings: settings)
                out.append(EdgeImageIndexStatus(reference: reference, digest: digest, manifests: manifests))
                await events.record(
                    raw, type: .normal, reason: "ImageIndexPublished",
                    message: "Published \(reference)@\(digest) for \(manifests.map(\.platform).joined(separator: ", "))")
            } catch {
                failed = true
                let message = "Cannot publish the image index \(reference): \(error)"
                out.append(EdgeImageIndexStatus(reference: reference, manifests: manifests, message: message))
                await events.record(raw, type: .warning, reason: "ImageIndexNotPublished", message: message)
            }
        }
        return (out, failed)
    }

    /// Reads each manifest's media type and size, and PUTs the index (the registry checks that each one is in the
    /// repository). The builds' push credentials (`BuildSettings.pushSecret`) first, else the signing pull secret's.
    func pushIndex(
        repository: String, tag: String, manifests: [EdgeImageIndexStatus.Manifest], namespace: String?, settings: EdgeSettings
    ) async throws -> String {
        let target = try RegistryClient.Reference(parsing: repository)
        var credentials: [String: RegistryClient.Credentials] = [:]
        if let name = configuration.build.pushSecret,
            let config = try await client.api(Secret.self, namespace: namespace).getOptional(name)?.value(".dockerconfigjson")
        {
            credentials = RegistryClient.credentials(dockerConfigJSON: Array(config))
        }
        let registry = registryClient(for: target, credentials: credentials, settings: settings)
        var entries: [JSONValue] = []
        for m in manifests {
            let child = try await registry.manifest(target, reference: m.digest)
            let parts = m.platform.split(separator: "/").map(String.init)
            var platform: JSONObject = ["os": .string(parts[0]), "architecture": .string(parts.count > 1 ? parts[1] : parts[0])]
            if parts.count > 2 { platform["variant"] = .string(parts[2]) }
            entries.append([
                "mediaType": .string(child.mediaType ?? "application/vnd.oci.image.manifest.v1+json"), "digest": .string(m.digest),
                "size": .int(Int64(child.bytes.count)), "platform": .object(platform),
            ])
        }
        let index: JSONValue = ["schemaVersion": 2, "mediaType": .string(RegistryClient.imageIndexType), "manifests": .array(entries)]
        let bytes = Array(index.serializedString().utf8)
        try await registry.pushManifest(target, reference: tag, bytes, mediaType: RegistryClient.imageIndexType)
        return SignatureVerifier.digest(bytes)
    }

    /// A registry client for `reference`'s registry: plain HTTP where the admin said so, its mirror, this operator's
    /// egress policy.
    func registryClient(
        for reference: RegistryClient.Reference, credentials: [String: RegistryClient.Credentials], settings: EdgeSettings
    ) -> RegistryClient {
        RegistryClient(
            insecure: settings.insecureRegistries.contains(reference.registry), credentials: credentials, endpoints: settings.hostOverrides,
            egress: egress)
    }

    /// The commit a run built: its COMMIT result, or for a release the tag's commit when the run reports none.
    static func builtCommit(_ state: PipelineRunState, build: EdgeBuild) -> String? {
        if let reported = state.results["COMMIT"], isCommit(reported) { return reported }
        if let release = build.release?.commit { return release }
        return isCommit(build.ref) ? build.ref : nil
    }

    static func isCommit(_ s: String) -> Bool { (s.count == 40 || s.count == 64) && s.allSatisfy { $0.isHexDigit && !$0.isUppercase } }

    /// A succeeded run must report a digest of an image in the configured repository, and the commit it built: the
    /// release tag's when it built a release (a tag moved between listing and cloning is not believed).
    static func builtImageProblem(
        _ state: PipelineRunState, image: Edge.Image, build: EdgeBuild, runName: String
    ) -> (reason: String, message: String)? {
        guard let digest = state.results["IMAGE_DIGEST"], PipelineRunState.isDigest(digest) else {
            return ("BuildResultMissing", PipelineRunState.missingDigestMessage(runName))
        }
        if let release = build.release?.commit, let reported = state.results["COMMIT"], isCommit(reported), reported != release {
            return (
                "CommitMismatch",
                "PipelineRun \(runName) built commit \(reported), but release \(build.release?.tag ?? build.ref) is commit \(release)"
            )
        }
        if builtCommit(state, build: build) == nil {
            return ("CommitUnknown", "PipelineRun \(runName) reported no COMMIT result; devices are given a commit, never a branch (\(build.ref))")
        }
        if let url = state.results["IMAGE_URL"], let pushed = try? RegistryClient.Reference(parsing: url),
            pushed.repositoryReference != image.repository
        {
            return ("RepositoryMismatch", "PipelineRun \(runName) pushed to \(pushed.repositoryReference), not \(image.repository)")
        }
        return nil
    }

    /// The release to deliver: re-read from the remote once per interval; the last known one when it cannot be read.
    /// The release and, when the last check of the remote found none or failed, why; `fresh` when the remote was
    /// read now (a reconcile between checks says what the last check found, not something else).
    func currentRelease(
        _ meteor: Meteor, _ release: Edge.Release, interval: Int64, previous: EdgeRelease?, now: Date
    ) async -> (EdgeRelease?, ReleaseProblem?, fresh: Bool) {
        let key = meteor.metadata.uid ?? "\(meteor.namespace ?? "")/\(meteor.name)"
        let known = previous.flatMap { ReleaseSelection.matches($0.tag, pattern: release.tagPattern) ? $0 : nil }
        if let cached = edgeMemory.releases.withLock({ $0[key] }), cached.pattern == release.tagPattern,
            now.timeIntervalSince(cached.checked) < Double(interval)
        {
            return (cached.release ?? known, cached.problem, false)
        }
        let found: EdgeRelease?
        let problem: ReleaseProblem?
        do {
            let refs = try await listRefs(meteor)
            found = ReleaseSelection.newest(refs, pattern: release.tagPattern).map { EdgeRelease(tag: $0.tag, commit: $0.commit) }
            problem =
                found == nil ? ReleaseProblem(reason: "NoMatchingTag", message: "No tag on \(meteor.spec.url) matches \(release.tagPattern)") : nil
            if let found, found != known, let raw = try? JSONValue(encoding: meteor) {
                await events.record(
                    raw, type: .normal, reason: "ReleaseFound",
                    message: "Delivering \(found.tag) (\(found.commit ?? "unknown commit")) from \(meteor.spec.url)")
            }
        } catch {
            found = known
            problem = ReleaseProblem(reason: "GitRemoteUnavailable", message: "Cannot list tags of \(meteor.spec.url): \(error)")
        }
        edgeMemory.releases.withLock { $0[key] = .init(checked: now, pattern: release.tagPattern, release: found, problem: problem) }
        return (found, problem, true)
    }

    /// Creates the Application, or patches its spec and image annotation when they differ; never touches status.
    func ensureApplication(_ desired: JSONValue, meteor: Meteor, raw: JSONValue, cluster: String) async throws {
        guard let applications else { return }
        let key = ObjectKey(desired)
        let api = client.dynamic(ArgoApplicationBuilder.resourceType, namespace: key.namespace)
        guard let current = recent.read(key, kind: ArgoApplicationBuilder.resourceType.kind, from: applications) else {
            do {
                recent.record(
                    try await api.create(
                        desired,
                        params: WriteParams(fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? "Strict" : nil)))
                await events.record(
                    raw, type: .normal, reason: "ApplicationCreated",
                    message:
                        "Created Argo CD Application \(key.namespace ?? "")/\(key.name) deploying \(ApplicationState(desired).pinnedImage ?? "") to \(cluster)"
                )
            } catch let e as KubeError where e.isAlreadyExists {}
            return
        }
        // Being removed (delivery stopped, Argo CD taking its resources off the device): created again once gone.
        if current[path: "metadata", "deletionTimestamp"] != nil { return }
        guard current[path: "metadata", "labels", MeteorLabels.meteorUID] == desired[path: "metadata", "labels", MeteorLabels.meteorUID] else {
            await events.record(
                raw, type: .warning, reason: "ApplicationConflict",
                message: "Application \(key.name) exists and belongs to another Meteor; not touching it")
            return
        }
        let desiredSpec = desired["spec"] ?? .object([:])
        let image = desired[path: "metadata", "annotations", "meteor.zone/image"]
        if MergePatch.apply(desiredSpec, to: current["spec"] ?? .object([:])) != current["spec"]
            || current[path: "metadata", "annotations", "meteor.zone/image"] != image
        {
            recent.record(
                try await api.patch(
                    key.name, .merge(["metadata": ["annotations": ["meteor.zone/image": image ?? .null]], "spec": desiredSpec]),
                    params: WriteParams(fieldManager: "meteor-operator")))
            let before = ApplicationState(current)
            await events.record(
                raw, type: .normal, reason: "ApplicationUpdated",
                message: "Application \(key.name) now deploys \(image?.stringValue ?? "") (was \(before.pinnedImage ?? "nothing")) to \(cluster)")
        }
    }

    /// Deletes the Applications not about to be given a trusted image (`keep`, by name) whose deployed image was
    /// verified with a key the policies no longer trust for that cluster (rotated out, revoked, narrowed), or that
    /// record no key: what runs on the device is presumed compromised, and Argo CD removes it (the Application's
    /// resources finalizer). Delivery resumes when an image signed by a trusted key is verified.
    /// Returns what was stopped, for the Deployed condition.
    func stopUntrustedDelivery(
        _ meteor: Meteor, _ edge: Edge, trust: EdgeTrust, keep: Set<String>, raw: JSONValue, settings: EdgeSettings
    ) async throws -> [String] {
        var stopped: [String] = []
        let namespace = meteor.namespace ?? "default"
        for app in applicationsOf(meteor, settings: settings) {
            guard let name = app[path: "metadata", "name"]?.stringValue, !keep.contains(name),
                let targetName = app[path: "metadata", "labels", MeteorLabels.target]?.stringValue,
                let target = edge.targets.first(where: { $0.name == targetName }), let image = edge.images.first(where: { $0.name == target.image }),
                let cluster = app[path: "spec", "destination", "name"]?.stringValue, app[path: "metadata", "deletionTimestamp"] == nil
            else { continue }
            let fingerprint = app[path: "metadata", "annotations", ArgoApplicationBuilder.keyAnnotation]?.stringValue
            if let fingerprint, trust.trusts(fingerprint, repository: image.repository, cluster: cluster, namespace: namespace) { continue }
            try await deleteApplication(app, settings: settings)
            let what = "\(ApplicationState(app).pinnedImage ?? image.repository) on \(cluster)"
            let why =
                "delivery of \(what) stopped: it was verified with key \(fingerprint ?? "(unrecorded)"), which no EdgeTrustPolicy trusts for \(image.repository) there any more"
            stopped.append(why)
            await events.record(raw, type: .warning, reason: "DeliveryStopped", message: "Deleted Application \(name): \(why)")
        }
        return stopped
    }

    /// Deletes Applications whose resources Argo CD reports running an image the operator did not pin and verify
    /// (a second container, an init container, a tag): delivery of that target stops until its manifests run only
    /// what is declared (`targets[].images`). Returns what was stopped.
    func stopUnpinnedDelivery(_ meteor: Meteor, raw: JSONValue, settings: EdgeSettings) async throws -> [String] {
        var stopped: [String] = []
        for app in applicationsOf(meteor, settings: settings) where app[path: "metadata", "deletionTimestamp"] == nil {
            let unpinned = Self.unpinnedImages(app)
            guard !unpinned.isEmpty, let name = app[path: "metadata", "name"]?.stringValue else { continue }
            let given = EdgeDelivered(application: app, target: app[path: "metadata", "labels", MeteorLabels.target]?.stringValue ?? "")
            edgeMemory.unpinnedStops.withLock { $0["\(meteor.metadata.uid ?? "")/\(name)"] = given }
            try await deleteApplication(app, settings: settings)
            let why =
                "\(name) runs \(unpinned.joined(separator: ", ")), not pinned and verified: declare every image its manifests run in spec.edge.targets[].images, by digest"
            stopped.append(why)
            await events.record(raw, type: .warning, reason: "DeliveryStopped", message: "Deleted Application \(why)")
        }
        return stopped
    }

    /// The Meteor's Applications, from the cache.
    func applicationsOf(_ meteor: Meteor, settings: EdgeSettings) -> [JSONValue] {
        guard let applications, let uid = meteor.metadata.uid else { return [] }
        return applications.store.list(
            namespace: settings.argocdNamespace, labelSelector: LabelSelector([.init(key: MeteorLabels.meteorUID, op: .equals, values: [uid])]))
    }

    /// Deletes Applications no placement wants any more (a target removed, a cluster unlabelled or gone; all of
    /// them when `keep` is empty).
    func pruneApplications(_ meteor: Meteor, keep: Set<String>, settings: EdgeSettings) async throws {
        for app in applicationsOf(meteor, settings: settings) {
            guard let name = app[path: "metadata", "name"]?.stringValue, !keep.contains(name), app[path: "metadata", "deletionTimestamp"] == nil
            else { continue }
            try await deleteApplication(app, settings: settings)
        }
    }

    /// Deletes an Application the operator made (this one: its UID as precondition); Argo CD's finalizer takes its
    /// resources off the device first.
    func deleteApplication(_ app: JSONValue, settings: EdgeSettings) async throws {
        guard let name = app[path: "metadata", "name"]?.stringValue else { return }
        do {
            _ = try await client.dynamic(ArgoApplicationBuilder.resourceType, namespace: settings.argocdNamespace).delete(
                name, params: DeleteParams(preconditionUID: app[path: "metadata", "uid"]?.stringValue))
            recent.forget(kind: ArgoApplicationBuilder.resourceType.kind, ObjectKey(app))
        } catch let e as KubeError where e.isNotFound {}
    }

    /// A placement's Application, when this Meteor (this UID) made it: from the cache, or the operator's own write.
    func placedApplication(_ p: EdgePlacement, of meteor: Meteor, settings: EdgeSettings) -> JSONValue? {
        guard let applications else { return nil }
        let key = ObjectKey(
            namespace: settings.argocdNamespace, name: p.application(meteorNamespace: meteor.namespace ?? "default", meteor: meteor.name))
        guard let app = recent.read(key, kind: ArgoApplicationBuilder.resourceType.kind, from: applications),
            app[path: "metadata", "labels", MeteorLabels.meteorUID]?.stringValue == meteor.metadata.uid
        else { return nil }
        return app
    }

    /// The placements' Applications, by name, as Argo CD reports them.
    func deploymentStatus(_ meteor: Meteor, _ placements: [EdgePlacement], settings: EdgeSettings) -> [String: EdgeDeploymentStatus] {
        var out: [String: EdgeDeploymentStatus] = [:]
        for p in placements {
            guard let app = placedApplication(p, of: meteor, settings: settings), let name = app[path: "metadata", "name"]?.stringValue else {
                continue
            }
            let state = ApplicationState(app)
            var d = EdgeDeploymentStatus(target: p.target.name, cluster: p.cluster, application: name)
            d.image = state.pinnedImage
            d.revision = state.revision
            d.syncStatus = state.syncStatus ?? "Unknown"
            d.healthStatus = state.healthStatus ?? "Unknown"
            // Argo CD's words, which can run long: a status holds a summary (the Application has the rest).
            d.message = state.message.map { ObjectHelpers.truncated($0, maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes) }
            out[name] = d
        }
        return out
    }

    /// Plans a staged rollout from what the Applications report, creates the gate run it asks for, and tells the
    /// user what happened.
    func planRollout(
        _ rollout: Edge.Rollout, meteor: Meteor, edge: Edge, raw: JSONValue, placements: [EdgePlacement], wanted: (Edge.Target) -> EdgeDelivered?,
        previous: EdgeRolloutStatus?, release: String, settings: EdgeSettings, now: Date
    ) async throws -> RolloutPlan {
        let namespace = meteor.namespace ?? "default"
        var everyTarget: [String: EdgeDelivered]? = [:]
        for t in edge.targets {
            guard let w = wanted(t) else { everyTarget = nil; break }
            everyTarget?[t.name] = w
        }
        var devices: [String: [RolloutPlanner.Device]] = [:]
        for p in placements {
            // Missing or being removed: a device that runs nothing yet.
            let app = placedApplication(p, of: meteor, settings: settings).flatMap { $0[path: "metadata", "deletionTimestamp"] == nil ? $0 : nil }
            devices[p.target.name, default: []].append(
                .init(
                    application: p.application(meteorNamespace: namespace, meteor: meteor.name), cluster: p.cluster,
                    state: ApplicationState(app ?? .object([:])), given: app.flatMap { EdgeDelivered(application: $0, target: p.target.name) }))
        }
        let paused = meteor.metadata.annotations?[MeteorAnnotations.rollout] == "paused"
        let plan = RolloutPlanner.plan(
            rollout, previous: previous, wanted: everyTarget, release: release, devices: devices,
            gate: { name in self.ownRun(ObjectKey(namespace: meteor.namespace, name: name), of: meteor).map(PipelineRunState.init) },
            paused: paused, meteor: meteor.name, now: now)
        for e in plan.events { await events.record(raw, type: e.warning ? .warning : .normal, reason: e.reason, message: e.message) }
        if let (stage, run) = plan.gate, let gate = stage.gate, let everyTarget,
            ownRun(ObjectKey(namespace: meteor.namespace, name: run), of: meteor) == nil
        {
            let images = stage.targets.compactMap { everyTarget[$0]?.image }
            let clusters = placements.filter { stage.targets.contains($0.target.name) }.map(\.cluster)
            let body = EdgePipelineRunBuilder.gate(
                meteor: meteor, owner: raw, name: run, stage: stage.name, pipelineRef: gate.pipelineRef,
                commit: everyTarget.values.first?.revision ?? meteor.spec.ref,
                images: Array(Set(images)).sorted(), clusters: Array(Set(clusters)).sorted(), settings: try await newRunSettings(meteor))
            do {
                recent.record(
                    try await client.dynamic(PipelineRunBuilder.resourceType, namespace: meteor.namespace).create(
                        body,
                        params: WriteParams(fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? "Strict" : nil)))
                await events.record(
                    raw, type: .normal, reason: "GateStarted",
                    message: "Started gate PipelineRun \(run) (\(gate.pipelineRef)) for stage \(stage.name)")
            } catch let e as KubeError where e.isAlreadyExists {}
        }
        return plan
    }
}

extension EdgeImageStatus {
    func withRun(_ run: String?) -> EdgeImageStatus {
        var copy = self
        copy.pipelineRunName = run
        return copy
    }
}
