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
    /// Edge delivery for a Meteor that asks for it (nil otherwise, its Applications pruned when edge delivery is on).
    func deliverEdge(_ meteor: Meteor, raw: JSONValue, previous: Meteor.Status, now: Date) async throws -> EdgeOutcome? {
        guard let settings = configuration.edge else { return nil }
        guard meteor.spec.requestedPipelines.contains(Pipeline.edge.rawValue), let edge = meteor.spec.edge else {
            try await pruneApplications(meteor, keep: [], settings: settings)
            return nil
        }
        return try await reconcileEdge(meteor, edge, raw: raw, previous: previous, settings: settings, now: now)
    }

    /// Builds each image at the release, verifies it, and delivers it where its targets run, in that order.
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
        let earlier = Dictionary((previous.images ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var built = 0, failed = 0
        var started: [String] = []
        var runSettings: BuildSettings?
        for image in edge.images {
            let runName = EdgePipelineRunBuilder.name(meteor: meteor.name, image: image.name, build: build)
            outcome.runNames.insert(runName)
            let (run, created) = try await createRunIfMissing(runName, of: meteor, settings: &runSettings) {
                EdgePipelineRunBuilder.build(meteor: meteor, owner: raw, image: image, build: build, settings: $0)
            }
            if created { started.append("\(runName) (\(image.name), \(image.platform))") }
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
                status.message = state!.failureText(maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes)
            default:
                status.reason = "Building"
                status.message = "PipelineRun \(runName) is \(state?.reason ?? "Pending")"
            }
            outcome.images.append(status)
        }

        if !started.isEmpty {
            await events.record(
                raw, type: .normal, reason: .pipelineRunCreated,
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
                    raw, type: .normal, reason: .imageIndexPublished,
                    message: "Published \(reference)@\(digest) for \(manifests.map(\.platform).joined(separator: ", "))")
            } catch {
                failed = true
                let message = "Cannot publish the image index \(reference): \(error)"
                out.append(EdgeImageIndexStatus(reference: reference, manifests: manifests, message: message))
                await events.record(raw, type: .warning, reason: .imageIndexNotPublished, message: message)
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

}

extension EdgeImageStatus {
    func withRun(_ run: String?) -> EdgeImageStatus {
        var copy = self
        copy.pipelineRunName = run
        return copy
    }
}
