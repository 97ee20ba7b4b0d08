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

    public init() {}
}

/// The edge part of a Meteor's status and the conditions that summarise it.
struct EdgeOutcome {
    var release: EdgeRelease?
    var images: [EdgeImageStatus] = []
    var indexes: [EdgeImageIndexStatus] = []
    var deployments: [EdgeDeploymentStatus] = []
    var conditions: [Condition] = []
    var runNames: Set<String> = []
    var requeueAfter: Duration?
}

/// In-memory state that saves the network: when each release's remote was last read, and when each unverified
/// digest was last tried. Lost on restart, which only means one early check.
final class EdgeMemory: Sendable {
    struct ReleaseCheck { var checked: Date; var pattern: String; var release: EdgeRelease? }
    let releases = Mutex<[String: ReleaseCheck]>([:])
    let verifications = Mutex<[String: Date]>([:])
    /// Digests verified since start (by Meteor UID and pinned reference), with the key's fingerprint: a reconcile
    /// that runs before the cache shows the status it wrote does not verify again.
    let verified = Mutex<[String: String]>([:])

    /// Drops what is remembered for a deleted Meteor.
    func forget(uid: String) {
        let prefix = uid + "/"
        releases.withLock { _ = $0.removeValue(forKey: uid) }
        verifications.withLock { $0 = $0.filter { !$0.key.hasPrefix(prefix) } }
        verified.withLock { $0 = $0.filter { !$0.key.hasPrefix(prefix) } }
    }
}

extension MeteorReconciler {
    func reconcileEdge(_ meteor: Meteor, _ edge: Edge, raw: JSONValue, previous: Meteor.Status, settings: EdgeSettings, now: Date) async throws -> EdgeOutcome {
        let generation = meteor.metadata.generation ?? 1
        var outcome = EdgeOutcome()
        func condition(_ type: String, _ status: Condition.Status, _ reason: String, _ message: String) {
            outcome.conditions.append(Condition(type: type, status: status, observedGeneration: generation, lastTransitionTime: now, reason: reason, message: message))
        }

        // 1. Which revision: the newest release tag, or spec.ref.
        let build: EdgeBuild
        if let release = edge.release {
            let interval = settings.releaseIntervalOverride ?? max(settings.minimumReleaseInterval, release.interval ?? settings.defaultReleaseInterval)
            outcome.requeueAfter = .seconds(interval)
            let (current, problem) = await currentRelease(meteor, release, interval: interval, previous: previous.release, now: now)
            if let problem {
                await events.record(raw, type: .warning, reason: problem.reason, message: problem.message)
            }
            guard let current else {
                let problem = problem ?? (reason: "NoMatchingTag", message: "no tag matches \(release.tagPattern)")
                condition(MeteorStatusVocabulary.imagesBuilt, .false, problem.reason, problem.message)
                condition(MeteorStatusVocabulary.imagesVerified, .unknown, "AwaitingImages", "No release to build yet")
                condition(MeteorStatusVocabulary.deployed, .unknown, "AwaitingVerification", "No release to deploy yet")
                outcome.deployments = deploymentStatus(meteor, edge, settings: settings)
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
                    run = try await runsApi.create(body, params: WriteParams(fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? "Strict" : nil))
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
                if let problem = Self.builtImageProblem(state!, image: image, runName: runName) {
                    status.reason = problem.reason
                    status.message = problem.message
                } else {
                    status = try await verify(status, earlier: earlier[image.name], edge: edge, meteor: meteor, raw: raw, settings: settings, now: now)
                }
            case .failed?:
                failed += 1
                status.reason = "BuildFailed"
                status.message = ObjectHelpers.truncated(state!.message.isEmpty ? state!.reason : state!.message, maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes)
            default:
                status.reason = "Building"
                status.message = "PipelineRun \(runName) is \(state?.reason ?? "Pending")"
            }
            outcome.images.append(status)
        }

        if !started.isEmpty {
            await events.record(raw, type: .normal, reason: "PipelineRunCreated", message: "Created edge PipelineRun\(started.count > 1 ? "s" : "") \(started.joined(separator: ", ")) at \(build.ref)")
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
            condition(MeteorStatusVocabulary.imagesVerified, .false, reasons.count == 1 ? reasons.first! : "VerificationFailed",
                      rejected.map { "\($0.name) (\($0.pinnedReference ?? $0.repository)): \($0.message ?? $0.reason ?? "")" }.joined(separator: "; "))
            outcome.requeueAfter = min(outcome.requeueAfter ?? settings.verificationRetry, settings.verificationRetry)
        } else if verified.count == total {
            condition(MeteorStatusVocabulary.imagesVerified, .true, "Verified", "Verified \(total) image(s) with key \(verified.first?.keyFingerprint ?? "")")
        } else {
            condition(MeteorStatusVocabulary.imagesVerified, .unknown, "AwaitingImages", "Verified \(verified.count) of \(total) image(s)")
        }

        // 3. A repository several platforms share gets one image index at the build's tag.
        let (indexes, indexFailed) = await publishIndexes(edge, images: outcome.images, tag: build.imageTag, previous: previous.imageIndexes ?? [], meteor: meteor, raw: raw, settings: settings)
        outcome.indexes = indexes
        if indexFailed { outcome.requeueAfter = min(outcome.requeueAfter ?? settings.verificationRetry, settings.verificationRetry) }

        // 4. Deploy verified digests; a target whose new image is not verified keeps what it runs.
        let revision = build.release?.commit ?? build.ref
        let byName = Dictionary(outcome.images.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for target in edge.targets {
            guard let image = edge.images.first(where: { $0.name == target.image }), let status = byName[target.image], status.verified, let pinned = status.pinnedReference else { continue }
            let desired = ArgoApplicationBuilder.build(meteor: meteor, target: target, image: image, pinnedImage: pinned, revision: revision, namespace: settings.argocdNamespace, project: settings.project)
            try await ensureApplication(desired, meteor: meteor, raw: raw, target: target)
        }
        try await pruneApplications(meteor, keep: Set(edge.targets.map(\.name)), settings: settings)
        outcome.deployments = deploymentStatus(meteor, edge, settings: settings)

        let wantedImage = { (target: Edge.Target) in byName[target.image]?.verified == true ? byName[target.image]?.pinnedReference : nil }
        let current = edge.targets.filter { t in
            outcome.deployments.first { $0.target == t.name }.map { $0.image == wantedImage(t) && $0.syncStatus == "Synced" && $0.healthStatus == "Healthy" } ?? false
        }
        let degraded = outcome.deployments.filter { $0.healthStatus == "Degraded" }
        if !degraded.isEmpty {
            condition(MeteorStatusVocabulary.deployed, .false, "Degraded", degraded.map { "\($0.application) on \($0.cluster) is Degraded\($0.message.map { ": \($0)" } ?? "")" }.joined(separator: "; "))
        } else if current.count == edge.targets.count {
            condition(MeteorStatusVocabulary.deployed, .true, "Synced", "Deployed to \(edge.targets.map(\.cluster).joined(separator: ", ")): synced and healthy")
        } else if verified.count < total {
            condition(MeteorStatusVocabulary.deployed, .unknown, "AwaitingVerification", "Deployed \(current.count) of \(edge.targets.count) target(s); waiting for verified images")
        } else {
            let pending = outcome.deployments.filter { d in !current.contains { $0.name == d.target } }
            condition(MeteorStatusVocabulary.deployed, .unknown, "Progressing", "Deployed \(current.count) of \(edge.targets.count) target(s); " + pending.map { "\($0.application): \($0.syncStatus ?? "Unknown")/\($0.healthStatus ?? "Unknown")" }.joined(separator: ", "))
        }
        return outcome
    }

    /// Publishes an OCI image index at `repository:tag` for each repository that images of several platforms
    /// share, once every one of them is verified: the tag each build pushed for its own platform then serves all
    /// of them. Deployments do not wait for it (they pin each image by its digest); a refused push is a Warning
    /// Event and a message in the entry, retried. An index already published for the same digests is not pushed
    /// again.
    func publishIndexes(_ edge: Edge, images: [EdgeImageStatus], tag: String, previous: [EdgeImageIndexStatus], meteor: Meteor, raw: JSONValue, settings: EdgeSettings) async -> ([EdgeImageIndexStatus], failed: Bool) {
        let byName = Dictionary(images.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [EdgeImageIndexStatus] = []
        var failed = false
        for (repository, group) in Dictionary(grouping: edge.images, by: \.repository).sorted(by: { $0.key < $1.key }) where group.count > 1 {
            let statuses = group.compactMap { byName[$0.name] }
            guard statuses.count == group.count, statuses.allSatisfy(\.verified) else { continue }
            let manifests = statuses.compactMap { s in s.digest.map { EdgeImageIndexStatus.Manifest(platform: s.platform, digest: $0) } }.sorted { $0.platform < $1.platform }
            let reference = "\(repository):\(tag)"
            if let earlier = previous.first(where: { $0.reference == reference && $0.manifests == manifests && $0.digest != nil }) {
                out.append(earlier)
                continue
            }
            do {
                let digest = try await pushIndex(repository: repository, tag: tag, manifests: manifests, namespace: meteor.namespace, settings: settings)
                out.append(EdgeImageIndexStatus(reference: reference, digest: digest, manifests: manifests))
                await events.record(raw, type: .normal, reason: "ImageIndexPublished", message: "Published \(reference)@\(digest) for \(manifests.map(\.platform).joined(separator: ", "))")
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
    func pushIndex(repository: String, tag: String, manifests: [EdgeImageIndexStatus.Manifest], namespace: String?, settings: EdgeSettings) async throws -> String {
        let target = try RegistryClient.Reference(parsing: repository)
        var credentials: [String: RegistryClient.Credentials] = [:]
        if let name = configuration.build.pushSecret, let config = try await client.api(Secret.self, namespace: namespace).getOptional(name)?.value(".dockerconfigjson") {
            credentials = RegistryClient.credentials(dockerConfigJSON: Array(config))
        }
        let registry = RegistryClient(insecure: settings.insecureRegistries.contains(target.registry), credentials: credentials, endpoints: settings.hostOverrides, egress: egress)
        do {
            var entries: [JSONValue] = []
            for m in manifests {
                let child = try await registry.manifest(target, reference: m.digest)
                let parts = m.platform.split(separator: "/").map(String.init)
                var platform: JSONObject = ["os": .string(parts[0]), "architecture": .string(parts.count > 1 ? parts[1] : parts[0])]
                if parts.count > 2 { platform["variant"] = .string(parts[2]) }
                entries.append(["mediaType": .string(child.mediaType ?? "application/vnd.oci.image.manifest.v1+json"), "digest": .string(m.digest), "size": .int(Int64(child.bytes.count)), "platform": .object(platform)])
            }
            let index: JSONValue = ["schemaVersion": 2, "mediaType": .string(RegistryClient.imageIndexType), "manifests": .array(entries)]
            let bytes = Array(index.serializedString().utf8)
            try await registry.pushManifest(target, reference: tag, bytes, mediaType: RegistryClient.imageIndexType)
            return SignatureVerifier.digest(bytes)
        }
    }

    /// A succeeded run must report a digest of an image in the configured repository.
    static func builtImageProblem(_ state: PipelineRunState, image: Edge.Image, runName: String) -> (reason: String, message: String)? {
        guard let digest = state.results["IMAGE_DIGEST"], PipelineRunState.isDigest(digest) else {
            return ("BuildResultMissing", PipelineRunState.missingDigestMessage(runName))
        }
        if let url = state.results["IMAGE_URL"], let pushed = try? RegistryClient.Reference(parsing: url), pushed.repositoryReference != image.repository {
            return ("RepositoryMismatch", "PipelineRun \(runName) pushed to \(pushed.repositoryReference), not \(image.repository)")
        }
        return nil
    }

    /// Verifies a built digest unless it was verified before (same digest) or tried too recently.
    func verify(_ status: EdgeImageStatus, earlier: EdgeImageStatus?, edge: Edge, meteor: Meteor, raw: JSONValue, settings: EdgeSettings, now: Date) async throws -> EdgeImageStatus {
        var status = status
        guard let pinned = status.pinnedReference else { return status }
        if let earlier, earlier.digest == status.digest, earlier.repository == status.repository {
            if earlier.verified { return earlier.withRun(status.pipelineRunName) }
            let key = "\(meteor.metadata.uid ?? "")/\(pinned)"
            if edgeMemory.verified.withLock({ $0[key] }) == nil, let last = edgeMemory.verifications.withLock({ $0[key] }), now.timeIntervalSince(last) < settings.verificationRetry.seconds {
                var kept = earlier.withRun(status.pipelineRunName)
                kept.verified = false
                return kept
            }
        }
        let memoryKey = "\(meteor.metadata.uid ?? "")/\(pinned)"
        if let fingerprint = edgeMemory.verified.withLock({ $0[memoryKey] }) {
            status.verified = true
            status.keyFingerprint = fingerprint
            return status
        }
        edgeMemory.verifications.withLock { $0[memoryKey] = now }
        do {
            let result = try await fetchAndVerify(pinned, signing: edge.signing, namespace: meteor.namespace, settings: settings)
            edgeMemory.verified.withLock { $0[memoryKey] = result.keyFingerprint }
            metrics?.verification("verified")
            status.verified = true
            status.keyFingerprint = result.keyFingerprint
            status.reason = nil
            status.message = nil
            await events.record(raw, type: .normal, reason: "ImageVerified", message: "Verified the signature of \(pinned) with key \(result.keyFingerprint)")
        } catch let failure as SignatureFailure {
            metrics?.verification(failure.reason)
            status.reason = failure.reason
            status.message = failure.description
            await events.record(raw, type: .warning, reason: "VerificationFailed", message: "\(pinned): \(failure.reason): \(failure.description); it will not be deployed")
        } catch let failure as EdgeConfigurationError {
            metrics?.verification(failure.reason)
            status.reason = failure.reason
            status.message = failure.message
            await events.record(raw, type: .warning, reason: failure.reason, message: failure.message)
        } catch let failure as RegistryClient.RegistryError {
            metrics?.verification("RegistryUnavailable")
            status.reason = "RegistryUnavailable"
            status.message = "\(pinned): \(failure.message)"
            await events.record(raw, type: .warning, reason: "RegistryUnavailable", message: status.message!)
        } catch {
            metrics?.verification("RegistryUnavailable")
            status.reason = "RegistryUnavailable"
            status.message = "\(pinned): \(error)"
            await events.record(raw, type: .warning, reason: "RegistryUnavailable", message: status.message!)
        }
        return status
    }

    /// Reads the key and credentials from their Secrets and verifies `pinned` against the registry.
    func fetchAndVerify(_ pinned: String, signing: Edge.Signing, namespace: String?, settings: EdgeSettings) async throws -> SignatureVerifier.Verified {
        let verifier = try await signatureVerifier(signing, namespace: namespace)
        let reference = try RegistryClient.Reference(parsing: pinned)
        let registry = RegistryClient(insecure: settings.insecureRegistries.contains(reference.registry), credentials: try await pullCredentials(signing, namespace: namespace), endpoints: settings.hostOverrides, egress: egress)
        return try await verifier.verify(image: reference, registry: registry)
    }

    struct EdgeConfigurationError: Error {
        var reason: String
        var message: String
    }

    func secret(_ name: String, namespace: String?, purpose: String) async throws -> Secret {
        do {
            return try await client.api(Secret.self, namespace: namespace).get(name)
        } catch let e as KubeError where e.isNotFound {
            throw EdgeConfigurationError(reason: "SecretNotFound", message: "Secret \(name) (\(purpose)) does not exist in namespace \(namespace ?? "default")")
        }
    }

    func signatureVerifier(_ signing: Edge.Signing, namespace: String?) async throws -> SignatureVerifier {
        let ref = signing.publicKeySecretRef
        let key = ref.key ?? "cosign.pub"
        let secret = try await secret(ref.name, namespace: namespace, purpose: "the signing public key")
        guard let pem = secret.value(key) else {
            throw EdgeConfigurationError(reason: "KeyNotFound", message: "Secret \(ref.name) has no key \(key) holding the public key")
        }
        do {
            return try SignatureVerifier(publicKeyPEM: String(decoding: pem, as: UTF8.self))
        } catch let failure as SignatureFailure {
            throw EdgeConfigurationError(reason: failure.reason, message: "Secret \(ref.name) key \(key): \(failure.description)")
        }
    }

    func pullCredentials(_ signing: Edge.Signing, namespace: String?) async throws -> [String: RegistryClient.Credentials] {
        guard let name = signing.pullSecretRef?.name else { return [:] }
        let secret = try await secret(name, namespace: namespace, purpose: "registry pull credentials")
        guard let config = secret.value(".dockerconfigjson") else {
            throw EdgeConfigurationError(reason: "InvalidPullSecret", message: "Secret \(name) is not a kubernetes.io/dockerconfigjson Secret (no .dockerconfigjson key)")
        }
        return RegistryClient.credentials(dockerConfigJSON: Array(config))
    }

    /// The release to deliver: re-read from the remote once per interval; the last known one when it cannot be read.
    func currentRelease(_ meteor: Meteor, _ release: Edge.Release, interval: Int64, previous: EdgeRelease?, now: Date) async -> (EdgeRelease?, (reason: String, message: String)?) {
        let key = meteor.metadata.uid ?? "\(meteor.namespace ?? "")/\(meteor.name)"
        let known = previous.flatMap { ReleaseSelection.matches($0.tag, pattern: release.tagPattern) ? $0 : nil }
        if let cached = edgeMemory.releases.withLock({ $0[key] }), cached.pattern == release.tagPattern, now.timeIntervalSince(cached.checked) < Double(interval) {
            return (cached.release ?? known, nil)
        }
        do {
            let refs = try await listRefs(meteor)
            let newest = ReleaseSelection.newest(refs, pattern: release.tagPattern).map { EdgeRelease(tag: $0.tag, commit: $0.commit) }
            edgeMemory.releases.withLock { $0[key] = .init(checked: now, pattern: release.tagPattern, release: newest) }
            if let newest, newest != known {
                await events.record(try JSONValue(encoding: meteor), type: .normal, reason: "ReleaseFound", message: "Delivering \(newest.tag) (\(newest.commit ?? "unknown commit")) from \(meteor.spec.url)")
            }
            return (newest, newest == nil ? (reason: "NoMatchingTag", message: "No tag on \(meteor.spec.url) matches \(release.tagPattern)") : nil)
        } catch {
            edgeMemory.releases.withLock { $0[key] = .init(checked: now, pattern: release.tagPattern, release: known) }
            return (known, (reason: "GitRemoteUnavailable", message: "Cannot list tags of \(meteor.spec.url): \(error)"))
        }
    }

    /// Creates the Application, or patches its spec and image annotation when they differ; never touches status.
    func ensureApplication(_ desired: JSONValue, meteor: Meteor, raw: JSONValue, target: Edge.Target) async throws {
        guard let applications else { return }
        let key = ObjectKey(desired)
        let api = client.dynamic(ArgoApplicationBuilder.resourceType, namespace: key.namespace)
        guard let current = recent.read(key, kind: ArgoApplicationBuilder.resourceType.kind, from: applications) else {
            do {
                recent.record(try await api.create(desired, params: WriteParams(fieldManager: "meteor-operator", fieldValidation: configuration.strictFieldValidation ? "Strict" : nil)))
                await events.record(raw, type: .normal, reason: "ApplicationCreated", message: "Created Argo CD Application \(key.namespace ?? "")/\(key.name) deploying \(ApplicationState(desired).pinnedImage ?? "") to \(target.cluster)")
            } catch let e as KubeError where e.isAlreadyExists {}
            return
        }
        guard current[path: "metadata", "labels", MeteorLabels.meteorUID] == desired[path: "metadata", "labels", MeteorLabels.meteorUID] else {
            await events.record(raw, type: .warning, reason: "ApplicationConflict", message: "Application \(key.name) exists and belongs to another Meteor; not touching it")
            return
        }
        let desiredSpec = desired["spec"] ?? .object([:])
        let image = desired[path: "metadata", "annotations", "meteor.zone/image"]
        if MergePatch.apply(desiredSpec, to: current["spec"] ?? .object([:])) != current["spec"] || current[path: "metadata", "annotations", "meteor.zone/image"] != image {
            recent.record(try await api.patch(key.name, .merge(["metadata": ["annotations": ["meteor.zone/image": image ?? .null]], "spec": desiredSpec]), params: WriteParams(fieldManager: "meteor-operator")))
            let before = ApplicationState(current)
            await events.record(raw, type: .normal, reason: "ApplicationUpdated", message: "Application \(key.name) now deploys \(image?.stringValue ?? "") (was \(before.pinnedImage ?? "nothing")) to \(target.cluster)")
        }
    }

    /// The Meteor's Applications, from the cache.
    func applicationsOf(_ meteor: Meteor, settings: EdgeSettings) -> [JSONValue] {
        guard let applications, let uid = meteor.metadata.uid else { return [] }
        return applications.store.list(namespace: settings.argocdNamespace, labelSelector: LabelSelector([.init(key: MeteorLabels.meteorUID, op: .equals, values: [uid])]))
    }

    /// Deletes Applications of targets no longer in the spec (all of them when `keep` is empty).
    func pruneApplications(_ meteor: Meteor, keep: Set<String>, settings: EdgeSettings) async throws {
        for app in applicationsOf(meteor, settings: settings) {
            guard let target = app[path: "metadata", "labels", MeteorLabels.target]?.stringValue, !keep.contains(target),
                app[path: "metadata", "deletionTimestamp"] == nil, let name = app[path: "metadata", "name"]?.stringValue else { continue }
            do {
                _ = try await client.dynamic(ArgoApplicationBuilder.resourceType, namespace: settings.argocdNamespace).delete(name, params: DeleteParams(preconditionUID: app[path: "metadata", "uid"]?.stringValue))
                recent.forget(kind: ArgoApplicationBuilder.resourceType.kind, ObjectKey(app))
            } catch let e as KubeError where e.isNotFound {}
        }
    }

    func deploymentStatus(_ meteor: Meteor, _ edge: Edge, settings: EdgeSettings) -> [EdgeDeploymentStatus] {
        guard let applications else { return [] }
        return edge.targets.compactMap { target in
            let key = ObjectKey(namespace: settings.argocdNamespace, name: ArgoApplicationBuilder.name(meteorNamespace: meteor.namespace ?? "default", meteor: meteor.name, target: target.name))
            guard let app = recent.read(key, kind: ArgoApplicationBuilder.resourceType.kind, from: applications),
                app[path: "metadata", "labels", MeteorLabels.meteorUID]?.stringValue == meteor.metadata.uid else { return nil }
            let state = ApplicationState(app)
            var d = EdgeDeploymentStatus(target: target.name, cluster: target.cluster, application: app[path: "metadata", "name"]?.stringValue ?? "")
            d.image = state.pinnedImage
            d.revision = state.revision
            d.syncStatus = state.syncStatus ?? "Unknown"
            d.healthStatus = state.healthStatus ?? "Unknown"
            // Argo CD's words, which can run long: a status holds a summary (the Application has the rest).
            d.message = state.message.map { ObjectHelpers.truncated($0, maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes) }
            return d
        }
    }
}

extension EdgeImageStatus {
    func withRun(_ run: String?) -> EdgeImageStatus {
        var copy = self
        copy.pipelineRunName = run
        return copy
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
