import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

func sampleMeteor(_ name: String, ref: String = "main", ttl: Int? = nil, pipelines: [String]? = nil) -> JSONValue {
    var spec: JSONObject = ["url": "https://github.com/AICoE/elyra-aidevsecops-tutorial", "ref": .string(ref)]
    if let ttl { spec["ttl"] = .int(Int64(ttl)) }
    if let pipelines { spec["pipelines"] = .array(pipelines.map(JSONValue.string)) }
    return ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": .string(name)], "spec": .object(spec)]
}

@Suite struct MeteorReconcilerTests {
    /// A Meteor deleted and created again under its name (GitOps re-creating it, a store lost and refilled) finds
    /// the old one's runs under the names it would use until the garbage collector removes them: a finished
    /// run owned by another uid is not its own result; the Meteor waits for the name and then builds.
    @Test func aRunLeftByAnEarlierMeteorOfTheSameNameIsNotTakenForItsOwn() async throws {
        try await MeteorEnvironment.with { env in
            let c = env.cluster
            let name = PipelineRunBuilder.name(meteor: "again", pipeline: .jupyterhub, generation: 1)
            // The earlier Meteor's run, succeeded; its owner no longer exists (uid "earlier"), and a finalizer keeps
            // it as the garbage collector's lag would.
            var old = PipelineRunBuilder.build(
                meteor: Meteor(
                    metadata: ObjectMeta(name: "again", namespace: c.namespace), spec: .init(url: "https://github.com/x/old", ref: "main")),
                owner: ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "again", "uid": "earlier"]],
                pipeline: .jupyterhub, settings: BuildSettings())
            old[path: "metadata", "ownerReferences"] = [
                ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "name": "again", "uid": "earlier", "controller": true]
            ]
            old[path: "metadata", "finalizers"] = ["test.meteor.zone/hold"]
            _ = try await c.runs.create(old)
            try await c.tekton(
                name, .succeeded, results: ["IMAGE_URL": "registry.local/old:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "0", count: 64)])
            // The operator's cache has it, succeeded, before the Meteor appears.
            let key = ObjectKey(namespace: c.namespace, name: name)
            try await env.reconciler.pipelineRuns.waitUntil { $0.get(key)?[path: "status", "completionTime"] != nil }

            let created = try await c.meteors.create(sampleMeteor("again", pipelines: ["jupyterhub"]))
            let waiting = try await c.waitFor(c.meteors, "again") { $0?[path: "status", "observedGeneration"] == 1 }
            let entry = waiting?[path: "status", "pipelines"]?.arrayValue?.first
            #expect(entry?["ready"] == "Unknown" && entry?["image"] == nil, "the earlier Meteor's result is not this one's: \(entry ?? .null)")
            #expect(waiting?[path: "status", "phase"] == "Building", "\(waiting?["status"]?.serializedString() ?? "")")
            #expect(try await c.runs.get(name).controllerOwner?.uid == "earlier", "still there while this was checked")

            // The collector's delete goes through (here: the finalizer is released), and the Meteor builds.
            try await c.runs.delete(name)
            _ = try await c.runs.patch(name, .merge(["metadata": ["finalizers": .null]]))
            let uid = created[path: "metadata", "uid"]
            let own = try await c.waitFor(c.runs, name) { $0?.controllerOwner?.uid == uid?.stringValue }
            #expect(
                own?[path: "spec", "params"]?.arrayValue?.contains(["name": "url", "value": "https://github.com/AICoE/elyra-aidevsecops-tutorial"])
                    == true)
        }
    }

    @Test func meteorBuildsThroughTektonToReady() async throws {
        try await MeteorEnvironment.with { env in
            let created = try await env.cluster.meteors.create(sampleMeteor("demo"))
            let hub = PipelineRunBuilder.name(meteor: "demo", pipeline: .jupyterhub, generation: 1)
            let book = PipelineRunBuilder.name(meteor: "demo", pipeline: .jupyterbook, generation: 1)
            #expect(hub == "demo-hub-g1" && book == "demo-book-g1")
            // Created with fieldValidation=Strict against Tekton's own PipelineRun schema.
            let run = try #require(try await env.cluster.waitFor(env.cluster.runs, hub) { $0 != nil })
            #expect(
                run[path: "metadata", "ownerReferences"] == [
                    [
                        "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "name": "demo", "uid": created[path: "metadata", "uid"]!,
                        "controller": true, "blockOwnerDeletion": true,
                    ]
                ])
            #expect(run[path: "metadata", "labels", "meteor.zone/meteor"] == "demo")
            #expect(run[path: "metadata", "labels", "meteor.zone/pipeline"] == "jupyterhub")
            #expect(run[path: "metadata", "labels", "app.kubernetes.io/managed-by"] == "meteor-operator")
            let params = run[path: "spec", "params"]?.arrayValue ?? []
            #expect(params.contains(["name": "url", "value": "https://github.com/AICoE/elyra-aidevsecops-tutorial"]))
            #expect(params.contains(["name": "ref", "value": "main"]))
            #expect(run[path: "spec", "pipelineRef", "name"] == "meteor-jupyterhub")

            let building = try await env.cluster.waitFor(env.cluster.meteors, "demo") { $0?[path: "status", "phase"] == "Building" }
            #expect(condition(building, "Ready")?["status"] == "False")
            #expect(condition(building, "Ready")?["reason"] == "Building")
            #expect(building?[path: "metadata", "finalizers"] == nil, "garbage collection is enough without edge delivery")

            _ = try await env.cluster.waitFor(env.cluster.runs, book) { $0 != nil }
            try await env.cluster.tekton(hub, .running)
            try await env.cluster.tekton(
                hub, .succeeded,
                results: ["IMAGE_URL": "registry.local/default/demo-jupyterhub:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "a", count: 64)])
            try await env.cluster.tekton(
                book, .succeeded,
                results: [
                    "IMAGE_URL": "registry.local/default/demo-jupyterbook:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "b", count: 64),
                    "URL": "https://demo.books.example",
                ])
            let ready = try #require(try await env.cluster.waitFor(env.cluster.meteors, "demo") { $0?[path: "status", "phase"] == "Ready" })
            #expect(condition(ready, "Ready")?["status"] == "True")
            #expect(condition(ready, "JupyterHub")?["status"] == "True")
            #expect(condition(ready, "JupyterBook")?["status"] == "True")
            #expect(ready[path: "status", "observedGeneration"] == 1)
            let entries = ready[path: "status", "pipelines"]?.arrayValue ?? []
            #expect(entries.first { $0["name"] == "jupyterhub" }?["image"] == "registry.local/default/demo-jupyterhub:g1")
            #expect(entries.first { $0["name"] == "jupyterhub" }?["digest"] == .string("sha256:" + String(repeating: "a", count: 64)))
            // The operator serves the book: its URL is the Service's, and the Deployment runs the digest.
            #expect(entries.first { $0["name"] == "jupyterbook" }?["url"] == "http://demo-book.default.svc:8080/")
            #expect(entries.allSatisfy { $0["ready"] == "True" })
            let deployment = try await env.client.dynamic(BookSite.deploymentType, namespace: "default").get("demo-book")
            let container = deployment[path: "spec", "template", "spec", "containers"]?.arrayValue?.first
            #expect(container?["image"] == .string("registry.local/default/demo-jupyterbook@sha256:" + String(repeating: "b", count: 64)))
            #expect(deployment[path: "metadata", "ownerReferences"]?.arrayValue?.first?["uid"] == created[path: "metadata", "uid"])
            #expect(deployment[path: "spec", "template", "spec", "securityContext", "runAsNonRoot"] == true)
            let service = try await env.client.dynamic(BookSite.serviceType, namespace: "default").get("demo-book")
            #expect(service[path: "spec", "ports"]?.arrayValue?.first?["port"] == 8080)

            // Steady state: another reconcile writes nothing.
            try await env.reconciler.sites["Deployment"]!.waitUntilCached(ObjectKey(namespace: "default", name: "demo-book"))
            try await env.reconciler.sites["Service"]!.waitUntilCached(ObjectKey(namespace: "default", name: "demo-book"))
            try await env.reconciler.meteors.waitUntilCached(ObjectKey(namespace: "default", name: "demo"))
            _ = try await env.reconciler.reconcile(ObjectKey(namespace: "default", name: "demo"))
            env.cluster.server.clearRequestLog()
            #expect(try await env.reconciler.reconcile(ObjectKey(namespace: "default", name: "demo")) == .done)
            #expect(env.cluster.server.requestLog.filter { $0.method != "GET" }.isEmpty)

            // What a real API server adds (container defaults inside the list, other spec defaults) is not drift.
            let deployments = env.client.dynamic(BookSite.deploymentType, namespace: "default")
            var defaulted = try #require(deployment[path: "spec", "template", "spec", "containers"]?.arrayValue)
            defaulted = defaulted.map { c in
                var c = c
                c["imagePullPolicy"] = "IfNotPresent"
                c["terminationMessagePath"] = "/dev/termination-log"
                return c
            }
            let withDefaults = try await deployments.patch(
                "demo-book", .merge(["spec": ["revisionHistoryLimit": 10, "template": ["spec": ["containers": .array(defaulted)]]]]))
            try await env.reconciler.sites["Deployment"]!.waitUntil {
                $0.get(ObjectKey(namespace: "default", name: "demo-book"))?[path: "metadata", "resourceVersion"]
                    == withDefaults[path: "metadata", "resourceVersion"]
            }
            env.cluster.server.clearRequestLog()
            #expect(try await env.reconciler.reconcile(ObjectKey(namespace: "default", name: "demo")) == .done)
            #expect(env.cluster.server.requestLog.filter { $0.method != "GET" }.isEmpty, "defaults were taken for drift")
            // A real drift (someone changed the image) is put back.
            defaulted[0]["image"] = "evil/image:latest"
            let drifted = try await deployments.patch("demo-book", .merge(["spec": ["template": ["spec": ["containers": .array(defaulted)]]]]))
            try await env.reconciler.sites["Deployment"]!.waitUntil {
                $0.get(ObjectKey(namespace: "default", name: "demo-book"))?[path: "metadata", "resourceVersion"]
                    == drifted[path: "metadata", "resourceVersion"]
            }
            _ = try await env.reconciler.reconcile(ObjectKey(namespace: "default", name: "demo"))
            let restored = try await deployments.get("demo-book")
            #expect(restored[path: "spec", "template", "spec", "containers"]?.arrayValue?.first?["image"] == container?["image"])

            let events = try await env.client.api(Event.self, namespace: "default").list().items.filter { $0.involvedObject.name == "demo" }
            #expect(events.contains { $0.reason == "PipelineRunCreated" })
            #expect(events.contains { $0.reason == "Ready" })
        }
    }

    @Test func openDataHubGetsAnImageStreamAndIngressServesTheBook() async throws {
        let cluster = try await TestCluster(crds: ["crds/tekton/300-pipelinerun.yaml"])
        try cluster.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
        // OpenShift serves image.openshift.io natively; here a minimal CRD stands in for it.
        try cluster.server.installCRDs(yaml: Self.imageStreamCRD)

        try await cluster.createNamespace("opendatahub")
        let env = try await MeteorEnvironment.start(cluster: cluster) { config in
            config.publishImageStreams = true
            config.notebookImageNamespace = "opendatahub"
            config.ingressClass = "openshift-default"
            config.ingressDomain = "apps.example.com"
        }
        do {
            _ = try await cluster.meteors.create(sampleMeteor("odh"))
            let hub = PipelineRunBuilder.name(meteor: "odh", pipeline: .jupyterhub, generation: 1)
            let book = PipelineRunBuilder.name(meteor: "odh", pipeline: .jupyterbook, generation: 1)
            _ = try await cluster.waitFor(cluster.runs, book) { $0 != nil }
            try await cluster.tekton(
                hub, .succeeded,
                results: ["IMAGE_URL": "registry.local/default/odh-jupyterhub:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "d", count: 64)])
            try await cluster.tekton(
                book, .succeeded,
                results: ["IMAGE_URL": "registry.local/default/odh-jupyterbook:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "e", count: 64)])
            let ready = try await cluster.waitFor(cluster.meteors, "odh") { $0?[path: "status", "phase"] == "Ready" }
            #expect(
                ready?[path: "status", "pipelines"]?.arrayValue?.first { $0["name"] == "jupyterbook" }?["url"]
                    == "https://odh-book.default.apps.example.com/")
            // In Open Data Hub's namespace, the only one its spawner lists, named for the Meteor's namespace too.
            let streams = cluster.client.dynamic(NotebookImage.imageStreamType, namespace: "opendatahub")
            let stream = try #require(try await cluster.waitFor(streams, "default-odh-notebook") { $0 != nil })
            #expect(stream[path: "metadata", "labels", "opendatahub.io/notebook-image"] == "true")
            #expect(stream[path: "metadata", "annotations", "opendatahub.io/notebook-image-name"] == "odh (Meteor)")
            #expect(
                stream[path: "spec", "tags"]?.arrayValue?.first?[path: "from", "name"]
                    == .string("registry.local/default/odh-jupyterhub@sha256:" + String(repeating: "d", count: 64)))
            #expect(stream[path: "metadata", "ownerReferences"] == nil, "an ownerReference cannot reach across namespaces")
            #expect(stream[path: "metadata", "labels", MeteorLabels.meteorUID] == ready?[path: "metadata", "uid"])
            // An image outside OpenShift's internal registry needs no image-puller RoleBinding (pull secrets are the
            // registry's business); DeploymentConfigTests sees one made for an internal image, RealInstallTests
            // its RBAC on a real API server.
            #expect(try await cluster.client.dynamic(NotebookImage.roleBindingType, namespace: "default").list().items.isEmpty)
            let ingress = try await cluster.client.dynamic(BookSite.ingressType, namespace: "default").get("odh-book")
            #expect(ingress[path: "spec", "ingressClassName"] == "openshift-default")
            // So the Meteor's finalizer cleans it up: deleting the Meteor deletes the ImageStream, then the Meteor goes.
            #expect(ready?[path: "metadata", "finalizers"]?.arrayValue?.contains(.string(MeteorLabels.finalizer)) == true)
            try await cluster.meteors.delete("odh")
            _ = try await cluster.waitFor(streams, "default-odh-notebook") { $0 == nil }
            _ = try await cluster.waitFor(cluster.meteors, "odh") { $0 == nil }
            // Beside the Meteor (no shared namespace configured) it is simply owned by it.
            let owner: JSONValue = ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "odh", "uid": "u-1"]]
            let local = NotebookImage.imageStream(
                Meteor(metadata: ObjectMeta(name: "odh", namespace: "default"), spec: .init(url: "https://x/y", ref: "main")), owner: owner,
                image: "r/i:g1", digest: nil)
            #expect(local[path: "metadata", "name"] == "odh-notebook" && local[path: "metadata", "ownerReferences"]?.arrayValue?.count == 1)
        } catch {
            await env.shutdown()
            throw error
        }
        await env.shutdown()
    }

    static let imageStreamCRD = """
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: imagestreams.image.openshift.io}
        spec:
          group: image.openshift.io
          scope: Namespaced
          names: {kind: ImageStream, plural: imagestreams, singular: imagestream}
          versions:
          - name: v1
            served: true
            storage: true
            schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
        """

    /// A Meteor stored (under a CRD that checks nothing) in a shape the operator cannot read is a terminal error:
    /// said in its status and an Event, and not retried with backoff, since no retry can read it.
    @Test func aMeteorTheOperatorCannotReadIsReportedAndNotRetried() async throws {
        let cluster = try await TestCluster(crds: ["crds/tekton/300-pipelinerun.yaml"])
        try cluster.server.installCRDs(
            yaml: """
                apiVersion: apiextensions.k8s.io/v1
                kind: CustomResourceDefinition
                metadata: {name: meteors.meteor.zone}
                spec:
                  group: meteor.zone
                  scope: Namespaced
                  names: {kind: Meteor, plural: meteors, singular: meteor}
                  versions:
                  - name: v1alpha1
                    served: true
                    storage: true
                    subresources: {status: {}}
                    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
                """)
        let failed = Observed(0)
        let key = ObjectKey(namespace: "default", name: "unreadable")
        let env = try await MeteorEnvironment.start(cluster: cluster) { _ in
        } onReconciled: { k, ok in
            if k == key, !ok { failed.update { $0 += 1 } }
        }
        do {
            var body = sampleMeteor("unreadable")
            body[path: "spec", "url"] = 42
            _ = try await cluster.meteors.create(body)
            let m = try #require(try await cluster.waitFor(cluster.meteors, "unreadable") { condition($0, "Ready")?["reason"] == "InvalidSpec" })
            #expect(m[path: "status", "phase"] == "Failed")
            #expect(condition(m, "Ready")?["message"]?.stringValue?.hasPrefix("The operator cannot read this Meteor") == true)
            #expect(try await cluster.waitForEvent(about: "unreadable", reason: "InvalidSpec") != nil)
            // Heard after the worker has dealt with the error: a retried one would count a retry by now.
            try await failed.wait { $0 >= 1 }
            #expect(await env.controller.queue.retries(key) == 0, "a terminal error is not retried")
            #expect(try await cluster.runs.list().items.isEmpty)
            // Deleted while it carries the operator's finalizer, it is let go, not left stuck.
            _ = try await cluster.meteors.patch("unreadable", .merge(["metadata": ["finalizers": [.string(MeteorLabels.finalizer)]]]))
            _ = try await cluster.meteors.delete("unreadable")
            _ = try await cluster.waitFor(cluster.meteors, "unreadable") { $0 == nil }
        } catch {
            await env.shutdown()
            throw error
        }
        await env.shutdown()
    }

    /// Open Data Hub's namespace missing: the image is built and the book served all the same; the status and a
    /// Warning Event say why the image is not listed, and the operator tries again.
    @Test func aMissingNotebookImageNamespaceIsReportedAndHoldsUpNothingElse() async throws {
        let cluster = try await TestCluster(crds: ["crds/tekton/300-pipelinerun.yaml"])
        try cluster.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
        try cluster.server.installCRDs(yaml: Self.imageStreamCRD)
        let env = try await MeteorEnvironment.start(cluster: cluster) { config in
            config.publishImageStreams = true
            config.notebookImageNamespace = "opendatahub"
        }
        do {
            _ = try await cluster.meteors.create(sampleMeteor("lonely"))
            for (pipeline, digest) in [(Pipeline.jupyterhub, "d"), (.jupyterbook, "e")] {
                let run = PipelineRunBuilder.name(meteor: "lonely", pipeline: pipeline, generation: 1)
                _ = try await cluster.waitFor(cluster.runs, run) { $0 != nil }
                try await cluster.tekton(
                    run, .succeeded,
                    results: [
                        "IMAGE_URL": "registry.local/default/lonely-\(pipeline.rawValue):g1",
                        "IMAGE_DIGEST": "sha256:" + String(repeating: digest, count: 64),
                    ])
            }
            let ready = try await cluster.waitFor(cluster.meteors, "lonely") { $0?[path: "status", "phase"] == "Ready" }
            let hub = ready?[path: "status", "pipelines"]?.arrayValue?.first { $0["name"] == "jupyterhub" }
            #expect(
                hub?["message"]?.stringValue?.contains(
                    "Built, but not listed in Open Data Hub: the ImageStream in namespace opendatahub could not be written") == true,
                "\(hub ?? .null)")
            #expect(
                try await cluster.client.dynamic(BookSite.deploymentType, namespace: "default").get("lonely-book")[path: "metadata", "name"]
                    == "lonely-book")
            let events = try await env.client.api(Event.self, namespace: "default").list().items
            #expect(events.contains { $0.reason == "NotebookImageNotPublished" && $0.type == "Warning" })
        } catch {
            await env.shutdown()
            throw error
        }
        await env.shutdown()
    }

    @Test func failedRunFailsTheMeteorWithTektonsMessage() async throws {
        try await MeteorEnvironment.with { env in
            _ = try await env.cluster.meteors.create(sampleMeteor("broken", pipelines: ["jupyterbook"]))
            let book = PipelineRunBuilder.name(meteor: "broken", pipeline: .jupyterbook, generation: 1)
            _ = try await env.cluster.waitFor(env.cluster.runs, book) { $0 != nil }
            try await env.cluster.tekton(
                book, .failed, message: "Tasks Completed: 1 (Failed: 1, Cancelled 0): jupyter-book build failed: no _toc.yml")
            let failed = try #require(try await env.cluster.waitFor(env.cluster.meteors, "broken") { $0?[path: "status", "phase"] == "Failed" })
            #expect(condition(failed, "Ready")?["reason"] == "PipelineFailed")
            #expect(condition(failed, "JupyterBook")?["message"]?.stringValue?.contains("no _toc.yml") == true)
            #expect(failed[path: "status", "pipelines"]?.arrayValue?.first?["message"]?.stringValue?.contains("no _toc.yml") == true)
            #expect(condition(failed, "JupyterHub") == nil)
        }
    }

    @Test func specChangeStartsNewRunsAndCancelsTheOldOnes() async throws {
        try await MeteorEnvironment.with { env in
            _ = try await env.cluster.meteors.create(sampleMeteor("moving", pipelines: ["jupyterhub"]))
            let g1 = PipelineRunBuilder.name(meteor: "moving", pipeline: .jupyterhub, generation: 1)
            _ = try await env.cluster.waitFor(env.cluster.runs, g1) { $0 != nil }
            try await env.cluster.tekton(g1, .running)
            _ = try await env.cluster.meteors.patch("moving", .merge(["spec": ["ref": "v2.0"]]))
            let g2 = PipelineRunBuilder.name(meteor: "moving", pipeline: .jupyterhub, generation: 2)
            let fresh = try #require(try await env.cluster.waitFor(env.cluster.runs, g2) { $0 != nil })
            #expect((fresh[path: "spec", "params"]?.arrayValue ?? []).contains(["name": "ref", "value": "v2.0"]))
            _ = try await env.cluster.waitFor(env.cluster.runs, g1) { $0?[path: "spec", "status"] == "Cancelled" }
            let meteor = try await env.cluster.waitFor(env.cluster.meteors, "moving") { $0?[path: "status", "observedGeneration"] == 2 }
            #expect(meteor?[path: "status", "pipelines"]?.arrayValue?.first?["pipelineRunName"] == .string(g2))
        }
    }

    /// The cache keeps of a PipelineRun what the reconciler reads, and drops the bulk Tekton writes.
    @Test func cachedPipelineRunsKeepWhatTheReconcilerReads() throws {
        let run: JSONValue = [
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": [
                "name": "m-jupyterhub-g1", "namespace": "default", "uid": "u1", "resourceVersion": "7", "labels": ["meteor.zone/meteor": "m"],
                "ownerReferences": [["kind": "Meteor", "name": "m", "uid": "mu"]], "managedFields": [["manager": "tekton"]],
                "annotations": ["big": "x"],
            ],
            "spec": [
                "status": "Cancelled", "params": [["name": "url", "value": "https://github.com/a/b"]], "pipelineRef": ["name": "meteor-jupyterhub"],
            ],
            "status": [
                "conditions": [["type": "Succeeded", "status": "True", "reason": "Succeeded"]],
                "results": [["name": "IMAGE_URL", "value": "r/i:g1"]],
                "startTime": "2026-11-23T10:00:00Z", "completionTime": "2026-11-23T10:05:00Z",
                "pipelineSpec": ["tasks": [["name": "build"]]], "childReferences": [["name": "m-build"]], "provenance": ["featureFlags": [:]],
            ],
        ]
        let trimmed = PipelineRunBuilder.trimmedForCache(run)
        #expect(PipelineRunState(trimmed) == PipelineRunState(run))
        #expect(trimmed[path: "spec"] == ["status": "Cancelled"])
        #expect(trimmed[path: "metadata", "labels"] == run[path: "metadata", "labels"])
        #expect(trimmed[path: "metadata", "ownerReferences"] == run[path: "metadata", "ownerReferences"])
        #expect(trimmed[path: "metadata", "managedFields"] == nil && trimmed[path: "metadata", "annotations"] == nil)
        #expect(
            trimmed[path: "status", "pipelineSpec"] == nil && trimmed[path: "status", "childReferences"] == nil
                && trimmed[path: "status", "provenance"] == nil)
        #expect(trimmed.serializedString().utf8.count < run.serializedString().utf8.count)
    }

    /// A Meteor deleted while its reconcile is writing status is done with, not a failed reconcile to retry.
    @Test func aMeteorDeletedMidReconcileIsNotAnError() async throws {
        let key = ObjectKey(namespace: "default", name: "vanishing")
        let outcomes = Observed<[Bool]>([])
        try await MeteorEnvironment.with(onReconciled: { k, ok in if k == key { outcomes.update { $0.append(ok) } } }) { env in
            let c = env.cluster
            c.server.inject(InjectedFault(.hold, verb: "patch", pathContains: "/meteors/vanishing/status"))
            _ = try await c.meteors.create(sampleMeteor("vanishing", pipelines: ["jupyterhub"]))
            try await within(defaultWaitTimeout, "the status write to be held") { await c.server.waitForHeldRequest() }
            try await c.meteors.delete("vanishing")
            c.server.releaseHeldRequests()
            // The held reconcile is the first to finish (a key is never reconciled twice at once): its status write
            // found the Meteor gone, which is the end of its work, not a failure to retry.
            try await outcomes.wait { !$0.isEmpty }
            #expect(outcomes.value.first == true)
            #expect(c.server.requestLog.contains { $0.path.hasSuffix("/meteors/vanishing/status") && $0.code == 404 })
        }
    }

    @Test func ttlExpiryDeletesTheMeteorAndItsChildren() async throws {
        // The reconciler's clock is the test's: an hour passes when the test says so.
        let skew = Observed<TimeInterval>(0)
        try await MeteorEnvironment.with(configure: { $0.now = { Date().addingTimeInterval(skew.value) } }) { env in
            let created = try await env.cluster.meteors.create(sampleMeteor("brief", ttl: 3600, pipelines: ["jupyterhub"]))
            let run = PipelineRunBuilder.name(meteor: "brief", pipeline: .jupyterhub, generation: 1)
            _ = try await env.cluster.waitFor(env.cluster.runs, run) { $0 != nil }
            let withExpiry = try await env.cluster.waitFor(env.cluster.meteors, "brief") { $0?[path: "status", "expirationTimestamp"] != nil }
            let expires = KubeTime.parse(withExpiry![path: "status", "expirationTimestamp"]!.stringValue!)!
            let createdAt = KubeTime.parse(created[path: "metadata", "creationTimestamp"]!.stringValue!)!
            #expect(expires.timeIntervalSince(createdAt) == 3600)
            // Before expiry the reconciler asks to be woken at the expiry time.
            let key = ObjectKey(namespace: "default", name: "brief")
            guard case .requeueAfter(let wait) = try await env.reconciler.reconcile(key) else {
                Issue.record("expected a requeue at the expiry"); return
            }
            #expect(wait > .seconds(3500) && wait <= .seconds(3601))
            skew.update { $0 = 3601 }
            #expect(try await env.reconciler.reconcile(key) == .done)
            _ = try await env.cluster.waitFor(env.cluster.meteors, "brief") { $0 == nil }
            env.cluster.server.collectGarbage()
            _ = try await env.cluster.waitFor(env.cluster.runs, run) { $0 == nil }
            let expired = try await env.client.api(Event.self, namespace: "default").list().items.filter { $0.reason == "Expired" }
            #expect(expired.count == 1)
        }
    }

    @Test func invalidSpecsGetInvalidSpecAndNoChildren() async throws {
        // The Go operator's laxer CRD admits these; the reconciler refuses them.
        try await MeteorEnvironment.with(referenceCRD: true) { env in
            let cases: [(String, JSONValue, String)] = [
                ("shell", sampleMeteor("shell", ref: "main; rm -rf /"), "spec.ref"),
                ("dots", sampleMeteor("dots", ref: "../../etc"), "spec.ref"),
                ("unknown", sampleMeteor("unknown", pipelines: ["jupyterhub", "mining"]), "spec.pipelines[1]"),
                (
                    "creds",
                    {
                        var m = sampleMeteor("creds"); m[path: "spec", "url"] = "https://user:hunter2@github.com/x/y"; return m
                    }(), "spec.url"
                ),
                ("negative", sampleMeteor("negative", ttl: -5), "spec.ttl"),
                (
                    "spaced",
                    {
                        var m = sampleMeteor("spaced"); m[path: "spec", "url"] = "https://exa mple.com/repo"; return m
                    }(), "spec.url"
                ),
                (
                    "hostless",
                    {
                        var m = sampleMeteor("hostless"); m[path: "spec", "url"] = "https:///path-only"; return m
                    }(), "spec.url"
                ),
            ]
            for (name, body, _) in cases { _ = try await env.cluster.meteors.create(body) }
            for (name, _, field) in cases {
                let m = try #require(try await env.cluster.waitFor(env.cluster.meteors, name) { condition($0, "Ready")?["reason"] == "InvalidSpec" })
                #expect(m[path: "status", "phase"] == "Failed")
                #expect(
                    condition(m, "Ready")?["message"]?.stringValue?.contains(field) == true, "\(name): \(condition(m, "Ready")?["message"] ?? .null)")
            }
            #expect(try await env.cluster.runs.list().items.isEmpty)
            let warnings = try await env.client.api(Event.self, namespace: "default").list().items.filter { $0.reason == "InvalidSpec" }
            #expect(Set(warnings.map(\.involvedObject.name)) == Set(cases.map { $0.0 }))
            #expect(warnings.allSatisfy { $0.type == "Warning" })
            // The credentials never reach status or events.
            #expect(!warnings.contains { ($0.message ?? "").contains("hunter2") })
        }
    }

    @Test func restartAfterCreatingRunsButBeforeRecordingMakesNoDuplicates() async throws {
        let cluster = try await TestCluster(crds: ["crds/tekton/300-pipelinerun.yaml"])
        try cluster.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
        // Status writes fail: the operator dies, as it were, between creating runs and recording them.
        cluster.server.inject(InjectedFault(.status(500, retryAfterSeconds: nil), verb: "patch", pathContains: "/meteors/twice/status", count: 1000))
        let first = try await MeteorEnvironment.start(cluster: cluster)
        _ = try await cluster.meteors.create(sampleMeteor("twice"))
        _ = try await cluster.waitFor(cluster.runs, PipelineRunBuilder.name(meteor: "twice", pipeline: .jupyterbook, generation: 1)) { $0 != nil }
        try await first.stopOperator()
        cluster.server.clearFaults()
        let second = try await MeteorEnvironment.start(cluster: cluster)
        _ = try await cluster.waitFor(cluster.meteors, "twice") { $0?[path: "status", "phase"] == "Building" }
        let runs = try await cluster.runs.list(ListOptions(labelSelector: "meteor.zone/meteor=twice")).items
        #expect(runs.count == 2)
        #expect(cluster.server.requestLog.filter { $0.verb == "create" && $0.path.hasSuffix("/pipelineruns") && $0.code == 201 }.count == 2)
        await second.shutdown()
    }

    /// A run that "succeeded" without a digest of the form sha256:<hex> is a failed build, not an image to pin.
    @Test func aSucceededRunWithoutAUsableDigestFailsTheBuild() async throws {
        try await MeteorEnvironment.with { env in
            _ = try await env.cluster.meteors.create(sampleMeteor("nodigest", pipelines: ["jupyterhub"]))
            let hub = PipelineRunBuilder.name(meteor: "nodigest", pipeline: .jupyterhub, generation: 1)
            _ = try await env.cluster.waitFor(env.cluster.runs, hub) { $0 != nil }
            try await env.cluster.tekton(hub, .succeeded, results: ["IMAGE_URL": "registry.local/x:g1", "IMAGE_DIGEST": "$(cat /tmp/digest)"])
            let failed = try #require(try await env.cluster.waitFor(env.cluster.meteors, "nodigest") { $0?[path: "status", "phase"] == "Failed" })
            #expect(condition(failed, "JupyterHub")?["status"] == "False")
            #expect(condition(failed, "JupyterHub")?["message"] == .string(PipelineRunState.missingDigestMessage(hub)))
            let entry = failed[path: "status", "pipelines"]?.arrayValue?.first
            #expect(entry?["reason"] == "BuildResultMissing")
        }
    }
}
