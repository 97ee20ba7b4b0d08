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
        for object in ["customresourcedefinition.apiextensions.k8s.io/meteors.meteor.zone", "clusterrole.rbac.authorization.k8s.io/meteor-operator-manager", "deployment.apps/meteor-operator"] {
            #expect(installed.contains(object), "\(installed)")
        }
        try await kit.kubectlOK("wait", "--for=condition=Established", "crd/meteors.meteor.zone", "--timeout=60s")
        let namespace = try await kit.freshNamespace("install")
        try await kit.kubectlOK("-n", namespace, "create", "serviceaccount", "pipeline")
        try await kit.kubectlOK("-n", namespace, "apply", "-k", repo.appendingPathComponent("manifests/tekton").path)

        // What the RBAC grants, and nothing else: the ServiceAccount's own token.
        let token = try await kit.kubectlOK("-n", "meteor-operator-system", "create", "token", "meteor-operator", "--duration=1h").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await kit.kubectlOK("auth", "can-i", "update", "meteors.meteor.zone", "--subresource=finalizers", "--as=system:serviceaccount:meteor-operator-system:meteor-operator").hasPrefix("yes"))
        #expect(try await kit.kubectl(["auth", "can-i", "list", "secrets", "--as=system:serviceaccount:meteor-operator-system:meteor-operator"]).output.hasPrefix("no"))
        let kubeconfig = try kit.writeKubeconfig(token: token, namespace: namespace)
        let op = try BackgroundProcess(operatorBinary, [
            "run", "--kubeconfig", kubeconfig, "--namespace", namespace, "--leader-elect", "--leader-election-namespace", "meteor-operator-system",
            "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "json",
        ])
        defer { op.terminate() }
        let samples = repo.appendingPathComponent("config/samples")
        for sample in ["meteor_v1alpha1_meteor.yaml", "meteor_jupyterbook.yaml", "meteor_jupyterhub.yaml"] {
            try await kit.kubectlOK("-n", namespace, "apply", "-f", samples.appendingPathComponent(sample).path)
        }
        let waited = try await kit.kubectl(["-n", namespace, "wait", "--for=condition=Ready", "meteors", "--all", "--timeout=120s"])
        #expect(waited.status == 0, "\(waited.output)\n--- operator:\n\(op.text.suffix(4000))")
        // The operator's writes all went through: Events, children with blockOwnerDeletion, status.
        let events = try await kit.kubectlOK("-n", namespace, "get", "events", "--field-selector", "reason=PipelineRunCreated", "-o", "name")
        #expect(events.split(separator: "\n").count == 3, "\(events)")
        #expect(try await kit.kubectlOK("-n", namespace, "get", "deployment", "meteor-demo-book-book", "-o", "jsonpath={.metadata.ownerReferences[0].blockOwnerDeletion}") == "true")
        #expect(!op.text.contains("forbidden"), "the operator was refused something:\n\(op.text.suffix(4000))")
        op.signal(SIGTERM)
        #expect(await op.wait() == 0, "\(op.text.suffix(2000))")
        _ = try await kit.kubectl(["delete", "namespace", namespace, "--wait=false"])
    }
}
