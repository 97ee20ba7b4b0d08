import Crypto
import Foundation
import Hummingbird
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore
import MeteorShower
import ServiceLifecycle

/// `meteor-operator sandbox`: the embedded API server with the Meteor, Tekton and Argo CD CRDs, the operator
/// against it, and clearly labelled simulators for what a real cluster would run (Tekton, Argo CD, a registry and
/// git remotes), so Meteors go from Building to Ready on a laptop with nothing but Swift.
public struct SandboxOptions: Sendable {
    public var port = 0
    public var kubeconfigOut = "./sandbox.kubeconfig"
    /// The repository checkout holding `crds/` and `config/samples/`.
    public var repository: URL
    /// Upstream Tekton and Argo CD CRDs (`tekton/`, `argocd/`); permissive stand-ins when nil or missing.
    public var upstreamCRDs: URL?
    public var namespace = "default"
    public var tekton = true
    public var argo = true
    public var remotes = true
    public var tektonDuration: Duration = .seconds(4)
    public var argoDuration: Duration = .seconds(3)
    public var releaseInterval: Int64 = 10
    public var releaseTags = ["v1.0.0"]
    public var applySamples = false
    public var tui = true
    public var metricsBindAddress = "127.0.0.1:0"
    public var healthProbeBindAddress = "127.0.0.1:0"
    /// Where the Meteor Shower page listens (nil: off). Submitting is allowed without a sign-in proxy here.
    public var showerBindAddress: String? = "127.0.0.1:0"

    public init(repository: URL) { self.repository = repository }
}

public enum Sandbox {
    /// Finds the checkout: upward from the working directory, then from this source file.
    public static func locateRepository() -> URL? {
        let marker = "crds/meteor.zone_meteors.yaml"
        for start in [URL(fileURLWithPath: FileManager.default.currentDirectoryPath), URL(fileURLWithPath: #filePath)] {
            var dir = start
            for _ in 0..<8 {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent(marker).path) { return dir }
                dir = dir.deletingLastPathComponent()
            }
        }
        return nil
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs until SIGINT/SIGTERM; `announce` receives the lines a person needs (kubeconfig, URLs).
    public static func run(_ options: SandboxOptions, logger: Logger, announce: @escaping @Sendable (String) -> Void) async throws {
        let server = try EmbeddedAPIServer(configuration: .init(port: options.port))
        try installCRDs(server, options: options, logger: logger)
        try await server.start()
        do {
            try await serve(server, options: options, logger: logger, announce: announce)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    static func installCRDs(_ server: EmbeddedAPIServer, options: SandboxOptions, logger: Logger) throws {
        try installCRDs(server, repository: options.repository, upstream: options.upstreamCRDs, argo: true, logger: logger)
    }

    /// Installs the operator's CRDs (Meteor, EdgeTrustPolicy, CustomRuntimeEnvironment) from the checkout, and Tekton's PipelineRun (and Argo CD's Application) CRDs from
    /// `upstream` when they are there, permissive stand-ins otherwise.
    public static func installCRDs(_ server: EmbeddedAPIServer, repository: URL, upstream: URL?, argo: Bool, logger: Logger) throws {
        for file in ["crds/meteor.zone_meteors.yaml", "crds/meteor.zone_edgetrustpolicies.yaml", "crds/meteor.zone_customruntimeenvironments.yaml"] {
            let ours = repository.appendingPathComponent(file)
            do {
                try server.installCRDs(yaml: try String(contentsOf: ours, encoding: .utf8))
            } catch {
                throw Failure(description: "cannot install the operator's CRD from \(ours.path): \(error)")
            }
        }
        var crds: [(file: String, fallback: ResourceType, status: Bool)] = [("tekton/300-pipelinerun.yaml", PipelineRunBuilder.resourceType, true)]
        if argo { crds.append(("argocd/application-crd.yaml", ArgoApplicationBuilder.resourceType, false)) }
        for crd in crds {
            if let dir = upstream, let text = try? String(contentsOf: dir.appendingPathComponent(crd.file), encoding: .utf8) {
                try server.installCRDs(yaml: text)
            } else {
                logger.notice(
                    "sandbox: upstream CRD \(crd.file) not found; serving \(crd.fallback.plural).\(crd.fallback.group) with a permissive schema")
                try server.installCRDs(yaml: permissiveCRD(crd.fallback, statusSubresource: crd.status))
            }
        }
    }

    /// `../shared/crds` next to the checkout, when it exists.
    public static func defaultUpstreamCRDs(repository: URL) -> URL? {
        let dir = repository.deletingLastPathComponent().appendingPathComponent("shared/crds")
        return FileManager.default.fileExists(atPath: dir.path) ? dir : nil
    }

    /// A CRD that stores anything, for when the upstream schema is not at hand.
    static func permissiveCRD(_ type: ResourceType, statusSubresource: Bool) -> String {
        """
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: \(type.plural).\(type.group)
        spec:
          group: \(type.group)
          names: {kind: \(type.kind), listKind: \(type.kind)List, plural: \(type.plural), singular: \(type.kind.lowercased())}
          scope: Namespaced
          versions:
            - name: \(type.version)
              served: true
              storage: true
              subresources: \(statusSubresource ? "{status: {}}" : "{}")
              schema:
                openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
        """
    }

    static func serve(
        _ server: EmbeddedAPIServer, options: SandboxOptions, logger: Logger, announce: @escaping @Sendable (String) -> Void
    ) async throws {
        let kubeconfigPath = URL(fileURLWithPath: options.kubeconfigOut).standardizedFileURL.path
        try server.kubeconfig(context: "meteor-sandbox", namespace: options.namespace).write(
            toFile: kubeconfigPath, atomically: true, encoding: .utf8)
        let cluster = try KubeConfigLoader.load(.init(kubeconfigPath: kubeconfigPath))
        let metrics = RuntimeMetrics(histogramBuckets: MeteorMetrics.histogramBuckets)
        var clientOptions = KubeClient.Options()
        clientOptions.metrics = metrics.clientHook
        let client = try KubeClient(configuration: cluster, options: clientOptions)
        let simulatorClient = try KubeClient(configuration: cluster, options: .init())
        defer {
            Task {
                try? await client.shutdown(); try? await simulatorClient.shutdown()
            }
        }
        let signer = CosignSigner()
        try await prepareCluster(client, options: options, signer: signer)

        // The registry and git stand-in.
        let remotes = SandboxRemotes(tags: options.releaseTags)
        var services: [any Service] = []
        var remotesOrigin: String?
        if options.remotes {
            let (bound, continuation) = AsyncStream<Int>.makeStream()
            let app = Application(
                router: remotes.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { channel in
                    continuation.yield(channel.localAddress?.port ?? 0)
                    continuation.finish()
                }, logger: Logger(label: "sandbox-remotes", factory: { _ in SwiftLogNoOpLogHandler() }))
            // No signal handling of its own: the sandbox's group stops it (StopOnShutdown).
            let starter = Task { try await app.runService(gracefulShutdownSignals: []) }
            var port = 0
            for await p in bound { port = p }
            // Started outside the group so its port is known before the operator is configured; stopped with it.
            services.append(StopOnShutdown(task: starter))
            remotesOrigin = "http://127.0.0.1:\(port)"
        }

        // The operator, as `meteor-operator run` configures it.
        var operatorOptions = Manager.Options()
        operatorOptions.metricsBindAddress = options.metricsBindAddress
        operatorOptions.healthProbeBindAddress = options.healthProbeBindAddress
        // As deployed: leader election on (a Lease in the sandbox namespace).
        operatorOptions.leaderElection = LeaderElector.Configuration(leaseName: "meteor-operator", namespace: options.namespace)
        let manager = Manager(client: client, options: operatorOptions, metrics: metrics, logger: logger)
        var configuration = MeteorReconciler.Configuration()
        configuration.build = BuildSettings(imageRepositoryPrefix: "registry.sandbox.meteor.zone")
        var edge = EdgeSettings()
        if let remotesOrigin { edge.hostOverrides = ["*": remotesOrigin] }
        edge.verificationRetry = .seconds(5)
        edge.releaseIntervalOverride = options.releaseInterval
        // The sandbox's device clusters are chosen by label too (the fleet sample).
        edge.clusterSelectors = true
        configuration.edge = edge
        let (reconciler, _) = await MeteorReconciler.register(with: manager, namespace: nil, configuration: configuration, logger: logger)
        await RuntimeEnvironmentReconciler.register(with: manager, builds: reconciler, namespace: nil, logger: logger)
        services.append(manager)
        var shower: MeteorShower?
        if let address = options.showerBindAddress {
            var showerOptions = MeteorShower.Options(bindAddress: address, namespace: options.namespace)
            showerOptions.allowSubmit = true
            showerOptions.allowAnonymous = true
            let page = MeteorShower(options: showerOptions, client: client, meteors: reconciler.meteors, logger: logger)
            shower = page
            services.append(page)
        }

        // The simulators, as other controllers of the cluster, with their own manager and client.
        var simulatorOptions = Manager.Options()
        simulatorOptions.metricsBindAddress = nil
        simulatorOptions.healthProbeBindAddress = nil
        let simulators = Manager(client: simulatorClient, options: simulatorOptions, logger: logger)
        if options.tekton {
            let runs = simulators.informer(for: PipelineRunBuilder.resourceType)
            let meteors = simulators.informer(for: Meteor.resourceType)
            let tekton = TektonSimulator(
                client: simulatorClient, runs: runs, meteors: meteors, remotes: options.remotes ? remotes : nil, signer: signer,
                duration: options.tektonDuration, logger: logger)
            simulators.add(Controller(name: "sandbox-tekton", for: runs, logger: logger) { try await tekton.reconcile($0) })
        }
        if options.argo {
            let apps = simulators.informer(for: ArgoApplicationBuilder.resourceType, namespace: edge.argocdNamespace)
            let argo = ArgoSimulator(
                client: simulatorClient, applications: apps, meteors: simulators.informer(for: Meteor.resourceType), duration: options.argoDuration,
                logger: logger)
            simulators.add(Controller(name: "sandbox-argocd", for: apps, logger: logger) { try await argo.reconcile($0) })
        }
        services.append(simulators)
        let view = StatusView(meteors: reconciler.meteors, tui: options.tui)
        services.append(view)

        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigint, .sigterm], cancellationSignals: [], logger: logger))
        let announcer = Task {
            await manager.waitForServers()
            let ports = manager.boundPorts
            var lines = [
                "Meteor sandbox: embedded API server at \(server.url) (simulated Tekton: \(options.tekton), Argo CD: \(options.argo), registry and git: \(options.remotes))",
                "export KUBECONFIG=\(kubeconfigPath)",
            ]
            if let shower, let port = await shower.waitUntilListening() { lines.append("Meteor Shower: http://127.0.0.1:\(port)/") }
            if let m = ports.metrics { lines.append("metrics: http://127.0.0.1:\(m)/metrics") }
            if let remotesOrigin { lines.append("publish a release on every git remote: curl -X POST \(remotesOrigin)/sandbox/tags/v1.1.0") }
            lines.append("try: kubectl apply -k config/samples && kubectl get meteors -w")
            lines.append("a fleet, staged twin → car: kubectl apply -k config/samples/fleet && kubectl get meteor donkeycar-fleet -o wide -w")
            let banner = lines.joined(separator: "\n") + "\n"
            if options.tui { view.setHeader(banner) } else { announce(banner) }
            if options.applySamples {
                do {
                    try await applySamples(client, options: options)
                } catch {
                    logger.error("sandbox: cannot apply the samples: \(error)")
                }
            }
        }
        try await group.run()
        announcer.cancel()
    }

    /// What an admin would have done on a real cluster: Argo CD's namespace, and the public key edge Meteors name.
    static func prepareCluster(_ client: KubeClient, options: SandboxOptions, signer: CosignSigner) async throws {
        let namespaces = client.api(Namespace.self)
        for ns in Set([options.namespace, "argocd"]) where try await namespaces.getOptional(ns) == nil {
            _ = try await namespaces.create(Namespace(metadata: ObjectMeta(name: ns)))
        }
        let secrets = client.api(Secret.self, namespace: options.namespace)
        if try await secrets.getOptional("cosign-pub") == nil {
            var secret = Secret(
                metadata: ObjectMeta(name: "cosign-pub", namespace: options.namespace), stringData: ["cosign.pub": signer.publicKeyPEM])
            secret.metadata.labels = ["app.kubernetes.io/part-of": "meteor-sandbox"]
            _ = try await secrets.create(secret)
        }
        // Argo CD's device clusters, as `argocd cluster add` registers them, labelled for the fleet sample: two
        // digital twins (NUCs) and a car (a Raspberry Pi). No credentials: the devices are simulated.
        let clusters = client.api(Secret.self, namespace: "argocd")
        for (name, role) in Self.devices where try await clusters.getOptional("cluster-\(name)") == nil {
            let labels = [
                "argocd.argoproj.io/secret-type": "cluster", "meteor.zone/fleet": "donkeycar", "meteor.zone/role": role,
                "app.kubernetes.io/part-of": "meteor-sandbox",
            ]
            _ = try await clusters.create(
                Secret(
                    metadata: ObjectMeta(name: "cluster-\(name)", namespace: "argocd", labels: labels),
                    stringData: ["name": name, "server": "https://\(name).sandbox:6443"]))
        }
        // The cluster admin's word on who may sign what reaches the (simulated) devices: the sandbox's key, for
        // every image and cluster.
        let policies = client.dynamic(EdgeTrustPolicy.resourceType)
        if (try? await policies.get("sandbox")) == nil {
            var policy = EdgeTrustPolicy(
                name: "sandbox", spec: .init(keys: [.init(name: "sandbox-release", publicKey: signer.publicKeyPEM)], images: ["*"], clusters: ["*"]))
            policy.metadata.labels = ["app.kubernetes.io/part-of": "meteor-sandbox"]
            _ = try await policies.create(try JSONValue(encoding: policy))
        }
    }

    /// The simulated device clusters and their `meteor.zone/role`.
    public static let devices = [("microshift-nuc", "twin"), ("microshift-nuc-2", "twin"), ("microshift-rpi", "car")]

    /// Creates the Meteors listed in `config/samples/kustomization.yaml` (existing ones are left alone).
    public static func applySamples(_ client: KubeClient, options: SandboxOptions) async throws {
        let dir = options.repository.appendingPathComponent("config/samples")
        let kustomization = try YAML.parse(String(contentsOf: dir.appendingPathComponent("kustomization.yaml"), encoding: .utf8))
        let api = client.dynamic(Meteor.resourceType, namespace: options.namespace)
        for file in (kustomization["resources"]?.arrayValue ?? []).compactMap(\.stringValue) {
            var doc = try YAML.parse(String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8))
            doc[path: "metadata", "namespace"] = .string(options.namespace)
            do {
                _ = try await api.create(doc, params: WriteParams(fieldManager: "kubectl", fieldValidation: .strict))
            } catch let e as KubeError where e.isAlreadyExists {}
        }
    }
}

/// Wraps an already-running task so the service group stops it with everything else.
struct StopOnShutdown: Service {
    let task: Task<Void, any Error>
    func run() async throws {
        try? await gracefulShutdown()
        task.cancel()
        _ = try? await task.value
    }
}
