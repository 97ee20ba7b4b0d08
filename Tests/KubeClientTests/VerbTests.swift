import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import Synchronization
import Testing

@Suite struct VerbTests {
    @Test func createGetReplaceDeleteOverHTTPS() async throws {
        try await TestCluster.with(tls: true, token: "s3cret") { c in
            let cms = c.client.api(ConfigMap.self, namespace: "default")
            let created = try await cms.create(ConfigMap(metadata: ObjectMeta(name: "one"), data: ["a": "1"]))
            #expect(created.metadata.uid != nil)
            #expect(created.metadata.creationTimestamp != nil)
            var got = try await cms.get("one")
            #expect(got.data == ["a": "1"])
            got.data?["b"] = "2"
            let replaced = try await cms.replace(got)
            #expect(replaced.data == ["a": "1", "b": "2"])
            #expect(replaced.metadata.resourceVersion != created.metadata.resourceVersion)
            try await cms.delete("one")
            #expect(try await cms.getOptional("one") == nil)
        }
    }

    /// As kube-apiserver's Secret strategy: stringData is merged into data (and wins), never stored; type defaults
    /// to Opaque; data that is not base64 is refused.
    @Test func secretStringDataBecomesData() async throws {
        try await TestCluster.with(crds: []) { c in
            let secrets = c.client.dynamic(Secret.resourceType, namespace: "default")
            let created = try await secrets.create([
                "apiVersion": "v1", "kind": "Secret", "metadata": ["name": "s"], "data": ["a": "b2xk", "k": "eA=="],
                "stringData": ["a": "new", "pem": "-----BEGIN-----"],
            ])
            #expect(created["stringData"] == nil)
            #expect(created["type"] == "Opaque")
            #expect(
                created["data"] == [
                    "a": .string(Data("new".utf8).base64EncodedString()), "k": "eA==",
                    "pem": .string(Data("-----BEGIN-----".utf8).base64EncodedString()),
                ])
            let typed = try await c.client.api(Secret.self, namespace: "default").get("s")
            #expect(typed.value("pem").map { String(decoding: $0, as: UTF8.self) } == "-----BEGIN-----")
            await #expect {
                _ = try await secrets.create(["apiVersion": "v1", "kind": "Secret", "metadata": ["name": "bad"], "data": ["a": "not base64!"]])
            } throws: {
                ($0 as? KubeError)?.status?.code == 400
            }
        }
    }

    @Test func refusesMissingOrWrongToken() async throws {
        try await TestCluster.with(token: "right") { c in
            var config = TestCluster.clusterConfiguration(c.server)
            config.credentials = .token("wrong")
            let wrong = try KubeClient(configuration: config)
            defer { Task { try? await wrong.shutdown() } }
            await #expect {
                _ = try await wrong.api(ConfigMap.self, namespace: "default").list()
            } throws: { ($0 as? KubeError)?.code == 401 }
            #expect(try await c.client.api(ConfigMap.self, namespace: "default").list().items.isEmpty)
        }
    }

    @Test func generateNameConflictsAndNotFound() async throws {
        try await TestCluster.with { c in
            let cms = c.client.api(ConfigMap.self, namespace: "default")
            let g = try await cms.create(ConfigMap(metadata: ObjectMeta(generateName: "gen-")))
            #expect(g.name.hasPrefix("gen-") && g.name.count == 9)
            var stale = g
            stale.data = ["x": "1"]
            _ = try await cms.replace(stale)
            stale.data = ["x": "2"]
            await #expect { _ = try await cms.replace(stale) } throws: { ($0 as? KubeError)?.isConflict == true }
            await #expect { _ = try await cms.create(ConfigMap(metadata: ObjectMeta(name: g.name))) } throws: {
                ($0 as? KubeError)?.isAlreadyExists == true
            }
            await #expect { _ = try await cms.get("absent") } throws: { ($0 as? KubeError)?.isNotFound == true }
            await #expect {
                _ = try await c.client.api(ConfigMap.self, namespace: "nope").create(ConfigMap(metadata: ObjectMeta(name: "x")))
            } throws: {
                ($0 as? KubeError)?.isNotFound == true && ($0 as? KubeError)?.status?.message == "namespaces \"nope\" not found"
            }
        }
    }

    @Test func updateKeepsFieldsAnotherWriterSet() async throws {
        try await TestCluster.with { c in
            let dyn = c.client.dynamic(ConfigMap.resourceType, namespace: "default")
            _ = try await dyn.create([
                "metadata": ["name": "shared", "annotations": ["other": "controller"]], "data": ["a": "1"], "binaryData": ["b": "AAE="],
            ])
            let cms = c.client.api(ConfigMap.self, namespace: "default")
            var cm = try await cms.get("shared")
            cm.data?["a"] = "2"
            _ = try await cms.replace(cm)
            let after = try await dyn.get("shared")
            #expect(after["binaryData"] == ["b": "AAE="])
            #expect(after[path: "metadata", "annotations", "other"] == "controller")
            #expect(after[path: "data", "a"] == "2")
        }
    }

    @Test func listPaginationAndSelectors() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            for i in 0..<25 {
                _ = try await meteors.create(meteor("m\(String(format: "%02d", i))", labels: ["team": i % 2 == 0 ? "even" : "odd", "idx": "\(i)"]))
            }
            let page = try await meteors.list(ListOptions(limit: 10))
            #expect(page.items.count == 10)
            #expect(page.metadata.continue != nil)
            #expect(page.metadata.remainingItemCount == 15)
            let all = try await meteors.listAll(pageSize: 7)
            #expect(all.items.count == 25)
            #expect(Set(all.items.compactMap { $0[path: "metadata", "name"]?.stringValue }).count == 25)
            #expect(try await meteors.list(ListOptions(labelSelector: "team=even")).items.count == 13)
            #expect(try await meteors.list(ListOptions(labelSelector: "team!=even,idx in (1,3,4)")).items.count == 2)
            #expect(try await meteors.list(ListOptions(labelSelector: "!team")).items.isEmpty)
            #expect(try await meteors.list(ListOptions(fieldSelector: "metadata.name=m07")).items.count == 1)
            let everywhere = c.client.dynamic(meteorType, namespace: nil)
            #expect(try await everywhere.list().items.count == 25)
            await #expect { _ = try await meteors.list(ListOptions(labelSelector: "a in b")) } throws: { ($0 as? KubeError)?.code == 400 }
        }
    }

    @Test func expiredContinueTokenIsGone() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            for i in 0..<3 { _ = try await meteors.create(meteor("p\(i)")) }
            let page = try await meteors.list(ListOptions(limit: 1))
            // Like etcd: compaction removes revisions older than the current one.
            _ = try await meteors.create(meteor("later"))
            c.server.compact()
            await #expect { _ = try await meteors.list(ListOptions(limit: 1, continueToken: page.metadata.continue)) } throws: {
                ($0 as? KubeError)?.isGone == true
            }
        }
    }

    @Test func statusSubresourceAndGeneration() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            var m = meteor("gen")
            m["status"] = ["phase": "Ready"]
            let created = try await meteors.create(m)
            #expect(created["status"] == nil)
            #expect(created[path: "metadata", "generation"] == 1)
            #expect(created[path: "spec", "pipelines"] == ["jupyterhub", "jupyterbook"])

            let withStatus = try await meteors.patchStatus("gen", .merge(["status": ["phase": "Building"], "spec": ["ref": "ignored"]]))
            #expect(withStatus[path: "status", "phase"] == "Building")
            #expect(withStatus[path: "spec", "ref"] == "main")
            #expect(withStatus[path: "metadata", "generation"] == 1)

            let labelled = try await meteors.patch("gen", .merge(["metadata": ["labels": ["x": "y"]], "status": ["phase": "Failed"]]))
            #expect(labelled[path: "metadata", "generation"] == 1)
            #expect(labelled[path: "status", "phase"] == "Building")

            let specChanged = try await meteors.patch("gen", .merge(["spec": ["ref": "v2"]]))
            #expect(specChanged[path: "metadata", "generation"] == 2)

            let rv = specChanged[path: "metadata", "resourceVersion"]
            let noop = try await meteors.patch("gen", .merge(["spec": ["ref": "v2"]]))
            #expect(noop[path: "metadata", "resourceVersion"] == rv)
        }
    }

    @Test func jsonPatchTestFailureIsInvalid() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.create(meteor("jp"))
            let patched = try await meteors.patch(
                "jp", .json([["op": "test", "path": "/spec/ref", "value": "main"], ["op": "replace", "path": "/spec/ref", "value": "dev"]]))
            #expect(patched[path: "spec", "ref"] == "dev")
            await #expect { _ = try await meteors.patch("jp", .json([["op": "test", "path": "/spec/ref", "value": "main"]])) } throws: {
                ($0 as? KubeError)?.code == 422
            }
            await #expect { _ = try await meteors.patch("jp", .strategicMerge(["spec": ["ref": "x"]])) } throws: { ($0 as? KubeError)?.code == 415 }
        }
    }

    @Test func schemaValidationNamesTheFields() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            var bad = meteor("bad", url: "ftp://example.com")
            bad[path: "spec", "ttl"] = "soon"
            bad[path: "spec", "ref"] = nil
            do {
                _ = try await meteors.create(bad)
                Issue.record("invalid Meteor was accepted")
            } catch let e as KubeError {
                #expect(e.code == 422)
                let fields = Set(e.status?.details?.causes?.compactMap(\.field) ?? [])
                #expect(fields.isSuperset(of: ["spec.url", "spec.ref", "spec.ttl"]))
                #expect(e.status?.message?.contains("spec.url in body should match") == true)
            }
            await #expect { _ = try await meteors.create(meteor("Bad_Name")) } throws: {
                ($0 as? KubeError)?.status?.details?.causes?.first?.field == "metadata.name"
            }
            var unknown = meteor("unknown")
            unknown[path: "spec", "bogus"] = 1
            await #expect { _ = try await meteors.create(unknown, params: WriteParams(fieldValidation: .strict)) } throws: {
                ($0 as? KubeError)?.code == 400 && ($0 as? KubeError)?.status?.message?.contains("unknown field \"spec.bogus\"") == true
            }
            let raw = try await c.client.send(.POST, meteorType.collectionPath(namespace: "default"), body: unknown.serialized())
            #expect(raw.code == 201)
            #expect(raw.warnings.contains { $0.contains("unknown field \\\"spec.bogus\\\"") })
            #expect(try await meteors.get("unknown")[path: "spec", "bogus"] == nil)
        }
    }

    @Test func serverSideApplyOwnsFields() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            var cfg = meteor("ssa")
            cfg[path: "spec", "ttl"] = 60
            let created = try await meteors.patch("ssa", .apply(cfg), params: WriteParams(fieldManager: "alice"))
            #expect(created[path: "spec", "ttl"] == 60)
            #expect(created[path: "metadata", "managedFields"]?.arrayValue?.first?["manager"] == "alice")

            var bob = meteor("ssa")
            bob[path: "spec", "ttl"] = 120
            do {
                _ = try await meteors.patch("ssa", .apply(bob), params: WriteParams(fieldManager: "bob"))
                Issue.record("conflicting apply was accepted")
            } catch let e as KubeError {
                #expect(e.isConflict)
                #expect(e.status?.details?.causes?.contains { $0.field == ".spec.ttl" && $0.message == "conflict with \"alice\"" } == true)
            }
            let forced = try await meteors.patch("ssa", .apply(bob), params: WriteParams(fieldManager: "bob", force: true))
            #expect(forced[path: "spec", "ttl"] == 120)

            // alice stops applying ttl, but bob owns it now: it stays. bob stops too: it goes.
            let afterAlice = try await meteors.patch("ssa", .apply(meteor("ssa")), params: WriteParams(fieldManager: "alice"))
            #expect(afterAlice[path: "spec", "ttl"] == 120)
            _ = try await meteors.patch("ssa", .apply(meteor("ssa")), params: WriteParams(fieldManager: "bob"))
            #expect(try await meteors.get("ssa")[path: "spec", "ttl"] == nil)

            await #expect { _ = try await meteors.patch("ssa", .apply(cfg)) } throws: { ($0 as? KubeError)?.code == 422 }

            let status = try await meteors.patchStatus(
                "ssa",
                .apply([
                    "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor",
                    "status": [
                        "conditions": [
                            ["type": "Ready", "status": "True", "reason": "R", "message": "m", "lastTransitionTime": "2026-11-23T00:00:00Z"]
                        ]
                    ],
                ]), params: WriteParams(fieldManager: "operator"))
            #expect(status[path: "status", "conditions"]?.arrayValue?.count == 1)
        }
    }

    @Test func finalizersHoldDeletionUntilRemoved() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            var m = meteor("fin")
            m[path: "metadata", "finalizers"] = ["meteor.zone/cleanup"]
            _ = try await meteors.create(m)
            let lingering = try await meteors.delete("fin")
            #expect(lingering?[path: "metadata", "deletionTimestamp"] != nil)
            #expect(lingering?[path: "metadata", "generation"] == 2)
            let patched = try await meteors.patch("fin", .merge(["spec": ["ref": "still-patchable"]]))
            #expect(patched[path: "spec", "ref"] == "still-patchable")
            await #expect { _ = try await meteors.patch("fin", .merge(["metadata": ["finalizers": ["meteor.zone/cleanup", "new"]]])) } throws: {
                ($0 as? KubeError)?.isInvalid == true
            }
            _ = try await meteors.patch("fin", .json([["op": "remove", "path": "/metadata/finalizers"]]))
            await #expect { _ = try await meteors.get("fin") } throws: { ($0 as? KubeError)?.isNotFound == true }
        }
    }

    @Test func deletePreconditions() async throws {
        try await TestCluster.with { c in
            let cms = c.client.api(ConfigMap.self, namespace: "default")
            let cm = try await cms.create(ConfigMap(metadata: ObjectMeta(name: "pre")))
            await #expect { try await cms.delete("pre", params: DeleteParams(preconditionUID: "other")) } throws: {
                ($0 as? KubeError)?.isConflict == true
            }
            try await cms.delete("pre", params: DeleteParams(preconditionUID: cm.metadata.uid))
            #expect(try await cms.getOptional("pre") == nil)
        }
    }
}

@Suite struct MoreVerbTests {
    @Test func replaceStatusAndWatchAcrossNamespaces() async throws {
        try await TestCluster.with { c in
            _ = try await c.client.api(Namespace.self).create(Namespace(metadata: ObjectMeta(name: "other")))
            let everywhere = c.client.dynamic(meteorType, namespace: nil)
            let start = String(c.server.currentResourceVersion)
            let stream = everywhere.watch(WatchOptions(resourceVersion: start, allowBookmarks: false))
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("here"))
            var there = try await c.client.dynamic(meteorType, namespace: "other").create(meteor("there"))
            there["status"] = ["phase": "Building"]
            there[path: "spec", "ref"] = "ignored-by-status"
            let updated = try await c.client.dynamic(meteorType, namespace: "other").replaceStatus(there)
            #expect(updated[path: "status", "phase"] == "Building")
            #expect(updated[path: "spec", "ref"] == "main")
            #expect(try await c.client.dynamic(meteorType, namespace: "other").getStatus("there")[path: "status", "phase"] == "Building")
            #expect(names(try await collect(stream, count: 3)) == ["ADDED here", "ADDED there", "MODIFIED there"])
        }
    }

    @Test func metricsHookSeesEveryRequest() async throws {
        let seen = RecordedMetrics()
        var options = KubeClient.Options()
        options.metrics = { seen.append($0) }
        try await TestCluster.with(clientOptions: options) { c in
            let cms = c.client.api(ConfigMap.self, namespace: "default")
            _ = try await cms.create(ConfigMap(metadata: ObjectMeta(name: "m")))
            _ = try await cms.getOptional("absent")
            let all = seen.all
            #expect(all.map(\.method) == ["POST", "GET"])
            #expect(all.map(\.code) == [201, 404])
        }
    }

    @Test func clientCertificateConfigurationLoads() throws {
        let dir = try tempDirectory()
        let cert = try String(contentsOf: TestCluster.sharedDirectory.appendingPathComponent("cosign/sigstore-rs/cosign.pub"), encoding: .utf8)
        try cert.write(to: dir.appendingPathComponent("client.crt"), atomically: true, encoding: .utf8)
        let path = dir.appendingPathComponent("config").path
        try """
        apiVersion: v1
        kind: Config
        current-context: x
        clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", certificate-authority-data: "\(Data("not pem".utf8).base64EncodedString())"}}]
        users: [{name: u, user: {client-certificate: client.crt}}]
        contexts: [{name: x, context: {cluster: c, user: u}}]
        """.write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try KubeConfigLoader.load(.init(kubeconfigPath: path)) } throws: {
            "\($0)" == "kubeconfig \(path): users[u].client-key-data is missing (a client certificate needs its key)"
        }
    }
}

final class RecordedMetrics: Sendable {
    private let metrics = Mutex<[RequestMetric]>([])
    func append(_ m: RequestMetric) { metrics.withLock { $0.append(m) } }
    var all: [RequestMetric] { metrics.withLock { $0 } }
}
