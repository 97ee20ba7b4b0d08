import Crypto
import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// Edge delivery end to end: the operator on the embedded API server, a real OCI registry (Debian's
/// docker-registry) holding cosign-format signatures, and for releases a real git remote (`git http-backend`).
/// The tests play Tekton (PipelineRun status and results) and Argo CD (Application sync and health).
@Suite(.serialized) struct EdgeDeliveryTests {
    static let needsRegistry = Testing.ConditionTrait.enabled(
        if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed (hack/test installs it)")

    /// A registry on a free loopback port, a signing key, and the Secret holding its public half.
    struct Fixture {
        let registry: LocalRegistry
        let client: RegistryClient
        let signer = CosignSigner()
        var address: String { registry.address }

        /// Pushes an image for `platform`, signs it with `signer` (or not), returns its digest.
        func image(_ repository: String, tag: String, platform: String, content: String, signedBy signer: CosignSigner?) async throws -> String {
            let repo = try RegistryClient.Reference(parsing: "\(address)/\(repository)")
            let digest = try await client.pushImage(repo, tag: tag, platform: platform, content: content)
            if let signer { try await client.push(try signer.sign(digest: digest, dockerReference: "\(address)/\(repository):\(tag)"), to: repo) }
            return digest
        }

        /// The DonkeyCar sample as shipped (`config/samples/meteor_edge_donkeycar.yaml`), its images pointed at this
        /// registry and built from its ref (no release), in `namespace`.
        func donkeycarSample(namespace: String) throws -> JSONValue {
            var sample = try YAML.parse(
                String(
                    contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("config/samples/meteor_edge_donkeycar.yaml"), encoding: .utf8))
            sample[path: "spec", "edge", "images"] = .array(
                (sample[path: "spec", "edge", "images"]?.arrayValue ?? []).map { image in
                    var image = image
                    image["repository"] = .string(
                        image["repository"]!.stringValue!.replacingOccurrences(of: "quay.io/thoth-station", with: "\(address)/meteor"))
                    return image
                })
            sample[path: "spec", "edge", "release"] = nil
            sample[path: "metadata", "namespace"] = .string(namespace)
            return sample
        }

        func sign(_ repository: String, digest: String) async throws {
            let repo = try RegistryClient.Reference(parsing: "\(address)/\(repository)")
            try await client.push(try signer.sign(digest: digest, dockerReference: "\(address)/\(repository)"), to: repo)
        }
    }

    static func withEdge(
        on backend: Backend = .embedded, edge configure: (inout EdgeSettings) -> Void = { _ in },
        _ body: (MeteorEnvironment, Fixture) async throws -> Void
    ) async throws {
        #expect(LocalRegistry.isInstalled, "CI must install docker-registry")
        let registry = try await LocalRegistry(port: nil)
        let fixture = Fixture(registry: registry, client: RegistryClient(insecure: true, egress: .unrestricted))
        do {
            try await MeteorEnvironment.with(
                on: backend,
                configure: { c in
                    // Repositories come from git http-backend on loopback, as from an allowed in-house git server.
                    c.egress = .loopbackFixtures
                    var edge = EdgeSettings()
                    edge.insecureRegistries = [registry.address]
                    edge.verificationRetry = .milliseconds(200)
                    edge.defaultReleaseInterval = 1
                    edge.minimumReleaseInterval = 1
                    configure(&edge)
                    c.edge = edge
                }
            ) { env in
                let secrets = env.client.api(Secret.self, namespace: env.namespace)
                _ = try await secrets.create(
                    Secret(
                        metadata: ObjectMeta(name: "cosign-pub", namespace: env.namespace), stringData: ["cosign.pub": fixture.signer.publicKeyPEM]))
                // The cluster admin trusts the fixture's key for the fixture registry's images, on every cluster.
                try await env.cluster.trust(publicKeyPEM: fixture.signer.publicKeyPEM, images: ["\(registry.address)/*"])
                try await body(env, fixture)
            }
        } catch {
            registry.stop()
            throw error
        }
        registry.stop()
    }

    static func donkeycar(_ edge: Edge) throws -> JSONValue {
        try JSONValue(
            encoding: Meteor(
                metadata: ObjectMeta(name: "donkeycar", namespace: "default"),
                spec: .init(url: "https://github.com/thoth-station/donkeycar-edge", ref: "main", pipelines: ["edge"], edge: edge)))
    }

    /// The DonkeyCar sample through the build (played on the embedded server; real Tekton and the fake kubelet on
    /// the real one, the buildah step reporting what the test pushed), the operator's verification against the real
    /// registry, Applications pinned by digest, and Argo CD's status (played on both) back to Ready.
    @Test(needsRegistry, arguments: Backend.testable) func theDonkeyCarIsVerifiedAndDeployedOnBothBackends(_ backend: Backend) async throws {
        try await Self.withEdge(on: backend) { env, f in
            let c = env.cluster
            // One image content for both architectures, so one digest serves as the build's result on both runs.
            let digest = try await f.image("meteor/donkeycar", tag: "g1", platform: "linux/arm64", content: "car", signedBy: f.signer)
            _ = try await f.image("meteor/donkeycar-twin", tag: "g1", platform: "linux/arm64", content: "car", signedBy: f.signer)
            let commit = TestCluster.commit(of: "main")
            if let kit = c.kit {
                // What buildah would report: the pushed image and its digest (the fake kubelet's result knobs); what
                // the clone would: the commit it checked out.
                let patch =
                    #"[{"op":"add","path":"/spec/steps/0/env/-","value":{"name":"FAKE_RESULT_IMAGE_URL","value":"$(params.image)"}},"#
                    + #"{"op":"add","path":"/spec/steps/0/env/-","value":{"name":"FAKE_RESULT_IMAGE_DIGEST","value":"\#(digest)"}}]"#
                try await kit.kubectlOK("-n", c.namespace, "patch", "task", "meteor-buildah", "--type=json", "-p", patch)
                try await kit.kubectlOK(
                    "-n", c.namespace, "patch", "task", "meteor-git-clone", "--type=json", "-p",
                    #"[{"op":"add","path":"/spec/steps/0/env/-","value":{"name":"FAKE_RESULT_commit","value":"\#(commit)"}}]"#)
            }
            let sample = try f.donkeycarSample(namespace: c.namespace)
            _ = try await c.meteors.create(sample, params: WriteParams(fieldValidation: .strict))
            let build = EdgeBuild(ref: "main", release: nil, generation: 1)
            for (image, repository) in [("car", "donkeycar"), ("twin", "donkeycar-twin")] {
                let run = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: image, build: build)
                _ = try await c.waitFor(c.runs, run) { $0 != nil }
                if c.kit == nil {
                    try await c.tekton(run, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/\(repository):g1", "IMAGE_DIGEST": digest])
                }
            }
            let verified: JSONValue?
            do {
                verified = try await c.waitFor(c.meteors, "donkeycar", timeout: .seconds(90)) { condition($0, "ImagesVerified")?["status"] == "True" }
            } catch {
                let meteor = try? await c.meteors.get("donkeycar")
                let runs = (try? await c.runs.list().items) ?? []
                let taskRuns =
                    (try? await c.client.dynamic(
                        ResourceType(group: "tekton.dev", version: "v1", kind: "TaskRun", plural: "taskruns", namespaced: true),
                        namespace: c.namespace
                    ).list().items) ?? []
                let failedSteps = taskRuns.map {
                    "\($0[path: "metadata", "name"] ?? .null): \(($0[path: "status", "conditions"]?.arrayValue?.first).map { $0.serializedString() } ?? "-")"
                }
                Issue.record("not verified: \(meteor?["status"]?.serializedString() ?? "-")\nruns: \(runs.count)\ntask runs: \(failedSteps)")
                throw error
            }
            #expect((verified?[path: "status", "images"]?.arrayValue ?? []).allSatisfy { $0["verified"] == true && $0["digest"] == .string(digest) })
            // Each build runs on a node of its image's architecture: the car's on arm64, the twin's on amd64 (on
            // the real control plane, as Tekton made the build's Pod from the run's taskRunSpecs).
            for (image, arch) in [("car", "arm64"), ("twin", "amd64")] {
                let name = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: image, build: build)
                let run = try await c.runs.get(name)
                #expect(
                    run[path: "spec", "taskRunSpecs"] == [
                        ["pipelineTaskName": "image", "podTemplate": ["nodeSelector": ["kubernetes.io/arch": .string(arch)]]]
                    ])
                if c.kit != nil {
                    let pods = try await c.client.dynamic(
                        ResourceType(group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true), namespace: c.namespace
                    )
                    .list(ListOptions(labelSelector: "tekton.dev/pipelineRun=\(name),tekton.dev/pipelineTask=image")).items
                    #expect(
                        pods.count == 1 && pods.allSatisfy { $0[path: "spec", "nodeSelector", "kubernetes.io/arch"] == .string(arch) },
                        "\(pods.map { $0[path: "spec", "nodeSelector"] ?? .null })")
                }
            }
            for (target, repository) in [("rpi", "donkeycar"), ("nuc", "donkeycar-twin")] {
                let app = ArgoApplicationBuilder.name(meteorNamespace: c.namespace, meteor: "donkeycar", target: target)
                let created = try #require(try await c.waitFor(c.applications, app) { $0 != nil })
                #expect(
                    created[path: "spec", "source", "kustomize", "images"] == [
                        .string("\(f.address)/meteor/\(repository)=\(f.address)/meteor/\(repository)@\(digest)")
                    ])
                // The commit the image was built from, reported by the clone through the Pipeline's COMMIT: never the branch.
                #expect(created[path: "spec", "source", "targetRevision"] == .string(commit))
                try await c.argo(app, sync: "Synced", health: "Healthy")
            }
            let ready = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "Ready")?["status"] == "True" }
            #expect(
                (ready?[path: "status", "deployments"]?.arrayValue ?? []).allSatisfy {
                    $0["syncStatus"] == "Synced" && $0["healthStatus"] == "Healthy"
                })
            // Deleting the Meteor deletes its Applications in Argo CD's namespace (the finalizer), then the Meteor goes.
            try await c.meteors.delete("donkeycar")
            _ = try await c.waitFor(c.meteors, "donkeycar", timeout: .seconds(60)) { $0 == nil }
            for target in ["rpi", "nuc"] {
                let app = ArgoApplicationBuilder.name(meteorNamespace: c.namespace, meteor: "donkeycar", target: target)
                let gone = try await c.waitFor(c.applications, app, timeout: .seconds(60)) {
                    $0 == nil || $0?[path: "metadata", "deletionTimestamp"] != nil
                }
                #expect(gone == nil || gone?[path: "metadata", "deletionTimestamp"] != nil)
            }
        }
    }

    /// Two platforms built into one repository: each build pushed the tag for its own platform (the last push
    /// won it), so once both are verified the operator publishes an OCI image index there listing both, read back
    /// from the real registry. Deployments still pin each device's own digest.
    @Test(needsRegistry) func imagesOfOneRepositoryArePublishedAsOneIndexOnceVerified() async throws {
        try await Self.withEdge { env, f in
            let c = env.cluster
            let arm = try await f.image("meteor/car", tag: "g1", platform: "linux/arm64", content: "car arm64", signedBy: f.signer)
            let amd = try await f.image("meteor/car", tag: "g1", platform: "linux/amd64", content: "car amd64", signedBy: f.signer)
            let repository = "\(f.address)/meteor/car"
            let edge = Edge(
                images: [
                    .init(name: "car", dockerfile: "Dockerfile", platform: "linux/arm64", repository: repository),
                    .init(name: "twin", dockerfile: "Dockerfile", platform: "linux/amd64", repository: repository),
                ],
                signing: .init(publicKeySecretRef: .init(name: "cosign-pub")),
                targets: [
                    .init(name: "rpi", cluster: "microshift-rpi", image: "car", path: "deploy/car", namespace: "donkeycar"),
                    .init(name: "nuc", cluster: "microshift-nuc", image: "twin", path: "deploy/twin", namespace: "donkeycar"),
                ])
            var meteor = try Self.donkeycar(edge)
            meteor[path: "metadata", "namespace"] = .string(c.namespace)
            _ = try await c.meteors.create(meteor, params: WriteParams(fieldValidation: .strict))
            let build = EdgeBuild(ref: "main", release: nil, generation: 1)
            for (image, digest) in [("car", arm), ("twin", amd)] {
                let run = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: image, build: build)
                _ = try await c.waitFor(c.runs, run) { $0 != nil }
                try await c.tekton(run, .succeeded, results: ["IMAGE_URL": "\(repository):g1", "IMAGE_DIGEST": digest])
            }
            let published = try await c.waitFor(c.meteors, "donkeycar") { $0?[path: "status", "imageIndexes"]?.arrayValue?.first?["digest"] != nil }
            let entry = try #require(published?[path: "status", "imageIndexes"]?.arrayValue?.first)
            #expect(entry["reference"] == .string("\(repository):g1"))
            #expect(
                entry["manifests"] == [["platform": "linux/amd64", "digest": .string(amd)], ["platform": "linux/arm64", "digest": .string(arm)]])

            let stored = try await f.client.manifest(try RegistryClient.Reference(parsing: repository), reference: "g1")
            #expect(.string(stored.digest) == entry["digest"], "the tag now names the index the status reports")
            #expect(stored.mediaType == RegistryClient.imageIndexType)
            let index = try JSONValue.parse(stored.bytes)
            let listed = (index["manifests"]?.arrayValue ?? []).map {
                "\($0[path: "platform", "architecture"]?.stringValue ?? "?")=\($0["digest"]?.stringValue ?? "?")"
            }
            #expect(Set(listed) == ["arm64=\(arm)", "amd64=\(amd)"], "\(index.serializedString())")
            for m in index["manifests"]?.arrayValue ?? [] {
                let child = try await f.client.manifest(try RegistryClient.Reference(parsing: repository), reference: m["digest"]!.stringValue!)
                #expect(m["size"] == .int(Int64(child.bytes.count)) && m["mediaType"] == child.mediaType.map(JSONValue.string))
            }
            let event = try await c.waitForEvent(about: "donkeycar", reason: "ImageIndexPublished")
            #expect(event?["message"] == .string("Published \(repository):g1@\(stored.digest) for linux/amd64, linux/arm64"))
            for (target, digest) in [("rpi", arm), ("nuc", amd)] {
                let app = ArgoApplicationBuilder.name(meteorNamespace: c.namespace, meteor: "donkeycar", target: target)
                let created = try #require(try await c.waitFor(c.applications, app) { $0 != nil })
                #expect(created[path: "spec", "source", "kustomize", "images"] == [.string("\(repository)=\(repository)@\(digest)")])
            }
            // One platform per image and repository: a second arm64 image into it is refused by name.
            var clash = edge
            clash.images.append(.init(name: "spare", dockerfile: "Dockerfile", platform: "linux/arm64", repository: repository))
            #expect(
                SpecValidation.problems(Meteor.Spec(url: "https://x/y", ref: "main", pipelines: ["edge"], edge: clash)).map(\.message).contains {
                    $0.hasPrefix("images \"car\" and \"spare\" push linux/arm64 to the same repository")
                })
        }
    }

    @Test(needsRegistry) func signedImagesAreDeployedPinnedByDigestAndArgoStatusFlowsBack() async throws {
        try await Self.withEdge { env, f in
            let c = env.cluster
            let carDigest = try await f.image("meteor/donkeycar", tag: "g1", platform: "linux/arm64", content: "car", signedBy: f.signer)
            let twinDigest = try await f.image("meteor/donkeycar-twin", tag: "g1", platform: "linux/amd64", content: "twin", signedBy: f.signer)
            let sample = try f.donkeycarSample(namespace: "default")
            _ = try await c.meteors.create(sample, params: WriteParams(fieldValidation: .strict))

            let build = EdgeBuild(ref: "main", release: nil, generation: 1)
            let carRun = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "car", build: build)
            let twinRun = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "twin", build: build)
            let run = try #require(try await c.waitFor(c.runs, carRun) { $0 != nil })
            let params = Dictionary(
                uniqueKeysWithValues: (run[path: "spec", "params"]?.arrayValue ?? []).map { ($0["name"]!.stringValue!, $0["value"]!.stringValue!) })
            #expect(
                params["platform"] == "linux/arm64" && params["dockerfile"] == "Dockerfile.donkey.arm64"
                    && params["image"] == "\(f.address)/meteor/donkeycar:g1")
            #expect(run[path: "spec", "pipelineRef", "name"] == "meteor-edge-image")
            _ = try await c.waitFor(c.runs, twinRun) { $0 != nil }
            var meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesBuilt")?["reason"] == "Building" }
            #expect(meteor?[path: "status", "phase"] == "Building")
            #expect(
                meteor?[path: "metadata", "finalizers"] == ["meteor.zone/cleanup"], "Applications in argocd are cleaned up before the Meteor goes")

            try await c.tekton(carRun, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar:g1", "IMAGE_DIGEST": carDigest])
            try await c.tekton(twinRun, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar-twin:g1", "IMAGE_DIGEST": twinDigest])
            meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["status"] == "True" }
            let images = meteor?[path: "status", "images"]?.arrayValue ?? []
            #expect(
                images.count == 2
                    && images.allSatisfy {
                        $0["verified"] == true
                            && $0["keyFingerprint"]?.stringValue == SignatureVerifier.digest(Array(f.signer.key.publicKey.derRepresentation))
                    })

            let rpi = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "donkeycar", target: "rpi")
            let nuc = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "donkeycar", target: "nuc")
            let rpiApp = try #require(try await c.waitFor(c.applications, rpi) { $0 != nil })
            #expect(
                rpiApp[path: "spec", "source", "kustomize", "images"] == [
                    .string("\(f.address)/meteor/donkeycar=\(f.address)/meteor/donkeycar@\(carDigest)")
                ])
            #expect(rpiApp[path: "spec", "destination"] == ["name": "microshift-rpi", "namespace": "donkeycar"])
            #expect(rpiApp[path: "spec", "source", "targetRevision"] == .string(TestCluster.commit(of: "main")), "the commit built, not the branch")
            #expect(rpiApp[path: "spec", "source", "path"] == "deploy/car")
            let nucApp = try #require(try await c.waitFor(c.applications, nuc) { $0 != nil })
            #expect(
                nucApp[path: "spec", "source", "kustomize", "images"] == [
                    .string("\(f.address)/meteor/donkeycar-twin=\(f.address)/meteor/donkeycar-twin@\(twinDigest)")
                ])
            meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "Deployed")?["reason"] == "Progressing" }
            #expect(condition(meteor, "Ready")?["status"] == "False")

            // Argo CD syncs: OutOfSync/Progressing, then Synced/Healthy on both devices.
            try await c.argo(rpi, sync: "OutOfSync", health: "Progressing")
            try await c.argo(nuc, sync: "Synced", health: "Healthy")
            meteor = try await c.waitFor(c.meteors, "donkeycar") { m in
                (m?[path: "status", "deployments"]?.arrayValue ?? []).contains { $0["syncStatus"] == "OutOfSync" }
            }
            #expect(condition(meteor, "Deployed")?["status"] == "Unknown")
            try await c.argo(rpi, sync: "Synced", health: "Healthy")
            meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "Ready")?["status"] == "True" }
            #expect(meteor?[path: "status", "phase"] == "Ready")
            let deployments = meteor?[path: "status", "deployments"]?.arrayValue ?? []
            #expect(deployments.count == 2)
            #expect(deployments.first { $0["target"] == "rpi" }?["image"] == .string("\(f.address)/meteor/donkeycar@\(carDigest)"))
            #expect(deployments.allSatisfy { $0["syncStatus"] == "Synced" && $0["healthStatus"] == "Healthy" })
            // The operator's own cache has seen that status too (the metrics follow its informer).
            try await env.reconciler.meteors.waitUntil {
                MeteorMetrics.deploymentHealth($0.get(ObjectKey(namespace: "default", name: "donkeycar")) ?? [:]) == ["Healthy", "Healthy"]
            }
            let metrics = env.manager.metrics.render()
            #expect(metrics.contains(#"meteor_signature_verifications_total{result="verified"} 2"#), "\(metrics)")
            #expect(metrics.contains(#"meteor_edge_deployments{health="Healthy"} 2.0"#), "\(metrics)")

            // A device going Degraded is reported, with Argo's message.
            try await c.argo(nuc, sync: "Synced", health: "Degraded", message: "Deployment donkeycar-twin has 0 ready replicas")
            meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "Deployed")?["status"] == "False" }
            #expect(condition(meteor, "Deployed")?["message"]?.stringValue?.contains("0 ready replicas") == true)
            #expect(meteor?[path: "status", "phase"] == "Failed")

            // Deleting the Meteor deletes its Applications (Argo CD's own finalizer then cleans the devices).
            _ = try await c.meteors.delete("donkeycar")
            _ = try await c.waitFor(c.meteors, "donkeycar") { $0 == nil }
            for app in [rpi, nuc] {
                let gone = try await c.waitFor(c.applications, app) { $0 == nil || $0?[path: "metadata", "deletionTimestamp"] != nil }
                #expect(gone?[path: "metadata", "finalizers"] == [.string(ArgoApplicationBuilder.resourcesFinalizer)])
            }
        }
    }

    @Test(needsRegistry) func aBadSignatureBlocksDeploymentWithAPreciseConditionUntilAGoodOneArrives() async throws {
        try await Self.withEdge { env, f in
            let c = env.cluster
            let edge = donkeycarEdge(registry: f.address)
            let intruder = CosignSigner()
            let carDigest = try await f.image("meteor/donkeycar", tag: "g1", platform: "linux/arm64", content: "car", signedBy: f.signer)
            let twinDigest = try await f.image("meteor/donkeycar-twin", tag: "g1", platform: "linux/amd64", content: "twin", signedBy: intruder)
            _ = try await c.meteors.create(try Self.donkeycar(edge))
            let build = EdgeBuild(ref: "main", release: nil, generation: 1)
            let carRun = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "car", build: build)
            let twinRun = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "twin", build: build)
            _ = try await c.waitFor(c.runs, twinRun) { $0 != nil }
            try await c.tekton(carRun, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar:g1", "IMAGE_DIGEST": carDigest])
            try await c.tekton(twinRun, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar-twin:g1", "IMAGE_DIGEST": twinDigest])

            let meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["status"] == "False" }
            let verified = try #require(condition(meteor, "ImagesVerified"))
            #expect(verified["reason"] == "SignatureInvalid")
            #expect(verified["message"]?.stringValue?.contains("twin (\(f.address)/meteor/donkeycar-twin@\(twinDigest))") == true)
            #expect(condition(meteor, "Ready")?["reason"] == "SignatureInvalid")
            #expect(meteor?[path: "status", "phase"] == "Failed")
            let twin = (meteor?[path: "status", "images"]?.arrayValue ?? []).first { $0["name"] == "twin" }
            #expect(twin?["verified"] == false && twin?["reason"] == "SignatureInvalid")
            let events = try await c.client.dynamic(Event.resourceType, namespace: "default").list(
                ListOptions(fieldSelector: "involvedObject.name=donkeycar,reason=VerificationFailed"))
            #expect(events.items.contains { $0["type"] == "Warning" && $0["message"]?.stringValue?.contains(twinDigest) == true })

            // The verified car image is deployed; the twin's unverified digest is not.
            let rpi = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "donkeycar", target: "rpi")
            let nuc = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "donkeycar", target: "nuc")
            _ = try await c.waitFor(c.applications, rpi) { $0 != nil }
            #expect(try await c.applications.list().items.compactMap { $0[path: "metadata", "name"]?.stringValue } == [rpi])

            // The right key signs it (as Tekton Chains might, late): the retry verifies and deploys it.
            try await f.sign("meteor/donkeycar-twin", digest: twinDigest)
            let app = try #require(try await c.waitFor(c.applications, nuc) { $0 != nil })
            #expect(app[path: "metadata", "annotations", "meteor.zone/image"] == .string("\(f.address)/meteor/donkeycar-twin@\(twinDigest)"))
            _ = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["status"] == "True" }
        }
    }

    @Test(needsRegistry) func unsignedAndWronglyReportedImagesAreRefusedWithTheirReasons() async throws {
        try await Self.withEdge { env, f in
            let c = env.cluster
            var edge = donkeycarEdge(registry: f.address)
            edge.images.removeLast()
            edge.targets.removeLast()
            let carDigest = try await f.image("meteor/donkeycar", tag: "g1", platform: "linux/arm64", content: "car", signedBy: nil)
            _ = try await c.meteors.create(try Self.donkeycar(edge))
            let carRun = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "car", build: EdgeBuild(ref: "main", release: nil, generation: 1))
            _ = try await c.waitFor(c.runs, carRun) { $0 != nil }
            // A pipeline that claims to have pushed somewhere else is not believed.
            try await c.tekton(carRun, .succeeded, results: ["IMAGE_URL": "\(f.address)/elsewhere/car:g1", "IMAGE_DIGEST": carDigest])
            var meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["status"] == "False" }
            #expect(condition(meteor, "ImagesVerified")?["reason"] == "RepositoryMismatch")
            // Spec change → generation 2 → a new run, which reports honestly, but nothing signed the image.
            _ = try await c.meteors.patch("donkeycar", .merge(["spec": ["ref": "v2"]]))
            let second = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "car", build: EdgeBuild(ref: "v2", release: nil, generation: 2))
            _ = try await c.waitFor(c.runs, second) { $0 != nil }
            try await c.tekton(second, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar:g2", "IMAGE_DIGEST": carDigest])
            meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["reason"] == "SignatureMissing" }
            #expect(try await c.applications.list().items.isEmpty)
            // A missing key Secret is named.
            _ = try await c.client.api(Secret.self, namespace: "default").delete("cosign-pub")
            try await f.sign("meteor/donkeycar", digest: carDigest)
            meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["reason"] == "SecretNotFound" }
            #expect(condition(meteor, "ImagesVerified")?["message"]?.stringValue?.contains("cosign-pub") == true)
            #expect(try await c.applications.list().items.isEmpty)
        }
    }

    /// A new tag on the remote starts a new build chain; the running release stays deployed until the new
    /// images verify.
    @Test(needsRegistry, .enabled(if: GitHTTPServer.isInstalled, "git http-backend is not installed"))
    func aNewTagStartsANewChainAndTheOldReleaseStaysUntilTheNewOneVerifies() async throws {
        let git = try await GitHTTPServer.start()
        do {
            try await git.createRepository("donkeycar")
            let v1 = try await git.tag("donkeycar", "v1.0.0")
            try await Self.withEdge { env, f in
                let c = env.cluster
                let edge = donkeycarEdge(registry: f.address, release: Edge.Release(tagPattern: "v*"))
                var body = try Self.donkeycar(edge)
                body[path: "spec", "url"] = .string(git.url("donkeycar"))
                _ = try await c.meteors.create(body)

                let b1 = EdgeBuild(ref: "v1.0.0", release: EdgeRelease(tag: "v1.0.0", commit: v1), generation: 1)
                var digests: [String: String] = [:]
                for (image, platform) in [("car", "linux/arm64"), ("twin", "linux/amd64")] {
                    let repo = image == "car" ? "meteor/donkeycar" : "meteor/donkeycar-twin"
                    let run = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: image, build: b1)
                    let created = try #require(try await c.waitFor(c.runs, run) { $0 != nil })
                    #expect((created[path: "spec", "params"]?.arrayValue ?? []).contains { $0["name"] == "ref" && $0["value"] == "v1.0.0" })
                    digests[image] = try await f.image(repo, tag: "v1.0.0", platform: platform, content: "\(image) 1", signedBy: f.signer)
                    try await c.tekton(run, .succeeded, results: ["IMAGE_URL": "\(f.address)/\(repo):v1.0.0", "IMAGE_DIGEST": digests[image]!])
                }
                let rpi = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "donkeycar", target: "rpi")
                let nuc = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "donkeycar", target: "nuc")
                for app in [rpi, nuc] {
                    let a = try #require(try await c.waitFor(c.applications, app) { $0 != nil })
                    #expect(a[path: "spec", "source", "targetRevision"] == .string(v1))
                    try await c.argo(app, sync: "Synced", health: "Healthy")
                }
                var meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "Ready")?["status"] == "True" }
                #expect(meteor?[path: "status", "release"] == ["tag": "v1.0.0", "commit": .string(v1)])

                // v1.1.0 is tagged: the operator notices on its next check and builds it.
                try await git.commit("donkeycar", files: ["model.py": "speed = 2\n"], message: "faster")
                let v2 = try await git.tag("donkeycar", "v1.1.0")
                let b2 = EdgeBuild(ref: "v1.1.0", release: EdgeRelease(tag: "v1.1.0", commit: v2), generation: 1)
                let carRun2 = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "car", build: b2)
                let twinRun2 = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: "twin", build: b2)
                _ = try await c.waitFor(c.runs, carRun2) { $0 != nil }
                _ = try await c.waitFor(c.runs, twinRun2) { $0 != nil }
                meteor = try await c.waitFor(c.meteors, "donkeycar") { $0?[path: "status", "release", "tag"] == "v1.1.0" }

                // The twin's new image verifies, the car's has no signature yet: only the twin moves on.
                let car2 = try await f.image("meteor/donkeycar", tag: "v1.1.0", platform: "linux/arm64", content: "car 2", signedBy: nil)
                let twin2 = try await f.image("meteor/donkeycar-twin", tag: "v1.1.0", platform: "linux/amd64", content: "twin 2", signedBy: f.signer)
                try await c.tekton(carRun2, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar:v1.1.0", "IMAGE_DIGEST": car2])
                try await c.tekton(twinRun2, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/donkeycar-twin:v1.1.0", "IMAGE_DIGEST": twin2])
                _ = try await c.waitFor(c.applications, nuc) { $0?[path: "spec", "source", "targetRevision"] == .string(v2) }
                meteor = try await c.waitFor(c.meteors, "donkeycar") { condition($0, "ImagesVerified")?["reason"] == "SignatureMissing" }
                let carApp = try await c.applications.get(rpi)
                #expect(carApp[path: "spec", "source", "targetRevision"] == .string(v1), "the car keeps running v1.0.0")
                #expect(carApp[path: "metadata", "annotations", "meteor.zone/image"] == .string("\(f.address)/meteor/donkeycar@\(digests["car"]!)"))

                // Signed: the car moves to v1.1.0 too.
                try await f.sign("meteor/donkeycar", digest: car2)
                let moved = try await c.waitFor(c.applications, rpi) { $0?[path: "spec", "source", "targetRevision"] == .string(v2) }
                #expect(moved?[path: "metadata", "annotations", "meteor.zone/image"] == .string("\(f.address)/meteor/donkeycar@\(car2)"))
            }
        } catch {
            await git.stop()
            throw error
        }
        await git.stop()
    }
}
