import ArgumentParser
import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore
import MeteorShower
import Crypto
import ServiceLifecycle

/// `meteor-operator run`: the operator against a real cluster. Flags use controller-runtime's names.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the operator against a cluster.")

    @Option(help: "Path to a kubeconfig (default: KUBECONFIG, in-cluster, ~/.kube/config).") var kubeconfig: String?
    @Option(help: "Watch one namespace only (default: all namespaces).") var namespace: String?
    @Option(help: "Concurrent reconciles.") var concurrency = 4
    @Option(help: "Finished superseded PipelineRuns kept per Meteor and pipeline; older ones are deleted with their workspaces.")
    var keepSupersededRuns = 1
    @Option(help: "HOST:PORT for /metrics; 0 turns it off.") var metricsBindAddress = ":8080"
    @Flag(
        help:
            "Serve /metrics over HTTPS to callers the API server authenticates and allows get on /metrics (TokenReview, SubjectAccessReview), as controller-runtime's --metrics-secure."
    ) var metricsSecure = false
    @Option(help: "Directory with tls.crt and tls.key for --metrics-secure (default: a self-signed certificate).") var metricsCertDir: String?
    @Option(help: "HOST:PORT for /healthz and /readyz; 0 turns it off.") var healthProbeBindAddress = ":8081"
    @Flag(help: "Elect a leader with a Lease, for running several replicas.") var leaderElect = false
    @Option(help: "Namespace of the leader-election Lease (default: the configuration's namespace).") var leaderElectionNamespace: String?
    @Option(help: "Seconds a follower waits before taking an unrenewed lease.") var leaderElectLeaseDuration: Double = 15
    @Option(help: "Seconds the leader keeps trying to renew before it gives up leading.") var leaderElectRenewDeadline: Double = 10
    @Option(help: "Seconds between leader-election attempts.") var leaderElectRetryPeriod: Double = 2
    @Option(
        help:
            "Seconds SIGTERM waits for in-flight reconciles and the lease's release before it cancels them (controller-runtime's GracefulShutdownTimeout)."
    ) var gracefulShutdownTimeout: Double = 30
    @Option(help: "Log format: json or text (default: json in a cluster, text elsewhere).") var logFormat: String?
    @Option(
        help: "Client-side rate limit, requests per second (0: none; the API server's priority and fairness, whose 429s are honoured, then governs).")
    var qps: Double = 0
    @Option(help: "Client-side burst.") var burst = 1000
    @Option(help: "Registry and namespace images are pushed to.") var imageRepository = "image-registry.openshift-image-registry.svc:5000"
    @Option(
        help:
            "Service account the PipelineRuns run as, which must exist in each Meteor's namespace (default: pipeline where OpenShift Pipelines made it, else default)."
    ) var pipelineServiceAccount: String?
    @Option(
        help:
            "A kubernetes.io/dockerconfigjson Secret in each Meteor's namespace that builds push (and sign) with (default: the ServiceAccount's own credentials)."
    ) var pushSecret: String?
    @Option(
        help:
            "Namespace of the notebook ImageStreams on Open Data Hub, whose spawner lists only its own (redhat-ods-applications on RHOAI); empty: the Meteor's namespace."
    ) var notebookImageNamespace = "opendatahub"
    @Option(
        help:
            "UID, GID and fsGroup of every build step (the PipelineRuns' podTemplate); 0 leaves them to the images and the cluster (OpenShift's SCCs)."
    ) var buildUid: Int64 = 65532
    @Option(
        help:
            "Follow branches: seconds between reads of a branch's remote; a Meteor or CustomRuntimeEnvironment then builds the commit its branch names, again when it moves, one build per commit shared by all who ask (0: build each generation's ref as named)."
    ) var followRefsEvery: Int = 0
    @Option(
        help:
            "HOST:PORT to serve the git push webhook on (POST /hooks/git, GitHub or GitLab push events; needs --follow-refs-every and --git-webhook-secret-file); default: off."
    ) var gitWebhookBindAddress: String?
    @Option(help: "A file holding the shared secret the push webhooks are configured with (GitHub's secret, GitLab's token).")
    var gitWebhookSecretFile: String?
    @Option(help: "Serve JupyterBook sites through an Ingress of this class.") var ingressClass: String?
    @Option(help: "Domain for JupyterBook Ingress hosts (<name>.<namespace>.<domain>).") var ingressDomain: String?
    @Option(help: "Argo CD's namespace, where edge Applications are created.") var argocdNamespace = "argocd"
    @Option(help: "The Argo CD AppProject edge Applications belong to (manifests/argocd/appproject.yaml).") var argocdProject = "meteor"
    @Flag(
        help:
            "Let edge targets choose Argo CD clusters by label (spec.edge.targets[].clusterSelector): watches Argo CD's cluster Secrets, which needs config/rbac/argocd_cluster_reader_role.yaml."
    ) var edgeClusterSelectors = false
    @Option(help: "A registry (host:port) read over plain HTTP when verifying signatures; repeatable.") var insecureRegistry: [String] = []
    @Option(
        help:
            "A host, host:port or CIDR the operator may reach for what Meteors name (repositories, registries, token realms) though it is inside the cluster or private; repeatable."
    ) var egressAllow: [String] = []
    @Option(help: "The cluster's Service and Pod ranges, never reached for what Meteors name; repeatable (default: common distributions' ranges).")
    var clusterCidr: [String] = []
    @Option(help: "HOST:PORT to serve the Meteor Shower web page on (default: off).") var showerBindAddress: String?
    @Option(help: "Namespace the Shower lists and submits Meteors in (default: --namespace, else the configuration's namespace).")
    var showerNamespace: String?
    @Flag(help: "Let the Shower submit and delete Meteors, acting as the signed-in user (Kubernetes impersonation; see config/shower).")
    var showerAllowSubmit = false
    @Option(
        help:
            "An address or CIDR of the authenticating proxy in front of the Shower, whose X-Forwarded-User is believed; repeatable. Nobody else's is."
    ) var showerTrustedProxy: [String] = []
    @Option(
        help:
            "A group the Shower passes on (Impersonate-Group) when the proxy's X-Forwarded-Groups names it; repeatable. The operator needs impersonate on each."
    ) var showerForwardGroup: [String] = []
    @Option(
        help: "A file holding the key (32 bytes or more) that signs the Shower's CSRF tokens, shared by replicas (default: a random key per process)."
    ) var showerSessionKeyFile: String?
    @Flag(help: "Let the Shower accept writes without a user from a trusted proxy, made with the operator's own identity.") var showerAllowAnonymous =
        false

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    func validate() throws {
        if (ingressClass == nil) != (ingressDomain == nil) { throw ValidationError("--ingress-class and --ingress-domain go together") }
        if let logFormat, LogFormat(rawValue: logFormat) == nil { throw ValidationError("--log-format must be json or text") }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if keepSupersededRuns < 0 { throw ValidationError("--keep-superseded-runs must be 0 or more") }
        if let address = showerBindAddress, Manager.parseBindAddress(address) == nil {
            throw ValidationError("--shower-bind-address must be HOST:PORT, got \(address)")
        }
        if showerBindAddress == nil,
            showerAllowSubmit || showerAllowAnonymous || showerNamespace != nil || !showerTrustedProxy.isEmpty || showerSessionKeyFile != nil
        {
            throw ValidationError(
                "--shower-allow-submit, --shower-allow-anonymous, --shower-namespace, --shower-trusted-proxy and --shower-session-key-file need --shower-bind-address"
            )
        }
        for proxy in showerTrustedProxy where AddressRange(proxy) == nil {
            throw ValidationError("--shower-trusted-proxy must be an IP address or CIDR (127.0.0.1/32, fd00::/8), got \(proxy)")
        }
        if followRefsEvery < 0 { throw ValidationError("--follow-refs-every must be 0 (off) or more seconds") }
        if let address = gitWebhookBindAddress {
            if Manager.parseBindAddress(address) == nil { throw ValidationError("--git-webhook-bind-address must be HOST:PORT, got \(address)") }
            if followRefsEvery == 0 {
                throw ValidationError("--git-webhook-bind-address triggers a check of followed refs: set --follow-refs-every too")
            }
            guard let file = gitWebhookSecretFile, let secret = FileManager.default.contents(atPath: file), !secret.isEmpty else {
                throw ValidationError(
                    "--git-webhook-bind-address needs --git-webhook-secret-file: a readable, non-empty file with the webhooks' shared secret")
            }
        } else if gitWebhookSecretFile != nil {
            throw ValidationError("--git-webhook-secret-file needs --git-webhook-bind-address")
        }
        if metricsCertDir != nil, !metricsSecure { throw ValidationError("--metrics-cert-dir needs --metrics-secure") }
        if let (host, _) = Manager.parseBindAddress(metricsBindAddress), !metricsSecure, !["127.0.0.1", "::1", "localhost"].contains(host) {
            // Said, not refused: a cluster's NetworkPolicy may already keep the port private.
            FileHandle.standardError.write(
                Data(
                    "meteor-operator: /metrics on \(metricsBindAddress) is open to anyone who reaches it; --metrics-secure puts it behind the API server's authentication\n"
                        .utf8))
        }
        if buildUid < 0 { throw ValidationError("--build-uid must be a UID (0 for none)") }
        for allowed in egressAllow where EgressPolicy.Allowance(allowed) == nil {
            throw ValidationError("--egress-allow must be a host, host:port or CIDR, got \(allowed)")
        }
        for range in clusterCidr where AddressRange(range) == nil {
            throw ValidationError("--cluster-cidr must be a CIDR (10.96.0.0/12), got \(range)")
        }
        if !(gracefulShutdownTimeout > 0) {
            throw ValidationError("--graceful-shutdown-timeout must be more than 0 seconds")
        }
        if !(leaderElectRetryPeriod > 0 && leaderElectRetryPeriod < leaderElectRenewDeadline && leaderElectRenewDeadline < leaderElectLeaseDuration) {
            throw ValidationError(
                "leader election needs 0 < --leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration")
        }
    }

    func run() async throws {
        (logFormat.flatMap(LogFormat.init(rawValue:)) ?? .automatic).bootstrap()
        let logger = Logger(label: "meteor-operator")
        let metrics = RuntimeMetrics(histogramBuckets: MeteorMetrics.histogramBuckets)
        let cluster: ClusterConfiguration
        do {
            cluster = try KubeConfigLoader.load(.init(kubeconfigPath: kubeconfig))
        } catch {
            throw Failure(description: "\(error)")
        }
        // One identity for the Lease and the User-Agent, so the API server's audit (and our tests) can tell replicas apart.
        let identity = LeaderElector.defaultIdentity()
        var options = KubeClient.Options()
        options.userAgent = "meteor-operator/\(BuildInfo.version) (\(identity))"
        options.qps = qps
        options.burst = burst
        options.metrics = metrics.clientHook
        options.logger = logger
        var preflightOptions = options
        preflightOptions.maxRetries = 0
        preflightOptions.requestTimeout = .seconds(10)
        preflightOptions.connectTimeout = .seconds(3)
        let preflightClient = try KubeClient(configuration: cluster, options: preflightOptions)
        var publishImageStreams = false
        var argoServed = false
        var trustServed = false
        var environmentsServed = false
        do {
            try await Self.preflight(preflightClient, server: cluster.server.absoluteString)
            // Open Data Hub's JupyterHub lists notebook images from ImageStreams, where the cluster has them.
            let images = try? await preflightClient.json(.GET, "/apis/image.openshift.io/v1")
            publishImageStreams = (images?["resources"]?.arrayValue ?? []).contains { $0["name"] == "imagestreams" }
            // Edge delivery needs Argo CD's Application kind.
            let argo = try? await preflightClient.json(.GET, "/apis/argoproj.io/v1alpha1")
            argoServed = (argo?["resources"]?.arrayValue ?? []).contains { $0["name"] == "applications" }
            // ...and the cluster admin's EdgeTrustPolicies, which say which keys may sign what is deployed.
            let meteorGroup = try? await preflightClient.json(.GET, "/apis/meteor.zone/v1alpha1")
            trustServed = (meteorGroup?["resources"]?.arrayValue ?? []).contains { $0["name"] == "edgetrustpolicies" }
            environmentsServed = (meteorGroup?["resources"]?.arrayValue ?? []).contains { $0["name"] == "customruntimeenvironments" }
            if argoServed, trustServed, edgeClusterSelectors { try await Self.preflightClusterSecrets(preflightClient, namespace: argocdNamespace) }
            try await preflightClient.shutdown()
        } catch {
            try? await preflightClient.shutdown()
            throw error
        }
        let client = try KubeClient(configuration: cluster, options: options)

        var managerOptions = Manager.Options()
        managerOptions.metricsBindAddress = metricsBindAddress
        managerOptions.metricsSecure = metricsSecure
        managerOptions.metricsCertificateDirectory = metricsCertDir
        managerOptions.healthProbeBindAddress = healthProbeBindAddress
        if leaderElect {
            managerOptions.leaderElection = LeaderElector.Configuration(
                leaseName: "meteor-operator", namespace: leaderElectionNamespace ?? cluster.namespace, identity: identity,
                leaseDuration: .milliseconds(Int64(leaderElectLeaseDuration * 1000)),
                renewDeadline: .milliseconds(Int64(leaderElectRenewDeadline * 1000)),
                retryPeriod: .milliseconds(Int64(leaderElectRetryPeriod * 1000)))
        }
        let manager = Manager(client: client, options: managerOptions, metrics: metrics, logger: logger)
        var configuration = MeteorReconciler.Configuration()
        configuration.build = BuildSettings(
            imageRepositoryPrefix: imageRepository, serviceAccount: pipelineServiceAccount, pushSecret: pushSecret,
            runAsUser: buildUid == 0 ? nil : buildUid)
        if !publishImageStreams, imageRepository == BuildSettings().imageRepositoryPrefix {
            logger.notice(
                "images are pushed to OpenShift's internal registry (\(imageRepository)), which this cluster does not seem to have: set --image-repository (and --push-secret)"
            )
        }
        configuration.ingressClass = ingressClass
        configuration.keepSupersededRuns = keepSupersededRuns
        configuration.egress = EgressPolicy(
            allowing: egressAllow.compactMap(EgressPolicy.Allowance.init),
            clusterRanges: clusterCidr.isEmpty ? EgressPolicy.defaultClusterRanges : clusterCidr.compactMap(AddressRange.init))
        configuration.ingressDomain = ingressDomain
        configuration.followRefs = followRefsEvery > 0 ? .seconds(followRefsEvery) : nil
        configuration.publishImageStreams = publishImageStreams
        configuration.notebookImageNamespace = notebookImageNamespace.isEmpty ? nil : notebookImageNamespace
        if argoServed, !trustServed {
            logger.notice(
                "edge delivery is off: the EdgeTrustPolicy CRD is not installed (kubectl apply -f crds/meteor.zone_edgetrustpolicies.yaml); it says which keys may sign what is deployed to devices"
            )
        } else if argoServed {
            var edge = EdgeSettings()
            edge.argocdNamespace = argocdNamespace
            edge.project = argocdProject
            edge.clusterSelectors = edgeClusterSelectors
            edge.insecureRegistries = Set(insecureRegistry)
            configuration.edge = edge
        } else {
            logger.notice("edge delivery is off: the cluster does not serve argoproj.io/v1alpha1 Applications (install Argo CD to enable it)")
        }
        // The file was checked by `validate`; a trailing newline (echo > file) is not part of the secret the forge has.
        let webhookSecret = gitWebhookSecretFile.flatMap { FileManager.default.contents(atPath: $0) }.map {
            Array(String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .newlines).utf8)
        }
        let (reconciler, meteorController) = await MeteorReconciler.register(
            with: manager, namespace: namespace, workers: concurrency, configuration: configuration, logger: logger)
        var watched: [(informer: DynamicInformer, repository: @Sendable (JSONValue) -> String?, queue: WorkQueue<ObjectKey>)] = [
            (reconciler.meteors, { $0[path: "spec", "url"]?.stringValue }, meteorController.queue)
        ]
        if environmentsServed {
            let (environments, environmentController) = await RuntimeEnvironmentReconciler.register(
                with: manager, builds: reconciler, namespace: namespace, logger: logger)
            watched.append((environments.environments, { $0[path: "spec", "repository"]?.stringValue }, environmentController.queue))
        } else {
            logger.notice(
                "custom notebook images are off: the CustomRuntimeEnvironment CRD is not installed (kubectl apply -f crds/meteor.zone_customruntimeenvironments.yaml)"
            )
        }
        var services: [any Service] = [manager]
        if let gitWebhookBindAddress, let webhookSecret, let refs = reconciler.refs {
            services.append(
                GitWebhook(
                    options: GitWebhook.Options(bindAddress: gitWebhookBindAddress, secret: webhookSecret),
                    onPush: GitPushHook.trigger(refs: refs, watched: watched), logger: logger))
        }
        if let showerBindAddress {
            var showerOptions = MeteorShower.Options(bindAddress: showerBindAddress, namespace: showerNamespace ?? namespace ?? cluster.namespace)
            showerOptions.allowSubmit = showerAllowSubmit
            showerOptions.allowAnonymous = showerAllowAnonymous
            showerOptions.trustedProxies = showerTrustedProxy.compactMap(AddressRange.init)
            showerOptions.forwardedGroups = Set(showerForwardGroup)
            if let showerSessionKeyFile {
                guard let key = FileManager.default.contents(atPath: showerSessionKeyFile), key.count >= 32 else {
                    throw Failure(
                        description:
                            "--shower-session-key-file \(showerSessionKeyFile): needs a readable file of 32 bytes or more (openssl rand -hex 32)")
                }
                showerOptions.sessionKey = SymmetricKey(data: key)
            }
            if showerAllowSubmit, showerTrustedProxy.isEmpty, !showerAllowAnonymous {
                logger.warning("the Shower believes no proxy (--shower-trusted-proxy): nobody can sign in, so it is read-only")
            }
            services.append(MeteorShower(options: showerOptions, client: client, meteors: reconciler.meteors, logger: logger))
        }
        logger.info(
            "starting",
            metadata: [
                "server": "\(cluster.server)", "namespace": "\(namespace ?? "*")", "leaderElection": "\(leaderElect)",
                "shower": "\(showerBindAddress ?? "off")",
            ])
        var groupConfiguration = ServiceGroupConfiguration(
            services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .milliseconds(Int64(gracefulShutdownTimeout * 1000))
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch {
            // Whatever stopped the group, the client's connections are closed before the process exits.
            try? await client.shutdown()
            throw Failure(description: "stopped on an error: \(error)")
        }
        try await client.shutdown()
    }

    /// Fails fast with one line when the cluster cannot be reached or the Meteor CRD is not served.
    /// `--edge-cluster-selectors` watches Argo CD's cluster Secrets: without list and watch there, the informer would
    /// retry forever and nothing would reconcile, so the operator stops at once and says what to apply.
    /// (SelfSubjectAccessReview; a server that does not serve it is not asked.)
    static func preflightClusterSecrets(_ client: KubeClient, namespace: String) async throws {
        let reviews = client.dynamic(
            ResourceType(
                group: "authorization.k8s.io", version: "v1", kind: "SelfSubjectAccessReview", plural: "selfsubjectaccessreviews", namespaced: false))
        for verb in ["list", "watch"] {
            let review: JSONValue = [
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": ["resourceAttributes": ["namespace": .string(namespace), "verb": .string(verb), "resource": "secrets"]],
            ]
            let answer: JSONValue
            do {
                answer = try await reviews.create(review)
            } catch let e as KubeError where e.isNotFound {
                return
            }
            guard answer[path: "status", "allowed"] == true else {
                throw Failure(
                    description:
                        "--edge-cluster-selectors needs \(verb) on secrets in namespace \(namespace) (kubectl apply -f config/rbac/argocd_cluster_reader_role.yaml)"
                )
            }
        }
    }

    static func preflight(_ client: KubeClient, server: String) async throws {
        do {
            let resources = try await client.json(.GET, "/apis/meteor.zone/v1alpha1")
            let served = (resources["resources"]?.arrayValue ?? []).contains { $0["name"] == "meteors" }
            if !served { throw KubeError.notFound(Status(message: "meteors not served", code: 404)) }
        } catch let e as KubeError where e.isNotFound {
            throw Failure(
                description: "the Meteor CRD (meteors.meteor.zone) is not installed on \(server): kubectl apply -f crds/meteor.zone_meteors.yaml")
        } catch let e as KubeError {
            if case .transport = e { throw Failure(description: "cannot reach the API server at \(server)") }
            throw Failure(description: "the API server at \(server) refused discovery: \(e)")
        }
    }
}
