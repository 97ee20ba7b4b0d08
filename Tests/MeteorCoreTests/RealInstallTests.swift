import Foundation
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// The install path of the README on the kit's real kube-apiserver (RBAC and OwnerReferencesPermissionEnforcement
/// enforced, as on OpenShift): `kubectl apply -k config/default` and `-k manifests/tekton`, then the operator
/// binary with the token of the ServiceAccount config/rbac binds reconciles the samples to Ready through the real
/// Tekton controller. A verb config/rbac lacks is a 403 here, and the operator's log would say so.
@Suite(.serialized) struct RealInstallTests {
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func theInstalledOperatorReconcilesTheSamplesWithItsOwnPermissions() async throws {
        E2ETally.record(.real)
        let kit = try await KitControlPlane.shared()
        try await kit.ensureTekton()
        let repo = TestCluster.repositoryDirectory
        // Argo CD's namespace holds the operator's Applications Role; Argo CD itself is a prerequisite of edge only.
        _ = try await kit.kubectl(["create", "namespace", "argocd"])
        let installed = try await kit.kubectlOK("apply", "-k", repo.appendingPathComponent("config/default").path)
        for object in [
            "customresourcedefinition.apiextensions.k8s.io/meteors.meteor.zone", "clusterrole.rbac.authorization.k8s.io/meteor-operator-manager",
            "deployment.apps/meteor-operator",
        ] {
            #expect(installed.contains(object), "\(installed)")
        }
        try await kit.kubectlOK("wait", "--for=condition=Established", "crd/meteors.meteor.zone", "--timeout=60s")
        let namespace = try await kit.freshNamespace("install")
        try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "pipeline")
        try await kit.kubectlOK("-n", namespace, "apply", "-k", repo.appendingPathComponent("manifests/tekton").path)

        // What the RBAC grants, and nothing else: the ServiceAccount's own token.
        let token = try await kit.kubectlOK("-n", "meteor-operator-system", "create", "token", "meteor-operator", "--duration=1h").trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(
            try await kit.kubectlOK(
                "auth", "can-i", "update", "meteors.meteor.zone", "--subresource=finalizers",
                "--as=system:serviceaccount:meteor-operator-system:meteor-operator"
            ).hasPrefix("yes"))
        #expect(
            try await kit.kubectl(["auth", "can-i", "list", "secrets", "--as=system:serviceaccount:meteor-operator-system:meteor-operator"]).output
                .hasPrefix("no"))
        let kubeconfig = try kit.writeKubeconfig(token: token, namespace: namespace)
        let op = try BackgroundProcess(
            operatorBinary,
            [
                "run", "--kubeconfig", kubeconfig, "--namespace", namespace, "--leader-elect", "--leader-election-namespace",
                "meteor-operator-system",
                "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "json",
                // Notebook images listed beside what built them (other tests may have made the kit serve ImageStreams).
                "--notebook-image-namespace", "",
            ])
        defer { op.terminate() }
        let samples = repo.appendingPathComponent("config/samples")
        for sample in [
            "meteor_v1alpha1_meteor.yaml", "meteor_jupyterbook.yaml", "meteor_jupyterhub.yaml", "cre_package_list.yaml", "cre_image_import.yaml",
            "cre_git_repository.yaml",
        ] {
            try await kit.kubectlOK("-n", namespace, "apply", "-f", samples.appendingPathComponent(sample).path)
        }
        let waited = try await kit.kubectl(["-n", namespace, "wait", "--for=condition=Ready", "meteors", "--all", "--timeout=120s"])
        #expect(waited.status == 0, "\(waited.output)\n--- operator:\n\(op.text.suffix(4000))")
        // CustomRuntimeEnvironments of every build type, through the real Tekton, with the installed RBAC only.
        let environments = try await kit.kubectl(["-n", namespace, "wait", "--for=condition=Ready", "cre", "--all", "--timeout=120s"])
        #expect(
            environments.status == 0 && environments.output.split(separator: "\n").count == 3,
            "\(environments.output)\n--- operator:\n\(op.text.suffix(4000))")
        #expect(try await kit.kubectlOK("explain", "customruntimeenvironment.spec.fromImage").contains("ImageImport"))
        // The operator's writes all went through: Events, children with blockOwnerDeletion, status.
        let events = try await kit.kubectlOK(
            "-n", namespace, "get", "events", "--field-selector", "reason=PipelineRunCreated", "-o",
            "jsonpath={range .items[*]}{.involvedObject.kind}{\"\\n\"}{end}")
        #expect(
            events.split(separator: "\n").sorted() == [
                "CustomRuntimeEnvironment", "CustomRuntimeEnvironment", "CustomRuntimeEnvironment", "Meteor", "Meteor", "Meteor",
            ], "\(events)")
        #expect(
            try await kit.kubectlOK(
                "-n", namespace, "get", "deployment", "meteor-demo-book-book", "-o", "jsonpath={.metadata.ownerReferences[0].blockOwnerDeletion}")
                == "true")
        #expect(!op.text.contains("forbidden"), "the operator was refused something:\n\(op.text.suffix(4000))")
        op.signal(SIGTERM)
        #expect(await op.wait() == 0, "\(op.text.suffix(2000))")
        _ = try await kit.kubectl(["delete", "namespace", namespace, "--wait=false"])
    }

    /// RBAC taken away at run time, with real RBAC: the operator, bound to config/rbac's rules less `create
    /// pipelineruns`, reports the refusal on the Meteor (Ready=False, reason Forbidden, the server's words naming
    /// the verb and resource) and in a Warning Event, keeps retrying with backoff, and converges once the
    /// permission is granted again, without a restart.
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func aPermissionTakenAwayIsReportedAndTheMeteorConvergesWhenItIsBack() async throws {
        E2ETally.record(.real)
        let kit = try await KitControlPlane.shared()
        try await kit.ensureTekton()
        let repo = TestCluster.repositoryDirectory
        try await kit.install("crds/meteor.zone_meteors.yaml")
        try await kit.install("crds/meteor.zone_customruntimeenvironments.yaml")
        let namespace = try await kit.freshNamespace("forbidden")
        try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "pipeline")
        try await kit.kubectlOK("-n", namespace, "apply", "-k", repo.appendingPathComponent("manifests/tekton").path)

        let full = try String(contentsOf: repo.appendingPathComponent("config/rbac/role.yaml"), encoding: .utf8)
        let role = "meteor-operator-\(namespace)"
        let granted = full.replacingOccurrences(of: "name: meteor-operator-manager", with: "name: \(role)")
        let pipelineRunVerbs = "resources: [pipelineruns]\n    verbs: [list, watch, create, patch, delete]"
        try #require(granted.contains(pipelineRunVerbs), "config/rbac/role.yaml's PipelineRun rule changed; update this test")
        let narrowed = granted.replacingOccurrences(of: pipelineRunVerbs, with: "resources: [pipelineruns]\n    verbs: [list, watch, patch, delete]")
        // Notebook images listed beside what built them: another test of this process may have made the kit serve
        // ImageStreams, and Open Data Hub's namespace does not exist here (an environment would wait for its listing).
        try await Self.withOperator(
            kit, namespace: namespace, clusterRole: narrowed, named: role, arguments: ["--notebook-image-namespace", ""]
        ) { op in
            try await kit.kubectlOK("-n", namespace, "apply", "-f", repo.appendingPathComponent("config/samples/meteor_jupyterhub.yaml").path)
            let message = try await Self.forbiddenMessage(kit, namespace: namespace, meteor: "meteor-demo-image", op: op)
            #expect(message.contains("cannot create resource \"pipelineruns\" in API group \"tekton.dev\""), "\(message)")
            let events = try await kit.kubectlOK(
                "-n", namespace, "get", "events", "--field-selector", "reason=Forbidden,involvedObject.name=meteor-demo-image", "-o",
                "jsonpath={.items[*].type}")
            #expect(events.split(separator: " ").first == "Warning", "\(events)")
            // A CustomRuntimeEnvironment is told the same way.
            try await kit.kubectlOK("-n", namespace, "apply", "-f", repo.appendingPathComponent("config/samples/cre_image_import.yaml").path)
            let environmentMessage = try await Self.forbiddenMessage(kit, namespace: namespace, meteor: "minimal-notebook", kind: "cre", op: op)
            #expect(environmentMessage.contains("cannot create resource \"pipelineruns\" in API group \"tekton.dev\""), "\(environmentMessage)")

            // The permission is back: the next retry builds, and the Meteor and the environment become Ready.
            try await kit.kubectlOK("apply", "-f", "-", input: granted)
            let waited = try await kit.kubectl(["-n", namespace, "wait", "--for=condition=Ready", "meteor/meteor-demo-image", "--timeout=120s"])
            #expect(waited.status == 0, "\(waited.output)\n--- operator:\n\(op.text.suffix(4000))")
            let environment = try await kit.kubectl(["-n", namespace, "wait", "--for=condition=Ready", "cre/minimal-notebook", "--timeout=120s"])
            #expect(environment.status == 0, "\(environment.output)\n--- operator:\n\(op.text.suffix(4000))")
            ReliabilityReport.row(
                "create pipelineruns taken from the operator's ClusterRole while it runs, then given back (real RBAC)", injected: "1 verb",
                did:
                    "Ready=False Forbidden with the server's message naming verb and resource, a Warning Event, retried with backoff; Ready once granted, no restart",
                lost: "0")
        }
    }

    /// The operator as its own process, watching `namespace`, with `clusterRole` (config/rbac's manager role, as
    /// given, named `name`) bound to a ServiceAccount of that namespace and config/rbac's Role in Argo CD's namespace
    /// (where another test has installed Argo CD's Application CRD, edge delivery is on and its informer needs it).
    /// Stopped with SIGTERM and everything removed after `body`.
    static func withOperator(
        _ kit: KitControlPlane, namespace: String, clusterRole: String, named role: String, arguments: [String] = [],
        _ body: (BackgroundProcess) async throws -> Void
    ) async throws {
        let repo = TestCluster.repositoryDirectory
        try await kit.kubectlOK("apply", "-f", "-", input: clusterRole)
        try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "operator")
        try await kit.kubectlOK("create", "clusterrolebinding", role, "--clusterrole=\(role)", "--serviceaccount=\(namespace):operator")
        _ = try await kit.kubectl(["create", "namespace", "argocd"])
        try await kit.kubectlOK("apply", "-f", repo.appendingPathComponent("config/rbac/argocd_role.yaml").path)
        try await kit.kubectlOK(
            "-n", "argocd", "create", "rolebinding", role, "--role=meteor-operator-applications", "--serviceaccount=\(namespace):operator")
        let token = try await kit.kubectlOK("-n", namespace, "create", "token", "operator", "--duration=1h").trimmingCharacters(
            in: .whitespacesAndNewlines)
        let op = try BackgroundProcess(
            operatorBinary,
            [
                "run", "--kubeconfig", try kit.writeKubeconfig(token: token, namespace: namespace), "--namespace", namespace,
                "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "text",
            ] + arguments)
        defer { op.terminate() }
        do {
            try await body(op)
        } catch {
            await removeOperator(kit, op, namespace: namespace, role: role)
            throw error
        }
        await removeOperator(kit, op, namespace: namespace, role: role)
    }

    /// Waits (kubectl wait) for the Meteor's (or another `kind`'s) Ready reason to be Forbidden; returns its message.
    static func forbiddenMessage(
        _ kit: KitControlPlane, namespace: String, meteor: String, kind: String = "meteor", op: BackgroundProcess
    ) async throws -> String {
        let refused = try await kit.kubectl([
            "-n", namespace, "wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=Forbidden", "\(kind)/\(meteor)",
            "--timeout=60s",
        ])
        #expect(refused.status == 0, "\(refused.output)\n--- operator:\n\(op.text.suffix(4000))")
        return try await kit.kubectlOK(
            "-n", namespace, "get", "\(kind)/\(meteor)", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}")
    }

    static func removeOperator(_ kit: KitControlPlane, _ op: BackgroundProcess, namespace: String, role: String) async {
        op.signal(SIGTERM)
        _ = await op.wait()
        _ = try? await kit.kubectl(["-n", "argocd", "delete", "rolebinding", role])
        _ = try? await kit.kubectl(["delete", "clusterrolebinding", role])
        _ = try? await kit.kubectl(["delete", "clusterrole", role])
        _ = try? await kit.kubectl(["delete", "namespace", namespace, "--wait=false"])
    }

    /// Secrets are read only where a namespace lets the operator (issue 15, item 4): with config/rbac's grants the
    /// operator cannot get a Secret anywhere — not a Meteor's git credentials, not Argo CD's cluster Secrets — and a
    /// Meteor naming one says so in the API server's words; once its namespace binds config/rbac's
    /// meteor-operator-secret-reader, the operator reads it and builds, without a restart.
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func secretsAreReadOnlyWhereANamespaceBindsTheReader() async throws {
        E2ETally.record(.real)
        let kit = try await KitControlPlane.shared()
        try await kit.ensureTekton()
        let repo = TestCluster.repositoryDirectory
        for crd in MeteorEnvironment.operatorCRDFiles { try await kit.install(crd) }
        let namespace = try await kit.freshNamespace("secrets")
        try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "pipeline")
        try await kit.kubectlOK("-n", namespace, "apply", "-k", repo.appendingPathComponent("manifests/tekton").path)
        let role = "meteor-operator-\(namespace)"
        let granted = try String(contentsOf: repo.appendingPathComponent("config/rbac/role.yaml"), encoding: .utf8).replacingOccurrences(
            of: "name: meteor-operator-manager", with: "name: \(role)")
        try await kit.kubectlOK("apply", "-f", repo.appendingPathComponent("config/rbac/secret_reader_role.yaml").path)
        try await kit.kubectlOK(
            "-n", namespace, "create", "secret", "generic", "repo-creds", "--type=kubernetes.io/basic-auth", "--from-literal=username=bot",
            "--from-literal=password=t0ken")
        try await Self.withOperator(kit, namespace: namespace, clusterRole: granted, named: role) { op in
            let me = "--as=system:serviceaccount:\(namespace):operator"
            for ns in [namespace, "argocd", "kube-system"] {
                #expect(try await kit.kubectl(["auth", "can-i", "get", "secrets", "-n", ns, me]).output.hasPrefix("no"), "get secrets in \(ns)")
            }
            try await kit.kubectlOK(
                "-n", namespace, "apply", "-f", "-",
                input: """
                    apiVersion: meteor.zone/v1alpha1
                    kind: Meteor
                    metadata: {name: private}
                    spec: {url: "https://git.example.com/team/private.git", ref: main, pipelines: [jupyterhub], gitSecretRef: {name: repo-creds}}
                    """)
            let message = try await Self.forbiddenMessage(kit, namespace: namespace, meteor: "private", op: op)
            #expect(message.contains("cannot get resource \"secrets\""), "\(message)")
            #expect(try await kit.kubectlOK("-n", namespace, "get", "pipelineruns", "-o", "name").isEmpty, "nothing is built without its credentials")

            // The namespace lets the operator read its Secrets: the next retry reads them and builds.
            try await kit.kubectlOK(
                "-n", namespace, "create", "rolebinding", "meteor-operator-secret-reader", "--clusterrole=meteor-operator-secret-reader",
                "--serviceaccount=\(namespace):operator")
            #expect(try await kit.kubectl(["auth", "can-i", "get", "secrets", "-n", namespace, me]).output.hasPrefix("yes"))
            #expect(
                try await kit.kubectl(["auth", "can-i", "get", "secrets", "-n", "argocd", me]).output.hasPrefix("no"),
                "still not Argo CD's cluster Secrets")
            let built = try await kit.kubectl([
                "-n", namespace, "wait", "--for=jsonpath={.status.phase}=Building", "meteor/private", "--timeout=120s",
            ])
            #expect(built.status == 0, "\(built.output)\n--- operator:\n\(op.text.suffix(4000))")
            let runs = try await kit.kubectlOK(
                "-n", namespace, "get", "pipelineruns", "-o", "jsonpath={.items[*].spec.workspaces[?(@.name==\"git-credentials\")].secret.secretName}"
            )
            #expect(runs.contains("repo-creds"), "the run clones with the Secret: \(runs)")
            ReliabilityReport.row(
                "A Meteor naming a Secret in a namespace that has not let the operator read Secrets (real RBAC), then binding meteor-operator-secret-reader",
                injected: "1 gitSecretRef",
                did: "Ready=False Forbidden naming get secrets, nothing built; built once the namespace bound the reader, no restart",
                lost: "0 (no cluster-wide Secret read: not Argo CD's cluster Secrets)")
        }
    }

    /// Fleets are the cluster admin's opt-in (issue 19): `--edge-cluster-selectors` without
    /// config/rbac/argocd_cluster_reader_role.yaml stops the operator at start, naming the file, instead of an
    /// informer refused forever; with it, the operator may list and watch Secrets in Argo CD's namespace only (not
    /// get them, not elsewhere), and it runs.
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func clusterSelectionIsAnOptInThatReadsArgoCDsNamespaceOnly() async throws {
        E2ETally.record(.real)
        let kit = try await KitControlPlane.shared()
        let repo = TestCluster.repositoryDirectory
        try await kit.ensureTekton()
        for crd in MeteorEnvironment.operatorCRDFiles + ["crds/argocd/application-crd.yaml"] { try await kit.install(crd) }
        let namespace = try await kit.freshNamespace("fleet")
        let role = "meteor-operator-\(namespace)"
        let granted = try String(contentsOf: repo.appendingPathComponent("config/rbac/role.yaml"), encoding: .utf8).replacingOccurrences(
            of: "name: meteor-operator-manager", with: "name: \(role)")
        try await Self.withOperator(kit, namespace: namespace, clusterRole: granted, named: role, arguments: ["--edge-cluster-selectors"]) { op in
            #expect(await op.wait() != 0)
            #expect(
                op.text.contains(
                    "--edge-cluster-selectors needs list on secrets in namespace argocd (kubectl apply -f config/rbac/argocd_cluster_reader_role.yaml)"
                ), "\(op.text.suffix(2000))")
        }
        let namespace2 = try await kit.freshNamespace("fleet")
        let role2 = "meteor-operator-\(namespace2)"
        let reader = try String(contentsOf: repo.appendingPathComponent("config/rbac/argocd_cluster_reader_role.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "name: meteor-operator-argocd-clusters", with: "name: \(role2)-clusters").replacingOccurrences(
                of: "namespace: meteor-operator-system", with: "namespace: \(namespace2)"
            )
            .replacingOccurrences(of: "name: meteor-operator\n", with: "name: operator\n")
        try await kit.kubectlOK("apply", "-f", "-", input: reader)
        defer { Task { _ = try? await kit.kubectl(["-n", "argocd", "delete", "role,rolebinding", "\(role2)-clusters"]) } }
        let granted2 = granted.replacingOccurrences(of: "name: \(role)", with: "name: \(role2)")
        try await Self.withOperator(kit, namespace: namespace2, clusterRole: granted2, named: role2, arguments: ["--edge-cluster-selectors"]) { op in
            let me = "--as=system:serviceaccount:\(namespace2):operator"
            for verb in ["list", "watch"] {
                #expect(try await kit.kubectl(["auth", "can-i", verb, "secrets", "-n", "argocd", me]).output.hasPrefix("yes"), "\(verb)")
            }
            #expect(try await kit.kubectl(["auth", "can-i", "get", "secrets", "-n", "argocd", me]).output.hasPrefix("no"))
            #expect(try await kit.kubectl(["auth", "can-i", "list", "secrets", "-n", "kube-system", me]).output.hasPrefix("no"))
            try await kit.kubectlOK(
                "-n", namespace2, "apply", "-f", "-",
                input: """
                    apiVersion: meteor.zone/v1alpha1
                    kind: Meteor
                    metadata: {name: book}
                    spec: {url: "https://github.com/aicoe-aiops/meteor-demo", ref: main, pipelines: [jupyterbook]}
                    """)
            // Running, caches synced (the cluster Secrets' among them): the Meteor is reconciled.
            let seen = try await kit.kubectl([
                "-n", namespace2, "wait", "--for=jsonpath={.status.observedGeneration}=1", "meteor/book", "--timeout=60s",
            ])
            #expect(seen.status == 0, "\(seen.output)\n--- operator:\n\(op.text.suffix(3000))")
            #expect(!op.text.contains("forbidden"), "\(op.text.suffix(3000))")
        }
    }

    /// The image-puller RoleBinding the operator writes beside a Meteor grants a ClusterRole it does not hold, which
    /// real RBAC allows only with `bind` on that role: with config/rbac's rules the create goes through; without
    /// the `bind` rule it is refused by the escalation check, naming it.
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func theImagePullerRoleBindingNeedsAndHasBindOnThatRoleOnly() async throws {
        E2ETally.record(.real)
        let kit = try await KitControlPlane.shared()
        let repo = TestCluster.repositoryDirectory
        let namespace = try await kit.freshNamespace("puller")
        let full = try String(contentsOf: repo.appendingPathComponent("config/rbac/role.yaml"), encoding: .utf8)
        let role = "meteor-operator-\(namespace)"
        let granted = full.replacingOccurrences(of: "name: meteor-operator-manager", with: "name: \(role)")
        let bindRule =
            "  - apiGroups: [rbac.authorization.k8s.io]\n    resources: [clusterroles]\n    verbs: [bind]\n    resourceNames: [system:image-puller]\n"
        try #require(granted.contains(bindRule), "config/rbac/role.yaml's bind rule changed; update this test")
        try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "operator")
        try await kit.kubectlOK("create", "clusterrolebinding", role, "--clusterrole=\(role)", "--serviceaccount=\(namespace):operator")
        let token = try await kit.kubectlOK("-n", namespace, "create", "token", "operator", "--duration=1h").trimmingCharacters(
            in: .whitespacesAndNewlines)
        let client = try kit.client(token: token)
        let meteor = Meteor(metadata: ObjectMeta(name: "odh", namespace: namespace), spec: .init(url: "https://github.com/x/y", ref: "main"))
        let rbs = client.dynamic(NotebookImage.roleBindingType, namespace: namespace)

        // OpenShift's bootstrap role, which a vanilla API server lacks (a binding to a missing role is a 404):
        // its rules as OpenShift ships them.
        try await kit.kubectlOK(
            "apply", "-f", "-",
            input: """
                apiVersion: rbac.authorization.k8s.io/v1
                kind: ClusterRole
                metadata: {name: "system:image-puller"}
                rules:
                  - apiGroups: ["", image.openshift.io]
                    resources: [imagestreams/layers]
                    verbs: [get]
                """)
        try await kit.kubectlOK("apply", "-f", "-", input: granted.replacingOccurrences(of: bindRule, with: ""))
        let binding = NotebookImage.imagePullerRoleBinding(NotebookImage.Source(meteor: meteor), owner: [:], pullersNamespace: "opendatahub")
        do { _ = try await rbs.create(binding); Issue.record("created without bind") } catch let e as KubeError {
            #expect(e.status?.code == 403 && e.status?.message?.contains("attempting to grant RBAC permissions not currently held") == true, "\(e)")
        }

        try await kit.kubectlOK("apply", "-f", "-", input: granted)
        // RBAC's cache takes the new rule a moment later; the operator's own retries are what a user sees.
        let created = try await within(.seconds(30), "the RoleBinding create with bind granted") { () async throws -> JSONValue in
            while true {
                do { return try await rbs.create(binding) } catch let e as KubeError where e.status?.code == 403 {
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
        }
        #expect(
            created[path: "roleRef", "name"] == "system:image-puller"
                && created["subjects"]?.arrayValue?.first?["name"] == "system:serviceaccounts:opendatahub")
        // bind reaches that one role only.
        var other = binding
        other[path: "metadata", "name"] = "other"
        other[path: "roleRef", "name"] = "cluster-admin"
        do { _ = try await rbs.create(other); Issue.record("a RoleBinding to cluster-admin went through") } catch let e as KubeError {
            #expect(e.status?.code == 403)
        }
        try await client.shutdown()
        _ = try await kit.kubectl(["delete", "clusterrolebinding", role])
        _ = try await kit.kubectl(["delete", "clusterrole", role])
        _ = try await kit.kubectl(["delete", "namespace", namespace, "--wait=false"])
    }
}
