import Foundation
import KubeClient
import KubeModels

/// Verification of built edge images against the keys the cluster admin trusts (`EdgeTrustPolicy`), narrowed by
/// the Meteor's own key when it names one.
extension MeteorReconciler {
    /// What the trust policies in force say (from the cache; empty without edge delivery).
    var trust: EdgeTrust {
        let policies = trustPolicies?.store.list() ?? []
        return EdgeTrust(policies: policies)
    }

    /// The keys a signature of `image` may verify with: those trusted for its repository on the cluster of any target
    /// that runs it, narrowed to the Meteor's own key when it names one. Throws `EdgeConfigurationError` when none is
    /// left, saying why.
    func candidateKeys(_ image: Edge.Image, edge: Edge, placements: [EdgePlacement], meteor: Meteor, trust: EdgeTrust) async throws -> [TrustedKey] {
        let namespace = meteor.namespace ?? "default"
        let clusters = Array(Set(placements.filter { $0.target.image == image.name }.map(\.cluster))).sorted()
        var keys = trust.candidates(repository: image.repository, clusters: clusters, namespace: namespace)
        let scope = "\(image.repository) on \(clusters.isEmpty ? "no target" : clusters.joined(separator: ", ")) for namespace \(namespace)"
        if let ref = edge.signing.publicKeySecretRef {
            let own = try await signatureVerifier(ref, namespace: meteor.namespace)
            if trust.revoked.contains(own.fingerprint) {
                throw EdgeConfigurationError(
                    reason: "KeyRevoked", message: "the key in Secret \(ref.name) (\(own.fingerprint)) is revoked by an EdgeTrustPolicy")
            }
            keys = keys.filter { $0.fingerprint == own.fingerprint }
            if keys.isEmpty {
                throw EdgeConfigurationError(
                    reason: "KeyNotTrusted",
                    message:
                        "the key in Secret \(ref.name) (\(own.fingerprint)) is not trusted by any EdgeTrustPolicy for \(scope); the cluster admin decides which keys may sign"
                )
            }
        }
        if keys.isEmpty {
            throw EdgeConfigurationError(
                reason: "NoTrustPolicy",
                message: "no EdgeTrustPolicy trusts a key for \(scope)"
                    + (trust.unusable.isEmpty ? "" : " (unusable keys: \(trust.unusable.joined(separator: "; ")))"))
        }
        return keys
    }

    /// Verifies a built digest unless it was verified before with a key still trusted (same digest) or tried too
    /// recently. An earlier verification by a key the policies no longer trust counts for nothing: it is verified
    /// again with the keys trusted now.
    func verify(
        _ status: EdgeImageStatus, image: Edge.Image, earlier: EdgeImageStatus?, edge: Edge, placements: [EdgePlacement], meteor: Meteor,
        raw: JSONValue, settings: EdgeSettings, trust: EdgeTrust, now: Date
    ) async throws -> EdgeImageStatus {
        var status = status
        guard let pinned = status.pinnedReference else { return status }
        let keys: [TrustedKey]
        do {
            keys = try await candidateKeys(image, edge: edge, placements: placements, meteor: meteor, trust: trust)
        } catch let failure as EdgeConfigurationError {
            return await refuse(status, pinned: pinned, failure: failure, raw: raw)
        }
        let trusted = Set(keys.map(\.fingerprint))
        let memoryKey = "\(meteor.metadata.uid ?? "")/\(pinned)@\(status.commit ?? "")"
        if let earlier, earlier.digest == status.digest, earlier.repository == status.repository, earlier.commit == status.commit {
            if earlier.verified, let fingerprint = earlier.keyFingerprint, trusted.contains(fingerprint) {
                return earlier.withRun(status.pipelineRunName)
            }
            if !earlier.verified, edgeMemory.verified.withLock({ $0[memoryKey] }) == nil,
                let last = edgeMemory.verifications.withLock({ $0[memoryKey] }), now.timeIntervalSince(last) < settings.verificationRetry.seconds
            {
                var kept = earlier.withRun(status.pipelineRunName)
                kept.verified = false
                return kept
            }
        }
        if let fingerprint = edgeMemory.verified.withLock({ $0[memoryKey] }), trusted.contains(fingerprint) {
            status.verified = true
            status.keyFingerprint = fingerprint
            return status
        }
        edgeMemory.verifications.withLock { $0[memoryKey] = now }
        do {
            let (result, key) = try await fetchAndVerify(
                pinned, keys: keys, built: status.commit, signing: edge.signing, namespace: meteor.namespace, settings: settings)
            edgeMemory.verified.withLock { $0[memoryKey] = result.keyFingerprint }
            metrics?.verification("verified")
            status.verified = true
            status.keyFingerprint = result.keyFingerprint
            status.reason = nil
            status.message = nil
            await events.record(
                raw, type: .normal, reason: .imageVerified,
                message: "Verified the signature of \(pinned) with key \(key.label), \(result.keyFingerprint)")
        } catch let failure as SignatureFailure {
            metrics?.verification(failure.reason)
            status.reason = failure.reason
            status.message =
                keys.count > 1
                ? "\(failure.description) (tried \(keys.count) trusted keys: \(keys.map(\.label).joined(separator: ", ")))" : failure.description
            await events.record(
                raw, type: .warning, reason: "VerificationFailed",
                message: "\(pinned): \(failure.reason): \(status.message!); it will not be deployed")
        } catch let failure as EdgeConfigurationError {
            return await refuse(status, pinned: pinned, failure: failure, raw: raw)
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

    /// A signature that names a commit must name the one built: an image signed for another commit (an older build
    /// replayed as this one's) is refused, and where the key's policy requires it, one that names none.
    static func checkSignedCommit(_ payload: SimpleSigningPayload, built: String?, key: TrustedKey) throws {
        if let signed = payload.annotations[SimpleSigningPayload.commitAnnotation] {
            guard signed == built else {
                throw SignatureFailure.refusedClaims(
                    reason: "CommitMismatch",
                    message:
                        "the signature is for commit \(signed), but this build is of \(built ?? "an unknown commit"): an image built from another commit is not deployed as this one"
                )
            }
        } else if key.requiresSignedCommit {
            throw SignatureFailure.refusedClaims(
                reason: "CommitNotSigned",
                message:
                    "EdgeTrustPolicy \(key.policy) requires signatures to name the commit built (\(SimpleSigningPayload.commitAnnotation)); this one names none"
            )
        }
    }

    func refuse(_ status: EdgeImageStatus, pinned: String, failure: EdgeConfigurationError, raw: JSONValue) async -> EdgeImageStatus {
        var status = status
        metrics?.verification(failure.reason)
        status.verified = false
        status.keyFingerprint = nil
        status.reason = failure.reason
        status.message = failure.message
        await events.record(raw, type: .warning, reason: failure.reason, message: "\(pinned): \(failure.message); it will not be deployed")
        return status
    }

    /// Reads the signature of `pinned` once and verifies it with the first of `keys` that it verifies with, for the
    /// commit `built`.
    func fetchAndVerify(
        _ pinned: String, keys: [TrustedKey], built: String?, signing: Edge.Signing, namespace: String?, settings: EdgeSettings
    ) async throws -> (SignatureVerifier.Verified, TrustedKey) {
        let reference = try RegistryClient.Reference(parsing: pinned)
        let registry = registryClient(for: reference, credentials: try await pullCredentials(signing, namespace: namespace), settings: settings)
        let signature = try await SignatureVerifier.fetchSignature(image: reference, registry: registry)
        var failure: SignatureFailure = .missingSignature("no trusted key")
        for key in keys {
            do {
                let verified = try await key.verifier.verify(
                    signatureManifest: signature.manifest, digest: signature.digest, repository: reference.repositoryReference,
                    accept: { try Self.checkSignedCommit($0, built: built, key: key) }
                ) { try await signature.blob($0) }
                return (verified, key)
            } catch let f as SignatureFailure {
                failure = f
            }
        }
        throw failure
    }

    struct EdgeConfigurationError: Error {
        var reason: String
        var message: String
    }

    func secret(_ name: String, namespace: String?, purpose: String) async throws -> Secret {
        do {
            return try await client.api(Secret.self, namespace: namespace).get(name)
        } catch let e as KubeError where e.isNotFound {
            throw EdgeConfigurationError(
                reason: "SecretNotFound", message: "Secret \(name) (\(purpose)) does not exist in namespace \(namespace ?? "default")")
        } catch let e as KubeError where e.code == 403 {
            throw EdgeConfigurationError(
                reason: "SecretForbidden",
                message:
                    "the operator may not read Secret \(name) (\(purpose)) in namespace \(namespace ?? "default"): bind the ClusterRole meteor-operator-secret-reader there (config/rbac/secret_reader_role.yaml)"
            )
        }
    }

    /// The Meteor's own key (a narrowing of what the policies trust).
    func signatureVerifier(_ ref: Edge.SecretKeyRef, namespace: String?) async throws -> SignatureVerifier {
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
            throw EdgeConfigurationError(
                reason: "InvalidPullSecret", message: "Secret \(name) is not a kubernetes.io/dockerconfigjson Secret (no .dockerconfigjson key)")
        }
        return RegistryClient.credentials(dockerConfigJSON: Array(config))
    }

    /// Why a target's other images (`targets[].images`, by digest) may not be deployed to its cluster, or nil when
    /// each verifies with a key trusted for its repository there. Verifications are remembered per Meteor, image and
    /// cluster until the trust policies change what they trust.
    func extraImagesProblem(_ placement: EdgePlacement, edge: Edge, meteor: Meteor, trust: EdgeTrust, settings: EdgeSettings) async -> String? {
        let namespace = meteor.namespace ?? "default"
        let cluster = placement.cluster
        for extra in placement.target.images ?? [] {
            let repository = SignatureVerifier.repositoryPart(extra)
            let keys = trust.keys(repository: repository, cluster: cluster, namespace: namespace)
            guard !keys.isEmpty else { return "\(extra): no EdgeTrustPolicy trusts a key for \(repository) on \(cluster)" }
            let memoryKey = "\(meteor.metadata.uid ?? "")/extra/\(cluster)/\(extra)"
            if let fingerprint = edgeMemory.verified.withLock({ $0[memoryKey] }), keys.contains(where: { $0.fingerprint == fingerprint }) { continue }
            do {
                // Not built here: no commit to hold its signature to.
                let (result, _) = try await fetchAndVerify(
                    extra, keys: keys, built: nil, signing: edge.signing, namespace: meteor.namespace, settings: settings)
                edgeMemory.verified.withLock { $0[memoryKey] = result.keyFingerprint }
            } catch let failure as SignatureFailure {
                return "\(extra): \(failure.reason): \(failure.description)"
            } catch {
                return "\(extra): \(error)"
            }
        }
        return nil
    }

    /// Images Argo CD reports an Application's resources running that it was not given pinned and verified: the
    /// manifests run something the operator never checked. Tags or digests other than the pinned ones count. Judged
    /// only on a report about the spec as it is (Synced, compared to this source): until Argo CD has synced a new
    /// image, it still reports the old one running.
    static func unpinnedImages(_ app: JSONValue) -> [String] {
        let state = ApplicationState(app)
        guard state.comparedToSpec, state.syncStatus == "Synced" else { return [] }
        let given = Set(ArgoApplicationBuilder.pinnedImages(app))
        return state.runningImages.filter { !given.contains($0) }
    }
}

extension MeteorReconciler {
    /// A succeeded run must report a digest of an image in the configured repository, and the commit it built: the
    /// release tag's when it built a release (a tag moved between listing and cloning is not believed).
    static func builtImageProblem(
        _ state: PipelineRunState, image: Edge.Image, build: EdgeBuild, runName: String
    ) -> (reason: String, message: String)? {
        guard let digest = state.results["IMAGE_DIGEST"], PipelineRunState.isDigest(digest) else {
            return ("BuildResultMissing", PipelineRunState.missingDigestMessage(runName))
        }
        if let release = build.release?.commit, let reported = state.results["COMMIT"], FollowedRefs.isCommit(reported), reported != release {
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
}
