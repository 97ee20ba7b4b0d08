import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// `config/` as kustomize renders it, read without kustomize: resources in order, directories recursed.
enum Kustomize {
    static func render(_ dir: URL) throws -> [JSONValue] {
        let kustomization = try YAML.parse(String(contentsOf: dir.appendingPathComponent("kustomization.yaml"), encoding: .utf8))
        var out: [JSONValue] = []
        for entry in (kustomization["resources"]?.arrayValue ?? []).compactMap(\.stringValue) {
            let url = dir.appendingPathComponent(entry).standardizedFileURL
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { throw Missing(path: url.path) }
            out += isDirectory.boolValue ? try render(url) : try YAML.parseAll(String(contentsOf: url, encoding: .utf8))
        }
        return out
    }

    struct Missing: Error { var path: String }
}

/// One rule of a Role or ClusterRole, as (apiGroup, resource, verb) triples, scoped to a namespace for Roles.
struct Grant: Hashable, CustomStringConvertible {
    var group: String
    var resource: String
    var verb: String
    var namespace: String?
    var description: String { "\(verb) \(resource).\(group.isEmpty ? "core" : group)\(namespace.map { " in \($0)" } ?? "")" }

    /// Every (group, resource, verb) a Role's or ClusterRole's rules grant, in `namespace` (nil: cluster-wide).
    static func granted(by rules: [JSONValue], namespace: String?) -> Set<Grant> {
        var grants = Set<Grant>()
        for rule in rules {
            for group in rule["apiGroups"]?.arrayValue ?? [] {
                for resource in rule["resources"]?.arrayValue ?? [] {
                    for verb in rule["verbs"]?.arrayValue ?? [] {
                        grants.insert(
                            Grant(group: group.stringValue!, resource: resource.stringValue!, verb: verb.stringValue!, namespace: namespace))
                    }
                }
            }
        }
        return grants
    }
}

@Suite struct DeploymentConfigTests {
    static let config = TestCluster.repositoryDirectory.appendingPathComponent("config")

    @Test func configDefaultRendersAndTheDeploymentIsLockedDown() async throws {
        let docs = try Kustomize.render(Self.config.appendingPathComponent("default"))
        let kinds = docs.compactMap { $0["kind"]?.stringValue }
        #expect(
            Set(kinds) == [
                "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Namespace", "Deployment",
                "Service",
            ])
        if let kubectl {
            let rendered = try await runProcess(kubectl, ["kustomize", Self.config.appendingPathComponent("default").path])
            #expect(rendered.status == 0, "\(rendered.output)")
            #expect(try YAML.parseAll(rendered.output).count == docs.count)
        }
        #expect(docs.contains { $0["kind"] == "CustomResourceDefinition" && $0[path: "metadata", "name"] == "meteors.meteor.zone" })
        let deployment = try #require(docs.first { $0["kind"] == "Deployment" })
        #expect(deployment[path: "spec", "replicas"] == 2)
        let pod = try #require(deployment[path: "spec", "template", "spec"])
        #expect(pod["serviceAccountName"] == "meteor-operator")
        #expect(pod[path: "securityContext", "runAsNonRoot"] == true)
        let container = try #require(pod["containers"]?.arrayValue?.first)
        let args = container["args"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(
            args.first == "run" && args.contains("--leader-elect") && args.contains("--health-probe-bind-address=:8081")
                && args.contains("--metrics-bind-address=:8443") && args.contains("--metrics-secure"))
        #expect(container[path: "livenessProbe", "httpGet"] == ["path": "/healthz", "port": "health"])
        #expect(container[path: "readinessProbe", "httpGet"] == ["path": "/readyz", "port": "health"])
        let ports = Dictionary(uniqueKeysWithValues: (container["ports"]?.arrayValue ?? []).map { ($0["name"]!.stringValue!, $0["containerPort"]!) })
        #expect(ports == ["metrics": 8443, "health": 8081])
        #expect(
            container[path: "securityContext"] == [
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "capabilities": ["drop": ["ALL"]],
            ])
        #expect(
            container[path: "resources", "requests", "memory"] != nil && container[path: "resources", "limits", "memory"] != nil
                && container[path: "resources", "limits", "cpu"] != nil)
        // The flags the Deployment passes are flags `meteor-operator run` accepts.
        let help = try await runProcess(operatorBinary, ["run", "--help"])
        for arg in args.dropFirst() { #expect(help.output.contains(String(arg.split(separator: "=")[0])), "\(arg)") }
    }

    @Test(.enabled(if: kubectl != nil, "no kubectl on this machine"))
    func deployScriptSetsTheImage() async throws {
        let script = TestCluster.repositoryDirectory.appendingPathComponent("hack/deploy.sh").path
        let r = try await runProcess(
            "/bin/bash", [script, "--dry-run", "registry.local:5000/me/meteor-operator:v9"],
            environment: ["PATH": "\((kubectl! as NSString).deletingLastPathComponent):/usr/bin:/bin"])
        #expect(r.status == 0, "\(r.output)")
        let deployment = try #require(try YAML.parseAll(r.output).first { $0["kind"] == "Deployment" })
        #expect(
            deployment[path: "spec", "template", "spec", "containers"]?.arrayValue?.first?["image"] == "registry.local:5000/me/meteor-operator:v9")
        let bad = try await runProcess("/bin/bash", [script])
        #expect(bad.status == 2 && bad.output.contains("usage:"))
    }

    /// No Docker engine runs here, so the image build is checked for what it must do, line by line.
    @Test func theDockerfileBuildsStaticallyAndRunsAsNonRoot() throws {
        let text = try String(contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let lines = text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
        let froms = lines.filter { $0.hasPrefix("FROM ") }
        #expect(froms.count == 2 && froms[0].hasSuffix(" AS build"))
        #expect(text.contains("swift build -c release --static-swift-stdlib --product meteor-operator"))
        let runtime = lines.drop { !$0.hasPrefix("FROM gcr.io/distroless") }
        #expect(runtime.filter { $0.hasPrefix("COPY") } == ["COPY --from=build /out/meteor-operator /usr/local/bin/meteor-operator"])
        #expect(runtime.contains { $0.hasPrefix("USER ") && !$0.contains("root") && !$0.hasPrefix("USER 0") })
        #expect(!runtime.contains { $0.hasPrefix("RUN ") }, "the runtime stage has no shell to run anything")
    }

    /// The grants the operator's ServiceAccount gets from config/rbac (through its bindings), and from the ClusterRoles
    /// config/rbac ships for namespaces to bind (`optIn`: meteor-operator-secret-reader) as if bound in `meteorNamespace`.
    static func operatorGrants(meteorNamespace: String = "default", optIn: Set<String> = ["meteor-operator-secret-reader"]) throws -> Set<Grant> {
        var docs = try Kustomize.render(config.appendingPathComponent("rbac"))
        let subject: JSONValue = ["kind": "ServiceAccount", "name": "meteor-operator", "namespace": "meteor-operator-system"]
        for role in optIn {
            docs.append([
                "kind": "RoleBinding", "metadata": ["name": .string(role), "namespace": .string(meteorNamespace)],
                "roleRef": ["kind": "ClusterRole", "name": .string(role)], "subjects": [subject],
            ])
        }
        var grants = Set<Grant>()
        for binding in docs where ["ClusterRoleBinding", "RoleBinding"].contains(binding["kind"]?.stringValue ?? "") {
            guard (binding["subjects"]?.arrayValue ?? []).contains(subject) else { continue }
            let roleKind = binding[path: "roleRef", "kind"]?.stringValue
            let roleName = binding[path: "roleRef", "name"]
            let namespace = binding["kind"] == "RoleBinding" ? binding[path: "metadata", "namespace"]?.stringValue : nil
            let role = try #require(
                docs.first {
                    $0["kind"]?.stringValue == roleKind && $0[path: "metadata", "name"] == roleName
                        && (roleKind == "ClusterRole" || $0[path: "metadata", "namespace"]?.stringValue == namespace)
                })
            grants.formUnion(Grant.granted(by: role["rules"]?.arrayValue ?? [], namespace: namespace))
        }
        return grants
    }

    /// bundle/ is what `hack/bundle.py` makes from config/ today, and its ClusterServiceVersion carries every CRD,
    /// permission and sample the kustomize install has: the same CRDs, each served version owned; every grant of the
    /// ServiceAccount (cluster-wide in clusterPermissions, in its namespace in permissions, a Role elsewhere as a
    /// ClusterRole of the bundle that the description tells the admin to bind there); every sample in alm-examples;
    /// the Deployment as config/ has it.
    @Test func theOLMBundleCarriesEveryCRDPermissionAndSampleOfTheInstall() async throws {
        let root = TestCluster.repositoryDirectory
        let check = try await runProcess("/usr/bin/env", ["python3", root.appendingPathComponent("hack/bundle.py").path, "--check"])
        #expect(check.status == 0, "\(check.output)")
        let manifests = root.appendingPathComponent("bundle/manifests")
        var bundled: [JSONValue] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: manifests.path).sorted() {
            bundled += try YAML.parseAll(String(contentsOf: manifests.appendingPathComponent(name), encoding: .utf8))
        }
        let csv = try #require(bundled.first { $0["kind"] == "ClusterServiceVersion" })
        let install = try Kustomize.render(Self.config.appendingPathComponent("default"))

        let owned = Set(
            (csv[path: "spec", "customresourcedefinitions", "owned"]?.arrayValue ?? []).map {
                "\($0["name"]?.stringValue ?? "")/\($0["version"]?.stringValue ?? "")"
            })
        let crds = install.filter { $0["kind"] == "CustomResourceDefinition" }
        #expect(crds.count == 3)
        for crd in crds {
            let name = crd[path: "metadata", "name"]?.stringValue ?? ""
            #expect(bundled.contains(crd), "CRD \(name) is not in bundle/manifests as config/ has it")
            for version in crd[path: "spec", "versions"]?.arrayValue ?? [] where version["served"] == true {
                #expect(owned.contains("\(name)/\(version["name"]?.stringValue ?? "")"), "\(name) is not owned by the CSV")
            }
        }

        let home = "meteor-operator-system"
        let strategy = try #require(csv[path: "spec", "install", "spec"])
        func csvGrants(_ field: String, namespace: String?) -> Set<Grant> {
            var grants = Set<Grant>()
            for p in strategy[field]?.arrayValue ?? [] where p["serviceAccountName"] == "meteor-operator" {
                grants.formUnion(Grant.granted(by: p["rules"]?.arrayValue ?? [], namespace: namespace))
            }
            return grants
        }
        let clusterWide = csvGrants("clusterPermissions", namespace: nil)
        let inHome = csvGrants("permissions", namespace: home)
        let description = csv[path: "spec", "description"]?.stringValue ?? ""
        let installGrants = try Self.operatorGrants(optIn: [])
        #expect(!installGrants.isEmpty)
        for grant in installGrants {
            switch grant.namespace {
            case nil: #expect(clusterWide.contains(grant), "\(grant) is not in the CSV's clusterPermissions")
            case home?: #expect(inHome.contains(grant), "\(grant) is not in the CSV's permissions")
            case let elsewhere?:
                let roles = bundled.filter { role in
                    role["kind"] == "ClusterRole"
                        && Grant.granted(by: role["rules"]?.arrayValue ?? [], namespace: elsewhere).contains(grant)
                        && description.contains("\(role[path: "metadata", "name"]?.stringValue ?? "") in \(elsewhere)")
                }
                #expect(!roles.isEmpty, "\(grant): no ClusterRole of the bundle carries it, named in the description for \(elsewhere)")
            }
        }

        let examples = try JSONValue.parse(Array((csv[path: "metadata", "annotations", "alm-examples"]?.stringValue ?? "").utf8)).arrayValue ?? []
        let samples = try Kustomize.render(Self.config.appendingPathComponent("samples"))
        #expect(!samples.isEmpty)
        for sample in samples { #expect(examples.contains(sample), "\(sample[path: "metadata", "name"] ?? .null) is not in alm-examples") }

        let deployment = try #require(install.first { $0["kind"] == "Deployment" })
        let csvDeployment = try #require(strategy["deployments"]?.arrayValue?.first)
        #expect(csvDeployment["name"] == deployment[path: "metadata", "name"])
        #expect(csvDeployment["spec"] == deployment["spec"])
        let modes = Dictionary(
            uniqueKeysWithValues: (csv[path: "spec", "installModes"]?.arrayValue ?? []).map { ($0["type"]?.stringValue ?? "", $0["supported"]) })
        #expect(modes == ["OwnNamespace": false, "SingleNamespace": false, "MultiNamespace": false, "AllNamespaces": true])
        #expect(csv[path: "spec", "icon"]?.arrayValue?.first?["mediatype"] == "image/svg+xml")
    }

    /// An API request as RBAC sees it: group, resource (with subresource), verb, namespace; nil for discovery.
    static func grant(for record: RequestRecord) -> Grant? {
        let s = record.path.split(separator: "/").map(String.init)
        var rest: [String]
        let group: String
        if s.first == "api", s.count >= 2 {
            group = ""; rest = Array(s.dropFirst(2))
        } else if s.first == "apis", s.count >= 3 {
            group = s[1]; rest = Array(s.dropFirst(3))
        } else {
            return nil
        }
        var namespace: String?
        if rest.first == "namespaces", rest.count >= 3 { namespace = rest[1]; rest = Array(rest.dropFirst(2)) }
        guard let resource = rest.first else { return nil }
        let sub = rest.count >= 3 ? "/" + rest[2] : ""
        return Grant(group: group, resource: resource + sub, verb: record.verb, namespace: namespace)
    }

    /// Every call the operator makes in an end-to-end run (JupyterBook with Ingress, JupyterHub with an
    /// ImageStream, drift repair, a superseded generation, edge verification and Applications, TTL expiry, leader
    /// election) is granted by config/rbac, and every grant is used: nothing more, no wildcards.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func rbacGrantsExactlyWhatTheOperatorCalls() async throws {
        let grants = try Self.operatorGrants()
        #expect(!grants.contains { $0.verb == "*" || $0.resource == "*" || $0.group == "*" })
        var testClient = KubeClient.Options()
        testClient.userAgent = "meteor-tests"
        let registry = try await LocalRegistry(port: nil)
        defer { registry.stop() }
        try await TestCluster.with(clientOptions: testClient, crds: ["crds/tekton/300-pipelinerun.yaml", "crds/argocd/application-crd.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            try c.server.installCRDs(
                yaml: """
                    apiVersion: apiextensions.k8s.io/v1
                    kind: CustomResourceDefinition
                    metadata: {name: imagestreams.image.openshift.io}
                    spec:
                      group: image.openshift.io
                      names: {kind: ImageStream, listKind: ImageStreamList, plural: imagestreams, singular: imagestream}
                      scope: Namespaced
                      versions:
                        - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
                    """)
            try await c.createNamespace("argocd")
            try await c.createNamespace("meteor-operator-system")
            try await c.createNamespace("opendatahub")
            let signer = CosignSigner()
            _ = try await c.client.api(Secret.self, namespace: "default").create(
                Secret(metadata: ObjectMeta(name: "cosign-pub", namespace: "default"), stringData: ["cosign.pub": signer.publicKeyPEM]))
            try await c.trust(publicKeyPEM: signer.publicKeyPEM)
            let op = try BackgroundProcess(
                operatorBinary,
                [
                    "run", "--kubeconfig", try c.writeKubeconfig(), "--leader-elect", "--leader-election-namespace", "meteor-operator-system",
                    "--ingress-class", "nginx", "--ingress-domain", "apps.example", "--insecure-registry", registry.address,
                    "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "text",
                ])
            defer { op.terminate() }

            // JupyterHub + JupyterBook; a spec change supersedes generation 1 (its runs are cancelled).
            _ = try await c.meteors.create([
                "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "notebooks"],
                "spec": ["url": "https://github.com/aicoe-aiops/meteor-demo", "ref": "main"],
            ])
            let g1 = PipelineRunBuilder.name(meteor: "notebooks", pipeline: .jupyterbook, generation: 1)
            _ = try await c.waitFor(c.runs, g1) { $0 != nil }
            _ = try await c.meteors.patch("notebooks", .merge(["spec": ["ref": "v2"]]))
            _ = try await c.waitFor(c.runs, g1) { $0?[path: "spec", "status"] == "Cancelled" }
            let digest = "sha256:" + String(repeating: "a", count: 64)
            for pipeline in [Pipeline.jupyterbook, .jupyterhub] {
                let run = PipelineRunBuilder.name(meteor: "notebooks", pipeline: pipeline, generation: 2)
                _ = try await c.waitFor(c.runs, run) { $0 != nil }
                // The notebook image in OpenShift's internal registry, which Open Data Hub's namespace may then pull.
                let url =
                    pipeline == .jupyterhub
                    ? "\(NotebookImage.openShiftRegistryHost)/default/notebooks-jupyterhub:g2" : "registry.example/\(pipeline.rawValue):g2"
                try await c.tekton(run, .succeeded, results: ["IMAGE_URL": url, "IMAGE_DIGEST": digest, "URL": "http://book"])
            }
            // Drift on each kind the operator manages is patched back.
            let selector = ListOptions(labelSelector: "\(MeteorLabels.meteor)=notebooks")
            let drift: [(ResourceType, JSONValue, @Sendable (JSONValue?) -> Bool)] = [
                (BookSite.deploymentType, ["spec": ["replicas": 3]], { $0?[path: "spec", "replicas"] == 1 }),
                (
                    BookSite.serviceType, ["spec": ["ports": [["name": "http", "port": 9999, "targetPort": "http"]]]],
                    { $0?[path: "spec", "ports"]?.arrayValue?.first?["port"] == 8080 }
                ),
                (BookSite.ingressType, ["spec": ["ingressClassName": "other"]], { $0?[path: "spec", "ingressClassName"] == "nginx" }),
                (NotebookImage.imageStreamType, ["spec": ["lookupPolicy": ["local": false]]], { $0?[path: "spec", "lookupPolicy", "local"] == true }),
                (
                    NotebookImage.roleBindingType,
                    ["subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"]]],
                    {
                        $0?[path: "subjects"] == [
                            ["apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:serviceaccounts:opendatahub"]
                        ]
                    }
                ),
            ]
            for (type, patch, repaired) in drift {
                // Notebook ImageStreams go to Open Data Hub's namespace (--notebook-image-namespace's default).
                let api = c.client.dynamic(type, namespace: type == NotebookImage.imageStreamType ? "opendatahub" : "default")
                var items = try await api.list(selector).items
                while items.isEmpty {
                    _ = try await c.waitFor(c.meteors, "notebooks") { $0 != nil }
                    for try await _ in api.watch(WatchOptions(labelSelector: selector.labelSelector, allowBookmarks: false)) { break }
                    items = try await api.list(selector).items
                }
                let name = items[0][path: "metadata", "name"]!.stringValue!
                _ = try await api.patch(name, .merge(patch))
                _ = try await c.waitFor(api, name, repaired)
            }
            _ = try await c.waitFor(c.meteors, "notebooks") { condition($0, "Ready")?["status"] == "True" }

            // A third generation: the cancelled generation-1 runs, now finished, are pruned (the newest superseded
            // run of each pipeline, generation 2's, stays).
            for pipeline in [Pipeline.jupyterbook, .jupyterhub] {
                try await c.tekton(
                    PipelineRunBuilder.name(meteor: "notebooks", pipeline: pipeline, generation: 1), .failed, message: "PipelineRun was cancelled")
            }
            _ = try await c.meteors.patch("notebooks", .merge(["spec": ["ref": "v3"]]))
            for pipeline in [Pipeline.jupyterbook, .jupyterhub] {
                _ = try await c.waitFor(c.runs, PipelineRunBuilder.name(meteor: "notebooks", pipeline: pipeline, generation: 1)) { $0 == nil }
                #expect(
                    try await c.runs.get(PipelineRunBuilder.name(meteor: "notebooks", pipeline: pipeline, generation: 2))[path: "metadata", "name"]
                        != nil)
            }

            // A CustomRuntimeEnvironment: its run, its status, its listing in Open Data Hub's namespace and the finalizer
            // that removes it.
            let environments = c.client.dynamic(CustomRuntimeEnvironment.resourceType, namespace: "default")
            _ = try await environments.create([
                "apiVersion": "meteor.zone/v1alpha1", "kind": "CustomRuntimeEnvironment", "metadata": ["name": "imported"],
                "spec": ["buildType": "ImageImport", "fromImage": "quay.io/o/notebook:1"],
            ])
            _ = try await c.waitFor(c.runs, "imported-import-g1") { $0 != nil }
            try await c.tekton("imported-import-g1", .succeeded, results: ["IMAGE_URL": "quay.io/o/notebook:1", "IMAGE_DIGEST": digest])
            _ = try await c.waitFor(environments, "imported") { condition($0, "Ready")?["status"] == "True" }
            try await environments.delete("imported")
            _ = try await c.waitFor(environments, "imported") { $0 == nil }

            // Edge: verification reads the key Secret, Applications are created, and deleted with the Meteor.
            let repo = try RegistryClient.Reference(parsing: "\(registry.address)/meteor/donkeycar")
            let client = RegistryClient(insecure: true, egress: .unrestricted)
            let image = try await client.pushImage(repo, tag: "g1", platform: "linux/arm64", content: "car")
            try await client.push(try signer.sign(digest: image, dockerReference: "\(registry.address)/meteor/donkeycar:g1"), to: repo)
            var edge = donkeycarEdge(registry: registry.address)
            edge.images.removeLast()
            edge.targets.removeLast()
            _ = try await c.meteors.create(
                try JSONValue(
                    encoding: Meteor(
                        metadata: ObjectMeta(name: "car"), spec: .init(url: "https://github.com/x/car", ref: "main", pipelines: ["edge"], edge: edge))
                ))
            let carRun = EdgePipelineRunBuilder.name(meteor: "car", image: "car", build: EdgeBuild(ref: "main", release: nil, generation: 1))
            _ = try await c.waitFor(c.runs, carRun) { $0 != nil }
            try await c.tekton(carRun, .succeeded, results: ["IMAGE_URL": "\(registry.address)/meteor/donkeycar:g1", "IMAGE_DIGEST": image])
            let app = ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: "car", target: "rpi")
            _ = try await c.waitFor(c.applications, app) { $0 != nil }
            _ = try await c.applications.patch(app, .merge(["spec": ["source": ["targetRevision": "someone-elses"]]]))
            _ = try await c.waitFor(c.applications, app) { $0?[path: "spec", "source", "targetRevision"] == .string(TestCluster.commit(of: "main")) }
            _ = try await c.meteors.delete("car")
            _ = try await c.waitFor(c.meteors, "car") { $0 == nil }
            _ = try await c.waitFor(c.applications, app) { $0 == nil || $0?[path: "metadata", "deletionTimestamp"] != nil }

            // TTL: a Meteor older than its new TTL is deleted by the operator.
            _ = try await c.meteors.patch("notebooks", .merge(["spec": ["ttl": 1]]))
            _ = try await c.waitFor(c.meteors, "notebooks") { $0 == nil }

            op.signal(SIGTERM)
            #expect(await op.wait() == 0, "\(op.text)")
            let calls = Set(c.server.requestLog.filter { $0.userAgent.hasPrefix("meteor-operator/") }.compactMap(Self.grant(for:)))
            #expect(!calls.isEmpty)
            for call in calls {
                let granted = grants.contains {
                    $0.group == call.group && $0.resource == call.resource && $0.verb == call.verb
                        && ($0.namespace == nil || $0.namespace == call.namespace)
                }
                #expect(granted, "config/rbac does not grant: \(call)")
            }
            // Patching an Event happens only when one repeats (aggregation), which this run need not hit.
            // `update meteors/finalizers` is never called: OwnerReferencesPermissionEnforcement (OpenShift's default)
            // demands it of whoever creates children with blockOwnerDeletion, which RealInstallTests proves on a real
            // API server with the admission plugin on.
            // `bind` on system:image-puller is checked by RBAC when the image-puller RoleBinding is created, never
            // called (RealInstallTests.theImagePullerRoleBindingNeedsAndHasBindOnThatRoleOnly, on real RBAC).
            // The reviews secure metrics ask for are made when something scrapes /metrics, which this run does not
            // (SecurityTests.metricsAreServedOnlyToScrapersTheAPIServerAllows proves them on real RBAC).
            let optional: Set<String> = [
                "patch events.", "update meteors/finalizers.meteor.zone", "update customruntimeenvironments/finalizers.meteor.zone",
                "bind clusterroles.rbac.authorization.k8s.io",
                "create tokenreviews.authentication.k8s.io", "create subjectaccessreviews.authorization.k8s.io",
            ]
            for grant in grants where !optional.contains("\(grant.verb) \(grant.resource).\(grant.group)") {
                let used = calls.contains {
                    $0.group == grant.group && $0.resource == grant.resource && $0.verb == grant.verb
                        && (grant.namespace == nil || $0.namespace == grant.namespace)
                }
                #expect(used, "config/rbac grants more than the operator uses: \(grant)")
            }
        }
    }
}

@Suite struct DocumentationTests {
    static let readme = TestCluster.repositoryDirectory.appendingPathComponent("README.md")

    @Test func theAPIReferenceMatchesTheCRD() async throws {
        let r = try await runProcess(
            "/usr/bin/env", ["python3", TestCluster.repositoryDirectory.appendingPathComponent("hack/api-reference.py").path, "--check"])
        #expect(r.status == 0, "README.md's API reference is stale: run hack/api-reference.py\n\(r.output)")
        let text = try String(contentsOf: Self.readme, encoding: .utf8)
        for field in [
            "`spec.edge.targets[].cluster`", "`spec.edge.release.tagPattern`", "`status.images[].keyFingerprint`",
            "`status.deployments[].healthStatus`",
        ] {
            #expect(text.contains(field), "\(field)")
        }
    }

    @Test func theTwoCommandsAreTheOnesCIRuns() throws {
        let text = try String(contentsOf: Self.readme, encoding: .utf8)
        #expect(text.contains("swift run meteor-operator sandbox   #"))
        #expect(text.contains("hack/test                           #"))
        let ci = try String(contentsOf: TestCluster.repositoryDirectory.appendingPathComponent(".ci/run"), encoding: .utf8)
        #expect(ci.split(separator: "\n").contains { $0.hasPrefix("exec hack/test") || $0 == "hack/test" || $0.hasPrefix("bash hack/test") })
    }
}
