import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorSandbox
import MeteorTestSupport
import Testing

/// The operator end to end, on the embedded server (with the sandbox's Tekton simulator) and on the kit's real
/// kube-apiserver with the real Tekton controller and the fake kubelet: the same test, two backends.
@Suite struct EndToEndTests {
    /// A Meteor builds through Tekton to Ready; its status carries what Tekton's runs produced.
    @Test(arguments: Backend.testable) func meteorBuildsThroughTektonToReady(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            let created = try await env.createMeteor(sampleMeteor("demo"))
            let ready = try #require(
                try await env.cluster.waitFor(env.cluster.meteors, "demo", timeout: .seconds(90)) { $0?[path: "status", "phase"] == "Ready" })
            #expect(condition(ready, "Ready")?["status"] == "True")
            #expect(condition(ready, "JupyterHub")?["status"] == "True")
            #expect(condition(ready, "JupyterBook")?["status"] == "True")
            #expect(ready[path: "status", "observedGeneration"] == 1)
            let entries = ready[path: "status", "pipelines"]?.arrayValue ?? []
            for pipeline in [Pipeline.jupyterhub, .jupyterbook] {
                let name = PipelineRunBuilder.name(meteor: "demo", pipeline: pipeline, generation: 1)
                let run = try await env.cluster.runs.get(name)
                #expect(run[path: "metadata", "ownerReferences"]?.arrayValue?.first?["uid"] == created[path: "metadata", "uid"])
                // Tekton's own words, which the simulator must speak too.
                let succeeded = (run[path: "status", "conditions"]?.arrayValue ?? []).first { $0["type"] == "Succeeded" }
                #expect(succeeded?["reason"] == "Succeeded")
                #expect(succeeded?["message"] == .string(TektonSimulator.tasksMessage(completed: TektonSimulator.pipelineTasks[pipeline]!.count)))
                let state = PipelineRunState(run)
                let entry = entries.first { $0["name"] == .string(pipeline.rawValue) }
                #expect(entry?["pipelineRunName"] == .string(name))
                #expect(entry?["ready"] == "True")
                #expect(entry?["image"]?.stringValue == state.results["IMAGE_URL"], "\(pipeline): the image Tekton built")
                #expect(entry?["digest"]?.stringValue == state.results["IMAGE_DIGEST"], "\(pipeline): the digest Tekton reported")
                #expect(state.results["IMAGE_DIGEST"]?.hasPrefix("sha256:") == true)
                #expect(state.startTime != nil && state.completionTime != nil)
            }
            // The book is served from the image Tekton pushed, pinned by digest.
            let digest = try #require(entries.first { $0["name"] == "jupyterbook" }?["digest"]?.stringValue)
            let deployment = try await env.client.dynamic(BookSite.deploymentType, namespace: env.namespace).get("demo-book")
            let image = deployment[path: "spec", "template", "spec", "containers"]?.arrayValue?.first?["image"]?.stringValue
            #expect(image?.hasSuffix("@" + digest) == true, "\(image ?? "none")")
            #expect(entries.first { $0["name"] == "jupyterbook" }?["url"] == .string("http://demo-book.\(env.namespace).svc:8080/"))
        }
    }

    /// A failed build fails the Meteor with Tekton's reason and message, and the other pipeline still finishes.
    @Test(arguments: Backend.testable) func aFailedBuildFailsTheMeteorWithTektonsReason(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            try await env.createMeteor(sampleMeteor("broken"), failing: [.jupyterbook])
            let failed = try #require(
                try await env.cluster.waitFor(env.cluster.meteors, "broken", timeout: .seconds(90)) {
                    $0?[path: "status", "phase"] == "Failed" && condition($0, "JupyterHub")?["status"] == "True"
                })
            let book = try #require(condition(failed, "JupyterBook"))
            #expect(book["status"] == "False")
            let run = try await env.cluster.runs.get(PipelineRunBuilder.name(meteor: "broken", pipeline: .jupyterbook, generation: 1))
            let state = PipelineRunState(run)
            #expect(state.outcome == .failed)
            #expect(state.reason == "Failed")
            // Failed at the book task (after the clone), the rest skipped: Tekton's count, the simulator's too.
            #expect(state.message == TektonSimulator.tasksMessage(completed: 2, failed: 1, skipped: 2))
            #expect(book["message"]?.stringValue?.contains(state.message) == true, "\(book)")
            #expect(condition(failed, "Ready")?["status"] == "False")
        }
    }

    /// A build that fails for a reason the Task can name (here: a lock made for another Python) says so in the
    /// Meteor's status, its Ready condition and its Warning Event, not only in a build log: the buildah Task's
    /// FAILURE result, through the Pipeline's IMAGE_FAILURE.
    @Test(arguments: Backend.testable) func aFailedImageBuildSaysWhyInTheMeteorsStatus(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            let why =
                "could not build Containerfile for linux/amd64: Pipfile.lock is locked for Python 3.6 but the base image has Python 3.11: lock it again with Python 3.11, or choose a base image with Python 3.6"
            try await env.createMeteor(sampleMeteor("locked", pipelines: ["jupyterhub"]), imageFailure: why)
            let failed = try #require(
                try await env.cluster.waitFor(env.cluster.meteors, "locked", timeout: .seconds(90)) { $0?[path: "status", "phase"] == "Failed" })
            let run = try await env.cluster.runs.get(PipelineRunBuilder.name(meteor: "locked", pipeline: .jupyterhub, generation: 1))
            let tekton = try #require(
                (run[path: "status", "conditions"]?.arrayValue ?? []).first { $0["type"] == "Succeeded" }?["message"]?.stringValue)
            #expect(tekton == TektonSimulator.tasksMessage(completed: 3, failed: 1), "failed at the image task, as Tekton counts it")
            let entry = try #require(failed[path: "status", "pipelines"]?.arrayValue?.first)
            #expect(entry["message"] == .string("\(why) (\(tekton))"), "\(entry)")
            #expect(condition(failed, "JupyterHub")?["message"] == .string("\(why) (\(tekton))"))
            #expect(condition(failed, "Ready")?["message"] == .string("Failed: jupyterhub (\(why))"))
            let event = try await env.cluster.waitForEvent(about: "locked", reason: "PipelineFailed")
            #expect(
                event?["type"] == "Warning" && event?["message"] == .string("Failed: jupyterhub (\(why))"),
                "\(event?.serializedString() ?? "no event")")
        }
    }

    /// Messages grow with the spec: 64 edge targets (the CRD's most), each with a path, a cluster and an image the
    /// operator refuses, make an InvalidSpec message past the 32 KiB a condition message may have (the CRD's maxLength,
    /// metav1.Condition's). The status is still written, its message cut to fit and saying so, and the Event's
    /// message is cut to 1 KiB.
    @Test(arguments: Backend.testable) func aHugeInvalidSpecStillGetsItsStatusWithinTheSizeLimits(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            let c = env.cluster
            var edge = donkeycarEdge(registry: "registry.example")
            edge.targets = (0..<64).map { i in
                .init(
                    name: "t\(i)", cluster: "microshift \(i) " + String(repeating: "c", count: 230),
                    image: "nope-\(i)-" + String(repeating: "i", count: 30), path: "/" + String(repeating: "p", count: 1000), namespace: "donkeycar")
            }
            edge.images = (0..<16).map { i in
                .init(
                    name: "car\(i)", dockerfile: "/" + String(repeating: "d", count: 1000), platform: "linux/arm64",
                    repository: "registry.example/meteor/car\(i)")
            }
            var body = try JSONValue(
                encoding: Meteor(
                    metadata: ObjectMeta(name: "huge"), spec: .init(url: "https://github.com/x/car", ref: "main", pipelines: ["edge"], edge: edge)))
            body[path: "metadata", "namespace"] = .string(c.namespace)
            _ = try await c.meteors.create(body, params: WriteParams(fieldValidation: .strict))
            let refused = try #require(try await c.waitFor(c.meteors, "huge") { condition($0, "Ready")?["reason"] == "InvalidSpec" })
            let message = try #require(condition(refused, "Ready")?["message"]?.stringValue)
            #expect(message.utf8.count <= Condition.maxMessageBytes && message.utf8.count > 30_000, "\(message.utf8.count) bytes")
            #expect(
                message.hasPrefix("spec.edge.images[0].dockerfile: must be a relative path") && message.hasSuffix(ObjectHelpers.truncationMarker),
                "\(message.prefix(80)) … \(message.suffix(80))")
            #expect(refused[path: "status", "phase"] == "Failed")
            let event = try #require(try await c.waitForEvent(about: "huge", reason: "InvalidSpec"))
            #expect(
                (event["message"]?.stringValue?.utf8.count ?? 0) <= EventRecorder.maxMessageBytes
                    && event["message"]?.stringValue?.hasSuffix(ObjectHelpers.truncationMarker) == true)
            ReliabilityReport.row(
                "A spec whose refusal runs long: 64 edge targets and 16 images, each with refused fields",
                injected: "an InvalidSpec message longer than the CRD's 32 KiB",
                did:
                    "status written: the condition message cut to \(message.utf8.count) bytes ending \"… (truncated)\", the Event's to \(event["message"]?.stringValue?.utf8.count ?? 0)",
                lost: "0 (before: every status write refused 422)", backend: backend)
        }
    }

    /// Deleting a Meteor takes its PipelineRuns and book site with it (the garbage collector, through owners).
    @Test(arguments: Backend.testable) func deletingAMeteorRemovesWhatItMade(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            try await env.createMeteor(sampleMeteor("gone"))
            _ = try await env.cluster.waitFor(env.cluster.meteors, "gone", timeout: .seconds(90)) { $0?[path: "status", "phase"] == "Ready" }
            let deployments = env.client.dynamic(BookSite.deploymentType, namespace: env.namespace)
            _ = try await env.cluster.waitFor(deployments, "gone-book") { $0 != nil }
            let services = env.client.dynamic(BookSite.serviceType, namespace: env.namespace)
            var children: [(DynamicApi, String)] = []
            for api in [env.cluster.runs, deployments, services] {
                for item in try await api.list(ListOptions(labelSelector: "\(MeteorLabels.meteor)=gone")).items {
                    children.append((api, item[path: "metadata", "name"]?.stringValue ?? ""))
                }
            }
            #expect(children.count == 4, "two PipelineRuns, the Deployment and the Service")
            try await env.cluster.meteors.delete("gone")
            for (api, name) in children {
                _ = try await env.cluster.waitFor(api, name, timeout: .seconds(60)) { $0 == nil }
            }
        }
    }

    /// A spec change starts the new generation's runs and cancels the old ones, which Tekton reports Cancelled.
    @Test(arguments: Backend.testable) func aSpecChangeCancelsTheSupersededRuns(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            try await env.createMeteor(sampleMeteor("moving", pipelines: ["jupyterhub"]), holding: true)
            let g1 = PipelineRunBuilder.name(meteor: "moving", pipeline: .jupyterhub, generation: 1)
            let g2 = PipelineRunBuilder.name(meteor: "moving", pipeline: .jupyterhub, generation: 2)
            _ = try await env.cluster.waitFor(env.cluster.runs, g1, timeout: .seconds(60)) { PipelineRunState($0 ?? .null).startTime != nil }
            _ = try await env.cluster.meteors.patch("moving", .merge(["spec": ["ref": "v2"]]))
            let cancelled = try #require(
                try await env.cluster.waitFor(env.cluster.runs, g1, timeout: .seconds(60)) { PipelineRunState($0 ?? .null).outcome == .failed })
            #expect(cancelled[path: "spec", "status"] == "Cancelled", "the operator asked for the cancellation")
            let state = PipelineRunState(cancelled)
            #expect(state.reason == "Cancelled")
            #expect(state.message == "PipelineRun \"\(g1)\" was cancelled")
            let run2 = try #require(try await env.cluster.waitFor(env.cluster.runs, g2) { $0 != nil })
            #expect((run2[path: "spec", "params"]?.arrayValue ?? []).contains(["name": "ref", "value": "v2"]))
            let moved = try #require(try await env.cluster.waitFor(env.cluster.meteors, "moving") { $0?[path: "status", "observedGeneration"] == 2 })
            #expect(moved[path: "status", "pipelines"]?.arrayValue?.first?["pipelineRunName"] == .string(g2))
            #expect(moved[path: "status", "phase"] == "Building")
        }
    }

    /// A Meteor changed again and again keeps its current runs and the newest superseded one per pipeline; older
    /// ones, once Tekton has finished cancelling them, are deleted (with their workspace PVCs).
    @Test(arguments: Backend.testable) func supersededRunsArePrunedToTheNewest(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            try await env.createMeteor(sampleMeteor("churn", pipelines: ["jupyterhub"]), holding: true)
            let run = { (g: Int64) in PipelineRunBuilder.name(meteor: "churn", pipeline: .jupyterhub, generation: g) }
            _ = try await env.cluster.waitFor(env.cluster.runs, run(1), timeout: .seconds(60)) { $0 != nil }
            for (g, ref) in [(Int64(2), "v2"), (3, "v3"), (4, "v4")] {
                _ = try await env.cluster.meteors.patch("churn", .merge(["spec": ["ref": .string(ref)]]))
                _ = try await env.cluster.waitFor(env.cluster.runs, run(g), timeout: .seconds(60)) { $0 != nil }
            }
            for g in [Int64(1), 2] { _ = try await env.cluster.waitFor(env.cluster.runs, run(g), timeout: .seconds(60)) { $0 == nil } }
            _ = try await env.cluster.waitFor(env.cluster.runs, run(3), timeout: .seconds(60)) { PipelineRunState($0 ?? .null).outcome == .failed }
            let left = try await env.cluster.runs.list(ListOptions(labelSelector: "\(MeteorLabels.meteor)=churn")).items.compactMap {
                $0[path: "metadata", "name"]?.stringValue
            }
            #expect(Set(left) == [run(3), run(4)], "\(left)")
        }
    }

    /// A Meteor changed 200 times while its builds hang keeps a bounded number of PipelineRuns at every moment
    /// (superseded ones cancelled, finished ones pruned to the newest) and ends with two: the current run and the
    /// last superseded one. Its reconciles find its runs in the cache's label index: on the embedded server, where
    /// the request log says who asked, the operator never read a PipelineRun from the API server but by its
    /// informer's list.
    @Test(arguments: Backend.testable) func aMeteorChanged200TimesKeepsABoundedNumberOfRuns(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true, clientOptions: { $0.userAgent = "churn-operator" }) { env in
            let c = env.cluster
            let name = "churn200"
            let run = { @Sendable (g: Int64) in PipelineRunBuilder.name(meteor: name, pipeline: .jupyterhub, generation: g) }
            // The test's own watch of the Meteor's runs: how many exist at once, and how many there ever were.
            let seen = Observed<(live: [String: Bool], peak: Int, ever: Set<String>)>(([:], 0, []))
            let informer = DynamicInformer(api: c.runs, labelSelector: LabelSelector([.init(key: MeteorLabels.meteor, op: .equals, values: [name])]))
            await informer.addHandler { e in
                seen.update { s in
                    switch e {
                    case .added(let o), .updated(_, let o):
                        let n = o[path: "metadata", "name"]?.stringValue ?? ""
                        s.live[n] = PipelineRunState(o).outcome != .running
                        s.ever.insert(n)
                    case .deleted(let o): s.live[o[path: "metadata", "name"]?.stringValue ?? ""] = nil
                    }
                    s.peak = max(s.peak, s.live.count)
                }
            }
            let watching = Task { await informer.run() }
            defer { watching.cancel() }
            try await env.createMeteor(sampleMeteor(name, pipelines: ["jupyterhub"]), holding: true)
            _ = try await c.waitFor(c.runs, run(1), timeout: .seconds(60)) { $0 != nil }
            let last = Int64(201)
            for g in 2...last {
                _ = try await c.meteors.patch(name, .merge(["spec": ["ref": .string("v\(g)")]]))
                // Every tenth change waits for its run, so that many generations are built, not only the last.
                if g % 10 == 0 { _ = try await c.waitFor(c.runs, run(g), timeout: .seconds(60)) { $0 != nil } }
            }
            _ = try await c.waitFor(c.runs, run(last), timeout: .seconds(60)) { $0 != nil }
            // Settled: the current run and one finished superseded run, nothing else.
            try await seen.wait(timeout: .seconds(120)) { s in
                s.live.count == 2 && s.live[run(last)] != nil && s.live.contains { $0.key != run(last) && $0.value }
            }
            _ = try await c.waitFor(c.meteors, name) { $0?[path: "status", "observedGeneration"]?.intValue == last }
            let left = try await c.runs.list(ListOptions(labelSelector: "\(MeteorLabels.meteor)=\(name)")).items
            let kept = left.first { $0[path: "metadata", "name"]?.stringValue != run(last) }
            #expect(
                left.count == 2 && kept.map { PipelineRunState($0).outcome != .running } == true,
                "\(left.map { $0[path: "metadata", "name"] ?? .null })")
            let s = seen.value
            print("churn (\(backend)): 200 changes, \(s.ever.count) runs built, at most \(s.peak) at once, \(left.count) left")
            #expect(s.ever.count >= 21, "only \(s.ever.count) runs built")
            #expect(s.peak <= 8, "\(s.peak) runs of one Meteor at once")
            ReliabilityReport.row(
                "A Meteor changed 200 times while its builds hang", injected: "200 spec changes",
                did:
                    "built \(s.ever.count) generations, cancelled each superseded run and pruned the finished ones: at most \(s.peak) PipelineRuns at once, \(left.count) left (current and previous)",
                lost: "0 (observedGeneration \(last))", backend: backend)
            if backend == .embedded {
                let reads = c.server.requestLog.filter {
                    $0.userAgent == "churn-operator" && $0.path.contains("/pipelineruns") && ["get", "list"].contains($0.verb)
                }.count
                #expect(reads <= 2, "the operator read PipelineRuns from the API server \(reads) times")
            }
        }
    }

    /// A namespace deleted while its Meteors build: the API server (kube-controller-manager's namespace controller
    /// on the real one) deletes the runs and the Meteors; the operator, which meets 403 NamespaceTerminating on
    /// what it creates meanwhile, neither crashes nor loops nor loses readiness, and (embedded: the real namespace
    /// may take minutes to go) a Meteor in the namespace made again under the same name is built, with no restart. (The real server's operator watches only this one
    /// namespace, so it is the test's own namespace that goes.)
    @Test(arguments: Backend.testable) func aNamespaceDeletedWhileItsMeteorsBuildLeavesTheOperatorWorking(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true, clientOptions: { $0.userAgent = "namespace-operator" }) { env in
            let c = env.cluster
            let ns = backend == .real ? c.namespace : "doomed"
            if backend == .embedded { try await c.createNamespace(ns) }
            let meteors = c.client.dynamic(Meteor.resourceType, namespace: ns)
            let names = (0..<5).map { "doomed-\($0)" }
            if backend == .real {
                try await env.cluster.kit!.kubectlOK(
                    "-n", ns, "annotate", "--overwrite", "task", "meteor-git-clone", "fake-kubelet.tekton.dev/run-seconds=-1")
            }
            for n in names {
                var m = sampleMeteor(n)
                if backend == .embedded { m[path: "metadata", "annotations", TektonSimulator.holdAnnotation] = "true" }
                _ = try await meteors.create(m)
            }
            for n in names { _ = try await c.waitFor(meteors, n, timeout: .seconds(60)) { $0?[path: "status", "observedGeneration"] == 1 } }
            let namespaces = c.client.api(Namespace.self)
            let deleting = Date()
            try await namespaces.delete(ns)
            // The Meteors go first (the part the operator sees); the namespace itself can take minutes on the shared
            // control plane, whose kube-controller-manager (20 requests/s) is deleting every finished test's namespace.
            for n in names { _ = try await c.waitFor(meteors, n, timeout: .seconds(180)) { $0 == nil } }
            #expect(env.manager.unreadiness == nil, "\(env.manager.unreadiness ?? "")")
            // On the shared control plane the namespace itself can stay Terminating for more than 10 minutes while
            // the whole suite runs (its kube-controller-manager deletes every finished test's namespace; seen in
            // CI, never alone, where it goes in seconds): the real case stops here, with the Meteors gone, the
            // operator ready and no loop of refused writes (its log showed 10 refused Events, then none).
            guard backend == .embedded else {
                ReliabilityReport.row(
                    "A namespace deleted while its Meteors build", injected: "1 namespace, \(names.count) Meteors with running builds",
                    did: "no crash, no loop, /readyz ok while the namespace terminated", lost: "— (the namespace's objects go with it)",
                    backend: backend)
                return
            }
            _ = try await within(.seconds(60), "namespace \(ns) gone") {
                while try await namespaces.getOptional(ns) != nil { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(env.manager.unreadiness == nil, "\(env.manager.unreadiness ?? "")")
            if backend == .embedded {
                let refused = c.server.requestLog.filter { $0.userAgent == "namespace-operator" && $0.time > deleting && $0.code == 403 }
                print("namespace deleted: the operator's requests refused 403 while it terminated: \(refused.count)")
                #expect(refused.count <= 4 * names.count, "a loop of refused writes: \(refused.map { "\($0.method) \($0.path)" })")
            }
            try await c.createNamespace(ns)
            _ = try await meteors.create(sampleMeteor("reborn"))
            let reborn = try await c.waitFor(meteors, "reborn", timeout: .seconds(90)) {
                ($0?[path: "status", "pipelines"]?.arrayValue?.count ?? 0) == 2
            }
            #expect(reborn?[path: "status", "observedGeneration"] == 1)
            ReliabilityReport.row(
                "A namespace deleted while its Meteors build", injected: "1 namespace, \(names.count) Meteors with running builds",
                did: "no crash, no loop, /readyz ok; a Meteor in the namespace made again was built with no restart",
                lost: "— (the namespace's objects go with it)", backend: backend)
        }
    }

    /// The API server keeps refusing an object a Meteor needs (its book's Service): on the embedded server a 500
    /// on every Service create of the operator's, on the real one a ValidatingAdmissionPolicy that denies
    /// Services in the namespace (the long chaos run met the real thing: 500, "failed to allocate a serviceIP …
    /// range is full"). The
    /// Meteor's `Ready` says so in the server's words, with a Warning Event, instead of a status from before the
    /// builds finished; once the server accepts it again the Meteor becomes Ready with no restart. Before: the
    /// status went on saying "PipelineRun … is Pending" of runs long finished.
    @Test(arguments: Backend.testable) func anObjectTheAPIServerKeepsRefusingIsNamedInTheStatusUntilItIsAccepted(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true, clientOptions: { $0.userAgent = "refused-operator" }) { env in
            let c = env.cluster
            switch backend {
            case .embedded:
                c.server.inject(
                    InjectedFault(
                        .status(500, retryAfterSeconds: nil), verb: "create", pathContains: "/services", userAgentContains: "refused-operator",
                        count: 100_000))
            case .real:
                try await c.kit!.kubectlOK("apply", "-f", "-", input: Self.noServicesPolicy(c.namespace))
                // In force once the API server's policy informer has it: until a Service of the test's own is refused.
                try await persistently("the no-Services policy in force") {
                    let probe = try await c.kit!.kubectl(["-n", c.namespace, "create", "service", "clusterip", "probe", "--tcp=80"])
                    if probe.status == 0 {
                        _ = try await c.kit!.kubectl(["-n", c.namespace, "delete", "service", "probe"])
                        throw TimedOut(what: "the policy", after: .zero)
                    }
                }
            }
            try await env.createMeteor(sampleMeteor("unserved", pipelines: ["jupyterbook"]))
            let reason = MeteorStatusVocabulary.apiRequestFailed
            let refused: JSONValue?
            do {
                refused = try await c.waitFor(c.meteors, "unserved", timeout: .seconds(90)) {
                    condition($0, "Ready")?["reason"]?.stringValue == reason
                }
            } catch {
                Issue.record("the Meteor: \(try await c.meteors.get("unserved")[path: "status"] ?? .null)")
                throw error
            }
            let message = condition(refused, "Ready")?["message"]?.stringValue ?? ""
            let words = backend == .embedded ? "Internal error occurred: injected fault" : "no Services in this namespace (test policy)"
            #expect(message.contains(words), "\(message)")
            #expect(refused?[path: "status", "phase"] != "Ready")
            let event = try await c.waitForEvent(about: "unserved", reason: reason)
            #expect(event?["type"] == "Warning")
            switch backend {
            case .embedded: c.server.clearFaults()
            case .real:
                try await c.kit!.kubectlOK("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", "no-services-\(c.namespace)")
            }
            let served = try await c.waitFor(c.meteors, "unserved", timeout: .seconds(120)) { $0?[path: "status", "phase"] == "Ready" }
            #expect(condition(served, "Ready")?["status"] == "True")
            ReliabilityReport.row(
                "The API server refusing the operator's Service creates (embedded: 500 every time; real: a ValidatingAdmissionPolicy denying them)",
                injected: "every create until lifted",
                did: "Ready=False \(reason) in the server's words, a Warning Event; retried with backoff; Ready once accepted, no restart",
                lost: "0 (before: a stale \"Pending\" status of finished runs)", backend: backend)
        }
    }

    /// A refusal that keeps coming back is retried with the controller's backoff, not in a loop of the operator's
    /// own making: each report of it is a status write, and a write that changes the Meteor queues it again at once.
    /// The report's count is written at 1, 2, 3, then powers of two, so nine failures in a row make at most three
    /// status writes of a server error (reported from the third). Before: one write per failure, and the Meteor was
    /// reconciled about 27 times a second (seen when a status the CRD refused was retried 1,634 times in a minute).
    @Test func aRepeatedRefusalIsRetriedWithBackoffNotRequeuedByItsOwnReport() async throws {
        let failures = Observed(0)
        try await MeteorEnvironment.with(
            tekton: true, clientOptions: { $0.userAgent = "refused-operator" },
            onReconciled: { key, ok in
                if key.name == "unserved", !ok { failures.update { $0 += 1 } }
            }
        ) { env in
            let c = env.cluster
            c.server.inject(
                InjectedFault(
                    .status(500, retryAfterSeconds: nil), verb: "create", pathContains: "/services", userAgentContains: "refused-operator",
                    count: 100_000))
            try await env.createMeteor(sampleMeteor("unserved", pipelines: ["jupyterbook"]))
            try await failures.wait(timeout: .seconds(60)) { $0 >= 9 }
            c.server.clearFaults()
            let log = c.server.requestLog.filter { $0.userAgent.contains("refused-operator") }
            let refusedCreates = log.filter { $0.verb == "create" && $0.path.contains("/services") && $0.code == 500 }.count
            let reports = log.filter { $0.path.hasSuffix("/meteors/unserved/status") && $0.method != "GET" }.map(\.time)
            #expect(refusedCreates >= 9)
            // Status writes: the first ones while building (before the site's Service was needed), then the reports.
            let firstRefusal = try #require(log.first { $0.path.contains("/services") && $0.code == 500 }?.time)
            let reportWrites = reports.filter { $0 > firstRefusal }.count
            #expect(reportWrites <= 4, "\(reportWrites) status writes for \(refusedCreates) refusals")
        }
    }

    /// A ValidatingAdmissionPolicy (CEL, evaluated by kube-apiserver itself) and its binding that deny every
    /// Service create in `namespace`.
    static func noServicesPolicy(_ namespace: String) -> String {
        """
        apiVersion: admissionregistration.k8s.io/v1
        kind: ValidatingAdmissionPolicy
        metadata: {name: no-services-\(namespace)}
        spec:
          failurePolicy: Fail
          matchConstraints:
            resourceRules:
            - {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["services"]}
          validations:
          - {expression: "false", message: "no Services in this namespace (test policy)"}
        ---
        apiVersion: admissionregistration.k8s.io/v1
        kind: ValidatingAdmissionPolicyBinding
        metadata: {name: no-services-\(namespace)}
        spec:
          policyName: no-services-\(namespace)
          validationActions: [Deny]
          matchResources:
            namespaceSelector:
              matchLabels: {kubernetes.io/metadata.name: \(namespace)}
        """
    }

    /// A TTL expires the Meteor: the operator deletes it once creation + TTL has passed, and says so in an Event.
    /// (Under load the first reconcile may already find it expired, so the test waits for the deletion itself.)
    @Test(arguments: Backend.testable) func aTTLExpiresTheMeteor(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true) { env in
            let created = try await env.createMeteor(sampleMeteor("brief", ttl: 3))
            let creation = try #require(created[path: "metadata", "creationTimestamp"]?.stringValue.flatMap(KubeTime.parse))
            _ = try await env.cluster.waitFor(env.cluster.meteors, "brief", timeout: defaultWaitTimeout) { $0 == nil }
            #expect(Date() >= creation.addingTimeInterval(3))
            // Recorded once the delete has gone through, so it may follow the Meteor's disappearance.
            let expired = try await env.cluster.waitForEvent(about: "brief", reason: "Expired", timeout: defaultWaitTimeout)
            #expect(expired?["message"] == "TTL of 3s reached; deleting the Meteor and everything it made")
        }
    }

    /// TTLs are judged by the API server's clock (its `Date` headers), not the operator's: an operator an hour
    /// ahead does not expire a 10-minute Meteor at once, and one an hour behind expires a 3-second one on time.
    @Test(arguments: Backend.testable) func aSkewedOperatorClockJudgesTTLsByTheServersClock(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, clientOptions: { $0.localClock = { Date().addingTimeInterval(3600) } }) { env in
            let created = try await env.createMeteor(sampleMeteor("ahead", ttl: 600, pipelines: ["jupyterhub"]))
            let creation = try #require(created[path: "metadata", "creationTimestamp"]?.stringValue.flatMap(KubeTime.parse))
            // A status is written only by a reconcile that found the Meteor unexpired.
            let kept = try #require(
                try await env.cluster.waitFor(env.cluster.meteors, "ahead") { $0?[path: "status", "expirationTimestamp"] != nil || $0 == nil })
            #expect(kept[path: "status", "expirationTimestamp"] == .string(KubeTime.format(creation.addingTimeInterval(600))))
            let skew = try #require(env.manager.client.serverClock.skew)
            #expect(abs(skew + 3600) < 5, "the server's clock seen an hour behind the operator's: \(skew)")
            ReliabilityReport.row(
                "Operator clock an hour ahead of the API server's", injected: "+3600 s",
                did: "measured the server's clock \(Int(skew.rounded())) s off (its Date headers); a 600 s TTL judged by it",
                lost: "0 (before: deleted at once)", backend: backend)
        }
        try await MeteorEnvironment.with(on: backend, clientOptions: { $0.localClock = { Date().addingTimeInterval(-3600) } }) { env in
            let created = try await env.createMeteor(sampleMeteor("behind", ttl: 3, pipelines: ["jupyterhub"]))
            let creation = try #require(created[path: "metadata", "creationTimestamp"]?.stringValue.flatMap(KubeTime.parse))
            _ = try await env.cluster.waitFor(env.cluster.meteors, "behind", timeout: defaultWaitTimeout) { $0 == nil }
            #expect(Date() >= creation.addingTimeInterval(3))
            ReliabilityReport.row(
                "Operator clock an hour behind the API server's", injected: "−3600 s",
                did: "a 3 s TTL expired \(String(format: "%.1f", Date().timeIntervalSince(creation))) s after creation, by the server's clock",
                lost: "— (before: an hour late)", backend: backend)
        }
    }

    /// A build that outlives `spec.timeouts.pipeline` fails the Meteor with Tekton's timeout reason and message;
    /// the simulator's timed-out run has the shape real Tekton's has.
    /// A ServiceAccount or push Secret the namespace lacks is named in the Meteor's status (before any run, so
    /// not as a failed Pod three objects away); once it is created the builds start, with the credentials bound.
    @Test(arguments: Backend.testable) func aMissingServiceAccountOrPushSecretIsNamedThenTheBuildsStart(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(
            on: backend,
            configure: {
                $0.build.serviceAccount = "builder"
                $0.build.pushSecret = "push-creds"
                $0.prerequisiteRecheck = .seconds(1)
            }
        ) { env in
            let c = env.cluster
            _ = try await c.meteors.create(sampleMeteor("needy", pipelines: ["jupyterhub"]))
            let waiting = try await c.waitFor(c.meteors, "needy") { condition($0, "Ready")?["reason"] == "BuildPrerequisiteMissing" }
            #expect(
                condition(waiting, "Ready")?["message"]?.stringValue?.contains(
                    "ServiceAccount builder (--pipeline-service-account) does not exist in namespace \(c.namespace)") == true)
            let accounts = c.client.dynamic(
                ResourceType(group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true), namespace: c.namespace)
            _ = try await accounts.create(["apiVersion": "v1", "kind": "ServiceAccount", "metadata": ["name": "builder"]])
            _ = try await c.waitFor(c.meteors, "needy") {
                condition($0, "Ready")?["message"]?.stringValue?.contains("push Secret push-creds (--push-secret) does not exist") == true
            }
            let secrets = c.client.api(Secret.self, namespace: c.namespace)
            _ = try await secrets.create(Secret(metadata: ObjectMeta(name: "push-creds", namespace: c.namespace), stringData: ["token": "x"]))
            _ = try await c.waitFor(c.meteors, "needy") {
                condition($0, "Ready")?["message"]?.stringValue?.contains("is not of type kubernetes.io/dockerconfigjson") == true
            }
            #expect(try await c.runs.list().items.isEmpty, "a run was created before its prerequisites existed")
            try await secrets.delete("push-creds")
            var config = Secret(metadata: ObjectMeta(name: "push-creds", namespace: c.namespace), stringData: [".dockerconfigjson": #"{"auths":{}}"#])
            config.type = "kubernetes.io/dockerconfigjson"
            _ = try await secrets.create(config)
            let name = PipelineRunBuilder.name(meteor: "needy", pipeline: .jupyterhub, generation: 1)
            let run = try #require(try await c.waitFor(c.runs, name, timeout: .seconds(60)) { $0 != nil })
            #expect(run[path: "spec", "taskRunTemplate", "serviceAccountName"] == "builder")
            #expect(
                (run[path: "spec", "workspaces"]?.arrayValue ?? []).contains([
                    "name": "dockerconfig", "secret": ["secretName": "push-creds", "items": [["key": ".dockerconfigjson", "path": "config.json"]]],
                ]))
            let events = try await c.client.api(Event.self, namespace: c.namespace).list().items.filter { $0.involvedObject.name == "needy" }
            #expect(events.contains { $0.reason == "BuildPrerequisiteMissing" && $0.type == "Warning" })
            ReliabilityReport.row(
                "The namespace's ServiceAccount or push Secret missing, then a Secret of the wrong type", injected: "3 missing prerequisites in turn",
                did:
                    "Ready=False BuildPrerequisiteMissing naming each, a Warning Event; the run made once all existed, with the account and the Secret bound",
                lost: "0 (no run before its prerequisites)", backend: backend)
        }
    }

    /// `spec.gitSecretRef` naming a Secret that is not there, or not basic-auth: named in the status, no run; once
    /// it is right the runs start with it bound for the clone.
    @Test func aMissingGitSecretIsNamedThenTheBuildsStartWithIt() async throws {
        try await MeteorEnvironment.with(configure: { $0.prerequisiteRecheck = .seconds(1) }) { env in
            let c = env.cluster
            var body = sampleMeteor("private", pipelines: ["jupyterbook"])
            body[path: "spec", "gitSecretRef"] = ["name": "repo-creds"]
            _ = try await c.meteors.create(body, params: WriteParams(fieldValidation: .strict))
            _ = try await c.waitFor(c.meteors, "private") {
                condition($0, "Ready")?["message"]?.stringValue?.contains(
                    "Secret repo-creds (spec.gitSecretRef) does not exist in namespace \(c.namespace)") == true
            }
            let secrets = c.client.api(Secret.self, namespace: c.namespace)
            _ = try await secrets.create(Secret(metadata: ObjectMeta(name: "repo-creds", namespace: c.namespace), stringData: ["token": "x"]))
            _ = try await c.waitFor(c.meteors, "private") {
                condition($0, "Ready")?["message"]?.stringValue?.contains("is not a kubernetes.io/basic-auth Secret") == true
            }
            #expect(try await c.runs.list().items.isEmpty)
            try await secrets.delete("repo-creds")
            _ = try await secrets.create(
                Secret(
                    metadata: ObjectMeta(name: "repo-creds", namespace: c.namespace), type: "kubernetes.io/basic-auth",
                    stringData: ["username": "bot", "password": "t"]))
            let run = try #require(
                try await c.waitFor(c.runs, PipelineRunBuilder.name(meteor: "private", pipeline: .jupyterbook, generation: 1)) { $0 != nil })
            #expect(
                (run[path: "spec", "workspaces"]?.arrayValue ?? []).contains(["name": "git-credentials", "secret": ["secretName": "repo-creds"]]))
        }
    }

    /// An ssh address needs a kubernetes.io/ssh-auth Secret with known_hosts: without one, or with a basic-auth
    /// one, the Meteor says which; with it the run clones the address as given and binds the Secret.
    @Test func anSSHAddressNeedsAnSSHKeySecretWithKnownHosts() async throws {
        try await MeteorEnvironment.with(configure: { $0.prerequisiteRecheck = .seconds(1) }) { env in
            let c = env.cluster
            var body = sampleMeteor("by-ssh", pipelines: ["jupyterbook"])
            body[path: "spec", "url"] = "git@github.com:AICoE/elyra-aidevsecops-tutorial.git"
            _ = try await c.meteors.create(body, params: WriteParams(fieldValidation: .strict))
            _ = try await c.waitFor(c.meteors, "by-ssh") {
                condition($0, "Ready")?["message"]
                    == "git@github.com:AICoE/elyra-aidevsecops-tutorial.git is an ssh address: name a kubernetes.io/ssh-auth Secret (ssh-privatekey, known_hosts) in spec.gitSecretRef"
            }
            let secrets = c.client.api(Secret.self, namespace: c.namespace)
            _ = try await secrets.create(
                Secret(
                    metadata: ObjectMeta(name: "repo-key", namespace: c.namespace), type: "kubernetes.io/basic-auth",
                    stringData: ["username": "bot", "password": "t"]))
            _ = try await c.meteors.patch("by-ssh", .merge(["spec": ["gitSecretRef": ["name": "repo-key"]]]))
            _ = try await c.waitFor(c.meteors, "by-ssh") {
                condition($0, "Ready")?["message"]?.stringValue?.contains(
                    "is not a kubernetes.io/ssh-auth Secret with ssh-privatekey and known_hosts") == true
            }
            #expect(try await c.runs.list().items.isEmpty)
            try await secrets.delete("repo-key")
            _ = try await secrets.create(
                Secret(
                    metadata: ObjectMeta(name: "repo-key", namespace: c.namespace), type: "kubernetes.io/ssh-auth",
                    stringData: ["ssh-privatekey": "k", "known_hosts": "github.com ssh-ed25519 AAAA"]))
            let run = try #require(
                try await c.waitFor(c.runs, PipelineRunBuilder.name(meteor: "by-ssh", pipeline: .jupyterbook, generation: 2)) { $0 != nil })
            #expect(
                (run[path: "spec", "params"]?.arrayValue ?? []).contains([
                    "name": "url", "value": "git@github.com:AICoE/elyra-aidevsecops-tutorial.git",
                ]))
            #expect((run[path: "spec", "workspaces"]?.arrayValue ?? []).contains(["name": "git-credentials", "secret": ["secretName": "repo-key"]]))
        }
    }

    /// Without a configured ServiceAccount, runs use OpenShift Pipelines' `pipeline` where the namespace has it.
    @Test func theServiceAccountDefaultsToOpenShiftPipelinesOneWhereItExists() async throws {
        try await MeteorEnvironment.with { env in
            let c = env.cluster
            _ = try await c.meteors.create(sampleMeteor("plain", pipelines: ["jupyterhub"]))
            let first = try #require(
                try await c.waitFor(c.runs, PipelineRunBuilder.name(meteor: "plain", pipeline: .jupyterhub, generation: 1)) { $0 != nil })
            #expect(first[path: "spec", "taskRunTemplate", "serviceAccountName"] == "default")
            #expect((first[path: "spec", "workspaces"]?.arrayValue ?? []).count == 1, "no push Secret configured, none bound")
            let prerequisites = BuildPrerequisites(client: c.client, settings: BuildSettings())
            _ = try await c.client.dynamic(
                ResourceType(group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true), namespace: c.namespace
            )
            .create(["apiVersion": "v1", "kind": "ServiceAccount", "metadata": ["name": "pipeline"]])
            #expect(try await prerequisites.check(namespace: c.namespace) == .ready(serviceAccount: "pipeline"))
        }
    }

    @Test(arguments: Backend.testable) func aBuildThatTimesOutFailsTheMeteor(_ backend: Backend) async throws {
        try await MeteorEnvironment.with(on: backend, tekton: true, configure: { $0.build.pipelineTimeout = "5s" }) { env in
            try await env.createMeteor(sampleMeteor("slow", pipelines: ["jupyterhub"]), holding: true)
            let name = PipelineRunBuilder.name(meteor: "slow", pipeline: .jupyterhub, generation: 1)
            let run = try #require(
                try await env.cluster.waitFor(env.cluster.runs, name, timeout: .seconds(60)) { PipelineRunState($0 ?? .null).outcome == .failed })
            let message = "PipelineRun \"\(name)\" failed to finish within \"5s\""
            let expected: JSONValue = [
                "fields": ["completionTime", "conditions", "startTime"],
                "conditions": [
                    ["type": "Succeeded", "status": "False", "reason": "PipelineRunTimeout", "message": .string(message), "hasTransitionTime": true]
                ],
                "results": [],
            ]
            #expect(TektonSimulatorFidelityTests.shape(run) == expected, "\(run["status"]?.serializedString() ?? "")")
            let failed = try #require(
                try await env.cluster.waitFor(env.cluster.meteors, "slow", timeout: .seconds(60)) { $0?[path: "status", "phase"] == "Failed" })
            let hub = try #require(condition(failed, "JupyterHub"))
            #expect(hub["status"] == "False")
            #expect(hub["message"]?.stringValue == message)
            #expect(condition(failed, "Ready")?["reason"] == "PipelineFailed")
            #expect(failed[path: "status", "pipelines"]?.arrayValue?.first?["reason"] == "PipelineRunTimeout")
        }
    }
}

/// The sandbox's Tekton simulator against the real controller: the same Meteor, one succeeded and one failed run on
/// each, and their statuses compared field by field, times aside (and values that are the build's own, such as
/// digests, compared by form).
@Suite struct TektonSimulatorFidelityTests {
    /// Status fields only real Tekton writes, and why the simulator need not: nothing of ours reads them, and the
    /// operator's cache drops them (`PipelineRunBuilder.trimmedForCache`).
    static let onlyRealTekton: Set<String> = ["childReferences", "pipelineSpec", "provenance", "spanContext"]

    static func shape(_ run: JSONValue) -> JSONValue {
        let status = run["status"]?.objectValue ?? [:]
        var out: JSONObject = [:]
        out["fields"] = .array(status.keys.filter { !onlyRealTekton.contains($0) }.sorted().map(JSONValue.string))
        out["conditions"] = .array(
            (status["conditions"]?.arrayValue ?? []).map { c in
                [
                    "type": c["type"] ?? .null, "status": c["status"] ?? .null, "reason": c["reason"] ?? .null, "message": c["message"] ?? .null,
                    "hasTransitionTime": .bool(c["lastTransitionTime"] != nil),
                ]
            })
        if let skipped = status["skippedTasks"] { out["skippedTasks"] = skipped }
        out["results"] = .array(
            (status["results"]?.arrayValue ?? []).map { r in
                let v = r["value"]?.stringValue ?? ""
                return ["name": r["name"] ?? .null, "value": .string(PipelineRunState.isDigest(v) ? "<digest>" : v.isEmpty ? "<empty>" : "<text>")]
            }.sorted { $0.serializedString() < $1.serializedString() })
        return .object(out)
    }

    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func theSimulatorWritesWhatRealTektonWrites() async throws {
        var shapes: [Backend: [String: JSONValue]] = [:]
        for backend in Backend.allCases {
            try await MeteorEnvironment.with(on: backend, tekton: true) { env in
                try await env.createMeteor(sampleMeteor("same", pipelines: ["jupyterhub", "jupyterbook"]), failing: [.jupyterbook])
                _ = try await env.cluster.waitFor(env.cluster.meteors, "same", timeout: .seconds(90)) {
                    $0?[path: "status", "phase"] == "Failed" && condition($0, "JupyterHub")?["status"] == "True"
                }
                for pipeline in [Pipeline.jupyterhub, .jupyterbook] {
                    let run = try await env.cluster.runs.get(PipelineRunBuilder.name(meteor: "same", pipeline: pipeline, generation: 1))
                    shapes[backend, default: [:]][pipeline.rawValue] = Self.shape(run)
                }
            }
        }
        for pipeline in ["jupyterhub", "jupyterbook"] {
            #expect(
                shapes[.embedded]?[pipeline] == shapes[.real]?[pipeline],
                "\(pipeline):\n  simulator: \(shapes[.embedded]?[pipeline]?.serializedString() ?? "-")\n  Tekton:    \(shapes[.real]?[pipeline]?.serializedString() ?? "-")"
            )
        }
    }
}
