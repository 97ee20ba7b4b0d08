import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Logging
import MeteorCore
import MeteorSandbox
import ServiceLifecycle

/// A cluster with the operator's Meteor CRD and Tekton's PipelineRun CRD, and the operator running.
///
/// On `.embedded` it is an embedded server of its own; Tekton is played by the test (`TestCluster.tekton`) or, with
/// `tekton: true`, by the sandbox's Tekton simulator. On `.real` it is a namespace of the kit's kube-apiserver with
/// the real Tekton controller, the kit's fake kubelet and `manifests/tekton` installed in it; the operator watches
/// only that namespace (other tests share the server).
public final class MeteorEnvironment: Sendable {
    public let cluster: TestCluster
    public let manager: Manager
    public let reconciler: MeteorReconciler
    /// The Meteor controller (its work queue).
    public let controller: Controller<JSONValue>
    /// The CustomRuntimeEnvironment reconciler (absent with the Go operator's CRD, which has no such resource here).
    public let runtimeEnvironments: RuntimeEnvironmentReconciler?
    /// The operator's own client, when it has one (`clientOptions`); shut down with the environment.
    let ownClient: KubeClient?
    let group: ServiceGroup
    let task: Task<Void, any Error>

    public var client: KubeClient { cluster.client }
    public var backend: Backend { cluster.backend }
    public var namespace: String { cluster.namespace }

    public static var operatorCRD: String {
        get throws {
            try String(contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("crds/meteor.zone_meteors.yaml"), encoding: .utf8)
        }
    }

    /// Every CRD the operator owns (`crds/`, as its kustomization lists them), as one multi-document YAML.
    public static var operatorCRDs: String {
        get throws {
            let dir = TestCluster.repositoryDirectory.appendingPathComponent("crds")
            let kustomization = try YAML.parse(String(contentsOf: dir.appendingPathComponent("kustomization.yaml"), encoding: .utf8))
            return try (kustomization["resources"]?.arrayValue ?? []).compactMap(\.stringValue).map {
                try String(contentsOf: dir.appendingPathComponent($0), encoding: .utf8)
            }.joined(separator: "\n---\n")
        }
    }

    /// The operator's CRD files, repository-relative, for the real control plane.
    public static let operatorCRDFiles = [
        "crds/meteor.zone_meteors.yaml", "crds/meteor.zone_edgetrustpolicies.yaml", "crds/meteor.zone_customruntimeenvironments.yaml",
    ]

    /// How long the simulated Tekton takes per run.
    public static let simulatedRunTime: Duration = .milliseconds(300)

    /// `referenceCRD` installs the Go operator's laxer CRD instead of ours (to reach reconciler-level validation;
    /// embedded only: the real server shares one Meteor CRD). `tekton` runs a Tekton (the simulator on the
    /// embedded server; the real controller is always there on the real one). `onReconciled` hears every
    /// finished reconcile (key, success).
    /// `clientOptions` gives the operator a client of its own with those options (a skewed clock, say).
    public static func start(
        on backend: Backend = .embedded, referenceCRD: Bool = false, tekton: Bool = false, cluster existing: TestCluster? = nil,
        logger: Logger = Logger(label: "meteor"), configure: (inout MeteorReconciler.Configuration) -> Void = { _ in },
        clientOptions: ((inout KubeClient.Options) -> Void)? = nil, onReconciled: (@Sendable (ObjectKey, Bool) -> Void)? = nil
    ) async throws -> MeteorEnvironment {
        var configuration = MeteorReconciler.Configuration()
        configuration.strictFieldValidation = true
        configure(&configuration)
        let cluster: TestCluster
        let argo = configuration.edge != nil ? ["crds/argocd/application-crd.yaml"] : []
        if let existing {
            cluster = existing
        } else if backend == .real {
            precondition(!referenceCRD, "the real control plane serves the operator's own Meteor CRD only")
            cluster = try await TestCluster.real(namespacePrefix: "meteor", crds: operatorCRDFiles + argo)
            do {
                try await cluster.installTekton()
                if let edge = configuration.edge { _ = try? await cluster.createNamespace(edge.argocdNamespace) }
            } catch {
                await cluster.shutdown()
                throw error
            }
        } else {
            E2ETally.record(.embedded)
            cluster = try await TestCluster(
                crds: ["crds/tekton/300-pipelinerun.yaml"] + argo + (referenceCRD ? ["crds/reference/meteor.zone_meteors.yaml"] : []))
            if !referenceCRD {
                try cluster.server.installCRDs(yaml: try operatorCRDs)
            } else if configuration.edge != nil {
                // Edge delivery needs the EdgeTrustPolicy CRD beside the Go operator's Meteor CRD.
                try cluster.server.installCRDs(
                    yaml: try String(
                        contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("crds/meteor.zone_edgetrustpolicies.yaml"), encoding: .utf8
                    ))
            }
            if let edge = configuration.edge { try await cluster.createNamespace(edge.argocdNamespace) }
        }
        var options = Manager.Options()
        options.metricsBindAddress = nil
        options.healthProbeBindAddress = nil
        var operatorClient = cluster.client
        if let clientOptions {
            var o = KubeClient.Options()
            clientOptions(&o)
            operatorClient = try cluster.newClient(options: o)
        }
        let manager = Manager(client: operatorClient, options: options, logger: logger)
        let watched: String? = cluster.backend == .real ? cluster.namespace : nil
        let (reconciler, controller) = await MeteorReconciler.register(
            with: manager, namespace: watched, configuration: configuration, onReconciled: onReconciled, logger: logger)
        let runtimeEnvironments =
            referenceCRD
            ? nil : await RuntimeEnvironmentReconciler.register(with: manager, builds: reconciler, namespace: watched, logger: logger).0
        var services: [any Service] = [manager]
        if tekton, cluster.backend == .embedded {
            // The sandbox's Tekton simulator, as another controller of the cluster (its own manager).
            let simulators = Manager(client: cluster.client, options: options, logger: logger)
            let runs = simulators.informer(for: PipelineRunBuilder.resourceType)
            let meteors = simulators.informer(for: Meteor.resourceType)
            let simulator = TektonSimulator(
                client: cluster.client, runs: runs, meteors: meteors, remotes: nil, signer: try CosignSigner(), duration: simulatedRunTime,
                logger: logger)
            simulators.add(Controller(name: "test-tekton", for: runs, logger: logger) { try await simulator.reconcile($0) })
            services.append(simulators)
        }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: Logger(label: "meteor-test")))
        let task = Task { try await group.run() }
        return MeteorEnvironment(
            cluster: cluster, manager: manager, reconciler: reconciler, controller: controller, runtimeEnvironments: runtimeEnvironments,
            group: group,
            task: task,
            ownClient: clientOptions == nil ? nil : operatorClient)
    }

    init(
        cluster: TestCluster, manager: Manager, reconciler: MeteorReconciler, controller: Controller<JSONValue>,
        runtimeEnvironments: RuntimeEnvironmentReconciler? = nil, group: ServiceGroup, task: Task<Void, any Error>, ownClient: KubeClient? = nil
    ) {
        self.runtimeEnvironments = runtimeEnvironments
        self.controller = controller
        self.ownClient = ownClient
        self.cluster = cluster
        self.manager = manager
        self.reconciler = reconciler
        self.group = group
        self.task = task
    }

    /// Stops the operator (the cluster keeps running).
    public func stopOperator() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }

    public func shutdown() async {
        try? await stopOperator()
        try? await ownClient?.shutdown()
        await cluster.shutdown()
    }

    public static func with(
        on backend: Backend = .embedded, referenceCRD: Bool = false, tekton: Bool = false,
        configure: (inout MeteorReconciler.Configuration) -> Void = { _ in }, clientOptions: ((inout KubeClient.Options) -> Void)? = nil,
        onReconciled: (@Sendable (ObjectKey, Bool) -> Void)? = nil, _ body: (MeteorEnvironment) async throws -> Void
    ) async throws {
        let env = try await start(
            on: backend, referenceCRD: referenceCRD, tekton: tekton, configure: configure, clientOptions: clientOptions, onReconciled: onReconciled)
        do {
            try await body(env)
            await env.shutdown()
        } catch {
            await env.shutdown()
            throw error
        }
    }

    /// Creates a Meteor whose builds of `failing` fail: on the embedded server through the simulator's
    /// annotation; on the real one, the pipeline's first build task (after the clone) is made to exit 1 by the
    /// fake kubelet, so real Tekton reports the failure in its own words. Only pipelines with a Task of their own
    /// can fail alone on the real server (jupyterbook: `meteor-jupyter-book`).
    /// `holding` keeps every run Running until cancelled: the simulator's hold annotation, or on the real server the
    /// clone Task made to run until its Pod is deleted (`fake-kubelet.tekton.dev/run-seconds: "-1"`).
    /// `imageFailure` fails every run at its image task (the buildah Task), which reports that reason: on the
    /// embedded server through the simulator's annotation; on the real one, the Task's build step is made to
    /// write it as its `FAILURE` result and its report step to exit 1 (so real Tekton carries the result of a
    /// failed TaskRun into the PipelineRun's `IMAGE_FAILURE`).
    @discardableResult
    public func createMeteor(
        _ body: JSONValue, failing: [Pipeline] = [], holding: Bool = false, imageFailure: String? = nil
    ) async throws -> JSONValue {
        var body = body
        if let imageFailure {
            switch backend {
            case .embedded: body[path: "metadata", "annotations", TektonSimulator.imageFailureAnnotation] = .string(imageFailure)
            case .real:
                let patch: JSONValue = [
                    ["op": "add", "path": "/spec/steps/0/env/-", "value": ["name": "FAKE_RESULT_FAILURE", "value": .string(imageFailure)]],
                    ["op": "add", "path": "/spec/steps/1/env", "value": [["name": "FAKE_EXIT_CODE", "value": "1"]]],
                ]
                try await cluster.kit!.kubectlOK("-n", namespace, "patch", "task", "meteor-buildah", "--type=json", "-p", patch.serializedString())
            }
        }
        if holding {
            switch backend {
            case .embedded: body[path: "metadata", "annotations", TektonSimulator.holdAnnotation] = "true"
            case .real:
                try await cluster.kit!.kubectlOK(
                    "-n", namespace, "annotate", "--overwrite", "task", "meteor-git-clone", "fake-kubelet.tekton.dev/run-seconds=-1")
            }
        }
        if !failing.isEmpty {
            switch backend {
            case .embedded:
                body[path: "metadata", "annotations", TektonSimulator.failAnnotation] = .string(failing.map(\.rawValue).joined(separator: ","))
            case .real:
                for pipeline in failing {
                    guard let task = TektonSimulator.failingTask[pipeline] else {
                        preconditionFailure("\(pipeline) cannot fail alone on the real control plane")
                    }
                    try await cluster.installTekton(failingTask: task)
                }
            }
        }
        return try await cluster.meteors.create(body)
    }
}

/// Waiting on objects and writing PipelineRun status as Tekton's controller would, over any test cluster.
extension TestCluster {
    public var meteors: DynamicApi { client.dynamic(Meteor.resourceType, namespace: namespace) }
    public var runs: DynamicApi { client.dynamic(PipelineRunBuilder.resourceType, namespace: namespace) }
    public var applications: DynamicApi { client.dynamic(ArgoApplicationBuilder.resourceType, namespace: "argocd") }

    /// On the real control plane: the real Tekton controller and fake kubelet (once per process), the project's
    /// Pipelines and Tasks in this namespace, and the `pipeline` ServiceAccount the runs use. `failingTask`
    /// re-applies that Task annotated so the fake kubelet fails its step.
    public func installTekton(failingTask: String? = nil) async throws {
        guard let kit else { return }
        if failingTask == nil {
            try await kit.ensureTekton()
            try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "pipeline")
            try await kit.kubectlOK("-n", namespace, "apply", "-k", TestCluster.repositoryDirectory.appendingPathComponent("manifests/tekton").path)
        } else if let failingTask {
            try await kit.kubectlOK("-n", namespace, "annotate", "--overwrite", "task", failingTask, "fake-kubelet.tekton.dev/exit-code=1")
        }
    }

    /// Waits (on a watch) for an Event about `object` with `reason`; returns it.
    @discardableResult
    public func waitForEvent(about object: String, reason: String, timeout: Duration = .seconds(60)) async throws -> JSONValue? {
        let events = client.dynamic(ResourceType(group: "", version: "v1", kind: "Event", plural: "events", namespaced: true), namespace: namespace)
        return try await within(timeout, "the \(reason) event") { () async throws -> JSONValue? in
            let listed = try await events.list(ListOptions(fieldSelector: "involvedObject.name=\(object)"))
            if let e = listed.items.first(where: { $0["reason"] == .string(reason) }) { return e }
            for try await event in events.watch(
                WatchOptions(resourceVersion: listed.metadata.resourceVersion, fieldSelector: "involvedObject.name=\(object)", allowBookmarks: false))
            {
                if case .added(let e) = event, e["reason"] == .string(reason) { return e }
            }
            return nil
        }
    }

    public func createNamespace(_ name: String) async throws {
        _ = try await client.dynamic(ResourceType(group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false)).create([
            "apiVersion": "v1", "kind": "Namespace", "metadata": ["name": .string(name)],
        ])
    }

    /// What Argo CD's application controller writes (Application has no status subresource: the whole object).
    /// Plays Argo CD's status about the Application's spec as it is now (`sync.comparedTo.source`); `images`, what
    /// the synced resources run (`status.summary.images`).
    public func argo(_ app: String, sync: String, health: String, message: String? = nil, images: [String]? = nil) async throws {
        var healthObject: JSONObject = ["status": .string(health)]
        if let message { healthObject["message"] = .string(message) }
        let spec = try await applications.get(app)["spec"]
        let compared: JSONValue = ["source": spec?["source"] ?? .null, "destination": spec?["destination"] ?? .null]
        var status: JSONObject = ["sync": ["status": .string(sync), "comparedTo": compared], "health": .object(healthObject)]
        if let images { status["summary"] = ["images": .array(images.map(JSONValue.string))] }
        _ = try await applications.patch(app, .merge(["status": .object(status)]), params: WriteParams(fieldValidation: .strict))
    }

    /// Waits (on a watch, not a timer) until the named object satisfies `condition`; returns it.
    @discardableResult
    public func waitFor(
        _ api: DynamicApi, _ name: String, timeout: Duration = .seconds(60), _ condition: @escaping @Sendable (JSONValue?) -> Bool
    ) async throws -> JSONValue? {
        try await within(timeout, name) {
            while true {
                let list = try await api.list(ListOptions(fieldSelector: "metadata.name=\(name)"))
                let current = list.items.first
                if condition(current) { return current }
                for try await event in api.watch(
                    WatchOptions(resourceVersion: list.metadata.resourceVersion, fieldSelector: "metadata.name=\(name)", allowBookmarks: false))
                {
                    switch event {
                    case .added(let o), .modified(let o): if condition(o) { return o }
                    case .deleted: if condition(nil) { return nil }
                    case .bookmark: break
                    }
                }
            }
        }
    }

    /// What Tekton's controller writes: Running, then Succeeded with results, or Failed with a message.
    public func tekton(_ run: String, _ outcome: PipelineRunState.Outcome, results: [String: String] = [:], message: String = "") async throws {
        var status: JSONObject = ["startTime": .string(KubeTime.format(Date()))]
        switch outcome {
        case .running:
            status["conditions"] = [
                [
                    "type": "Succeeded", "status": "Unknown", "reason": "Running",
                    "message": "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 3, Skipped: 0",
                    "lastTransitionTime": .string(KubeTime.format(Date())),
                ]
            ]
        case .succeeded:
            status["conditions"] = [
                [
                    "type": "Succeeded", "status": "True", "reason": "Succeeded",
                    "message": "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0", "lastTransitionTime": .string(KubeTime.format(Date())),
                ]
            ]
            status["completionTime"] = .string(KubeTime.format(Date()))
            var results = results
            // The clone Task's commit, as the edge Pipeline reports it, for a build of a branch (a release's build
            // is the tag's commit, which the operator knows): derived from the ref when the test gives none.
            if results["IMAGE_DIGEST"] != nil, results["COMMIT"] == nil, let run = try? await runs.get(run),
                run[path: "metadata", "labels", MeteorLabels.edgeImage] != nil, run[path: "metadata", "labels", MeteorLabels.release] == nil
            {
                let ref = (run[path: "spec", "params"]?.arrayValue ?? []).first { $0["name"] == "ref" }?["value"]?.stringValue ?? ""
                results["COMMIT"] = Self.commit(of: ref)
            }
            status["results"] = .array(results.sorted { $0.key < $1.key }.map { ["name": .string($0.key), "value": .string($0.value)] })
        case .failed:
            status["conditions"] = [
                [
                    "type": "Succeeded", "status": "False", "reason": "Failed", "message": .string(message),
                    "lastTransitionTime": .string(KubeTime.format(Date())),
                ]
            ]
            status["completionTime"] = .string(KubeTime.format(Date()))
        }
        _ = try await runs.patchStatus(run, .merge(["status": .object(status)]), params: WriteParams(fieldValidation: .strict))
    }

}

extension Informer {
    /// Returns once `predicate` holds for the cache and every handler has seen the change that made it hold
    /// (what metrics and other handler-fed state read).
    public func waitUntil(sourceLocation: String = #fileID, line: Int = #line, _ predicate: @escaping @Sendable (Store<K>) -> Bool) async throws {
        let seen = Observed(false)
        let store = self.store
        await addHandler { _ in if predicate(store) { seen.update { $0 = true } } }
        if !predicate(store) { try await seen.wait(sourceLocation: sourceLocation, line: line) { $0 } }
        await handlersIdle()
    }

    /// Returns once the cache holds the object (event-driven).
    public func waitUntilCached(_ key: ObjectKey, sourceLocation: String = #fileID, line: Int = #line) async throws {
        let seen = Observed(false)
        await addHandler { e in if e.object.objectKey == key { seen.update { $0 = true } } }
        if store.get(key) != nil { return }
        try await seen.wait(sourceLocation: sourceLocation, line: line) { $0 }
    }
}

public func condition(_ meteor: JSONValue?, _ type: String) -> JSONValue? {
    (meteor?[path: "status", "conditions"]?.arrayValue ?? []).first { $0["type"]?.stringValue == type }
}

extension EgressPolicy {
    /// The operator's egress policy with loopback allowed, as an admin would allow an in-house git server
    /// (`--egress-allow 127.0.0.0/8`): for tests whose fixtures (git http-backend, sshd, registries) listen there.
    public static var loopbackFixtures: EgressPolicy { EgressPolicy(allowing: [.range(AddressRange("127.0.0.0/8")!)]) }
}

extension TestCluster {
    /// The commit the tests' stand-in for the clone Task reports for `ref`.
    public static func commit(of ref: String) -> String {
        SignatureVerifier.digest(Array("commit \(ref)".utf8)).dropFirst("sha256:".count).prefix(40).description
    }

    /// A new signing key that the cluster admin trusts for every image and cluster, its public half also in the
    /// Secret `secret` of the test's namespace (what edge Meteors name in spec.edge.signing).
    public func trustedSigner(secret: String = "cosign-pub") async throws -> CosignSigner {
        let signer = CosignSigner()
        _ = try await client.api(Secret.self, namespace: namespace).create(
            Secret(metadata: ObjectMeta(name: secret, namespace: namespace), stringData: ["cosign.pub": signer.publicKeyPEM]))
        try await trust(publicKeyPEM: signer.publicKeyPEM)
        return signer
    }

    /// An EdgeTrustPolicy named `name` trusting `signer`'s key for `images` on `clusters` (everything by default),
    /// as the cluster admin would write it.
    @discardableResult
    public func trust(
        _ name: String = "trust-all", publicKeyPEM: String, images: [String] = ["*"], clusters: [String] = ["*"], namespaces: [String]? = nil,
        revoked: Bool = false
    ) async throws -> JSONValue {
        let policy = EdgeTrustPolicy(
            name: name,
            spec: .init(
                keys: [.init(name: "release", publicKey: publicKeyPEM, revoked: revoked ? true : nil)], images: images, clusters: clusters,
                namespaces: namespaces))
        let api = client.dynamic(EdgeTrustPolicy.resourceType)
        // Cluster-scoped: on the shared real control plane, a name of this test's own.
        var body = try JSONValue(encoding: policy)
        let scoped = kit == nil ? name : "\(name)-\(namespace)"
        body[path: "metadata", "name"] = .string(scoped)
        if let existing = try? await api.get(scoped) {
            body[path: "metadata", "resourceVersion"] = existing[path: "metadata", "resourceVersion"]
            return try await api.replace(body)
        }
        return try await api.create(body)
    }
}
