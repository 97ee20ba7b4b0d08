import Foundation
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorSandbox
import Testing

/// `meteor-operator sandbox` as a person runs it: the built binary, the samples applied with the machine's
/// kubectl, every sample Meteor (edge included) reaching Ready, and a clean exit on Ctrl-C (SIGINT).
@Suite(.serialized) struct SandboxTests {
    /// The sandbox binary with fast simulators, writing its kubeconfig into a fresh directory.
    static func startSandbox() throws -> (BackgroundProcess, URL, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let kubeconfig = dir.appendingPathComponent("sandbox.kubeconfig").path
        let sandbox = try BackgroundProcess(
            operatorBinary, ["sandbox", "--no-tui", "--tekton-seconds", "0.3", "--argo-seconds", "0.3", "--kubeconfig-out", kubeconfig],
            directory: TestCluster.repositoryDirectory)
        return (sandbox, dir, kubeconfig)
    }

    @Test(.enabled(if: kubectl != nil, "no kubectl on this machine"))
    func samplesReachReadyWithKubectlAndCtrlCExitsCleanly() async throws {
        let (sandbox, dir, kubeconfig) = try Self.startSandbox()
        defer { sandbox.terminate() }
        let export = try await sandbox.line(containing: "export KUBECONFIG=")
        #expect(export == "export KUBECONFIG=\(kubeconfig)")
        let k = Kubectl(binary: kubectl!, kubeconfig: kubeconfig, cacheDir: dir.appendingPathComponent("cache").path)
        let samples = TestCluster.repositoryDirectory.appendingPathComponent("config/samples").path
        let applied = try await k.ok("apply", "-k", samples)
        #expect(applied.contains("meteor.meteor.zone/donkeycar created"), "\(applied)")
        // A Meteor the Tekton simulator is asked to fail.
        let failing = dir.appendingPathComponent("failing.yaml").path
        try """
        apiVersion: meteor.zone/v1alpha1
        kind: Meteor
        metadata:
          name: will-fail
          annotations: {sandbox.meteor.zone/fail: jupyterbook}
        spec: {url: "https://github.com/aicoe-aiops/meteor-demo", ref: main, pipelines: [jupyterbook]}
        """.write(toFile: failing, atomically: true, encoding: .utf8)
        _ = try await k.ok("apply", "-f", failing)

        let waited = try await k.run(
            "wait", "--for=condition=Ready", "meteor/donkeycar", "meteor/elyra-aidevsecops-tutorial", "meteor/meteor-demo-book",
            "meteor/meteor-demo-image", "--timeout=60s")
        #expect(waited.status == 0, "kubectl wait: \(waited.output)\n--- sandbox:\n\(sandbox.text)")
        // The CustomRuntimeEnvironment samples, one per build type, built by the sandbox's Tekton.
        let environments = try await k.run("wait", "--for=condition=Ready", "cre", "--all", "--timeout=60s")
        #expect(environments.status == 0 && environments.output.split(separator: "\n").count == 3, "kubectl wait: \(environments.output)")
        let failed = try await k.run("wait", "--for=jsonpath={.status.phase}=Failed", "meteor/will-fail", "--timeout=30s")
        #expect(failed.status == 0, "\(failed.output)")
        #expect(
            try await k.ok("get", "meteor", "will-fail", "-o", "jsonpath={.status.conditions[?(@.type==\"JupyterBook\")].message}").contains(
                "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 2"))

        let apps = try await k.ok("get", "applications", "-n", "argocd", "--no-headers")
        #expect(
            apps.split(separator: "\n").count == 2 && apps.split(separator: "\n").allSatisfy { $0.contains("Synced") && $0.contains("Healthy") },
            "\(apps)")
        let images = try await k.ok("get", "meteor", "donkeycar", "-o", "jsonpath={.status.images[*].verified}")
        #expect(images == "true true")
        #expect(sandbox.text.contains("meteor default/donkeycar: Building → Ready"))

        // Every metric the Grafana dashboard queries is exported.
        let metricsURL = String(try await sandbox.line(containing: "metrics: http").dropFirst("metrics: ".count))
        let scrape = try await runProcess("/usr/bin/curl", ["-sf", metricsURL])
        #expect(scrape.status == 0)
        for name in try DashboardTests.queriedMetrics() {
            #expect(scrape.output.contains("# TYPE \(name) "), "the dashboard queries \(name), which the operator does not export")
        }
        #expect(scrape.output.contains(#"meteor_signature_verifications_total{result="verified"} 2"#))
        let readme = try String(contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("README.md"), encoding: .utf8)
        for line in scrape.output.split(separator: "\n") where line.hasPrefix("# TYPE meteor_") {
            let name = line.split(separator: " ")[2]
            #expect(readme.contains("`\(name)"), "README's metrics table lacks \(name)")
        }

        sandbox.signal(SIGINT)
        let status = await sandbox.wait()
        #expect(status == 0, "\(sandbox.text)")
        #expect(sandbox.text.hasSuffix("sandbox stopped\n"))
    }

    /// The README's walkthrough, as written, with the machine's oldest and newest kubectl and a current one (1.37,
    /// whose `wait` lists by streaming: it hung on the sandbox before the initial-events-end bookmark).
    static let walkthroughKubectls: [String] =
        ["/usr/lib/google-cloud-sdk/bin/kubectl.1.27", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"].filter {
            FileManager.default.isExecutableFile(atPath: $0)
        } + [currentKubectl].compactMap { $0 }

    @Test(arguments: walkthroughKubectls) func theREADMEWalkthroughWorksWithKubectl(_ binary: String) async throws {
        let (sandbox, dir, kubeconfig) = try Self.startSandbox()
        defer { sandbox.terminate() }
        _ = try await sandbox.line(containing: "export KUBECONFIG=")
        let k = Kubectl(binary: binary, kubeconfig: kubeconfig, cacheDir: dir.appendingPathComponent("cache").path)
        let samples = TestCluster.repositoryDirectory.appendingPathComponent("config/samples").path
        #expect(try await k.ok("apply", "-k", samples).contains("meteor.meteor.zone/donkeycar created"))
        let waited = try await k.run("wait", "--for=condition=Ready", "meteors", "--all", "--timeout=60s")
        #expect(waited.status == 0, "kubectl wait: \(waited.output)")
        #expect(waited.output.split(separator: "\n").count == 4, "\(waited.output)")
        let wide = try await k.ok("get", "meteors", "-o", "wide")
        #expect(
            wide.split(separator: "\n").first?.split(separator: " ", omittingEmptySubsequences: true).prefix(5) == [
                "NAME", "PHASE", "URL", "READY", "RELEASE",
            ], "\(wide)")
        #expect(wide.split(separator: "\n").dropFirst().allSatisfy { $0.contains(" Ready ") }, "\(wide)")
        let described = try await k.ok("describe", "meteor", "donkeycar")
        for reason in ["PipelineRunCreated", "ImageVerified", "ApplicationCreated"] {
            #expect(described.contains(reason), "describe lacks \(reason)")
        }
        #expect(try await k.ok("explain", "meteor.spec").contains("url"))
        // The CustomRuntimeEnvironment is documented where kubectl users look (the CRD's descriptions).
        let explained = try await k.ok("explain", "customruntimeenvironment.spec.buildType")
        #expect(explained.contains("PackageList") && explained.contains("pip-compile"), "\(explained)")
        #expect(try await k.ok("explain", "cre.status").contains("pinned by digest"))
        _ = try await k.ok("get", "pipelineruns,applications", "-A")
        _ = try await k.ok("delete", "-k", samples, "--wait=true", "--timeout=60s")
        #expect(try await k.run("get", "meteors").output.contains("No resources found"))
        sandbox.signal(SIGINT)
        #expect(await sandbox.wait() == 0, "\(sandbox.text)")
    }

    /// The README's fleet walkthrough: the fleet sample goes to the two simulated twins, soaks, passes its gate and
    /// reaches the car; a new release tag with a twin made to turn Degraded rolls the twins back, and the car keeps
    /// the first release.
    @Test(.enabled(if: kubectl != nil, "no kubectl on this machine"))
    func theFleetRollsOutTwinThenCarAndADegradedTwinRollsBack() async throws {
        let (sandbox, dir, kubeconfig) = try Self.startSandbox()
        defer { sandbox.terminate() }
        _ = try await sandbox.line(containing: "export KUBECONFIG=")
        let publish = try await sandbox.line(containing: "publish a release on every git remote: curl -X POST ")
        let tagURL = String(publish.split(separator: " ").last!).replacingOccurrences(of: "v1.1.0", with: "v1.2.0")
        let k = Kubectl(binary: kubectl!, kubeconfig: kubeconfig, cacheDir: dir.appendingPathComponent("cache").path)
        let fleet = TestCluster.repositoryDirectory.appendingPathComponent("config/samples/fleet").path
        #expect(try await k.ok("apply", "-k", fleet).contains("meteor.meteor.zone/donkeycar-fleet created"))
        for stage in ["twin", "car"] {
            let waited = try await k.run("wait", "--for=jsonpath={.status.rollout.stage}=\(stage)", "meteor/donkeycar-fleet", "--timeout=60s")
            #expect(waited.status == 0, "stage \(stage): \(waited.output)\n--- sandbox:\n\(sandbox.text.suffix(3000))")
        }
        let ready = try await k.run("wait", "--for=condition=Ready", "meteor/donkeycar-fleet", "--timeout=60s")
        #expect(ready.status == 0, "\(ready.output)")
        let apps = { (target: String) async throws -> [String] in
            try await k.ok(
                "get", "applications", "-n", "argocd", "-l", "meteor.zone/target=\(target)", "-o",
                "jsonpath={range .items[*]}{.spec.destination.name}={.metadata.annotations.meteor\\.zone/image}{\"\\n\"}{end}"
            ).split(separator: "\n").map(String.init).sorted()
        }
        let twinsV1 = try await apps("twins"), carsV1 = try await apps("cars")
        #expect(
            twinsV1.map { $0.split(separator: "=")[0] }.sorted() == ["microshift-nuc", "microshift-nuc-2"]
                && carsV1.map { $0.split(separator: "=")[0] } == ["microshift-rpi"], "\(twinsV1) \(carsV1)")
        #expect(try await k.ok("get", "meteor", "donkeycar-fleet", "-o", "wide").contains("v1.0.0"))

        // A bad release: one twin will turn Degraded on it.
        _ = try await k.ok("annotate", "meteor", "donkeycar-fleet", "sandbox.meteor.zone/degrade=microshift-nuc-2")
        #expect(try await runProcess("/usr/bin/curl", ["-sf", "-X", "POST", tagURL]).status == 0)
        let halted = try await k.run("wait", "--for=jsonpath={.status.rollout.halted.reason}=Degraded", "meteor/donkeycar-fleet", "--timeout=90s")
        #expect(halted.status == 0, "\(halted.output)\n--- sandbox:\n\(sandbox.text.suffix(3000))")
        #expect(
            try await k.ok("get", "meteor", "donkeycar-fleet", "-o", "jsonpath={.status.conditions[?(@.type==\"Deployed\")].reason}") == "RolledBack")
        // Back on the first release's images (Argo's sync of the rollback), and the car never moved.
        let back = try await k.run(
            "wait", "-n", "argocd", "--for=jsonpath={.metadata.annotations.meteor\\.zone/image}=\(twinsV1[1].split(separator: "=")[1])",
            "application", "-l", "meteor.zone/target=twins", "--timeout=60s")
        #expect(back.status == 0, "\(back.output)")
        #expect(try await apps("cars") == carsV1)
        let events = try await k.ok(
            "get", "events", "--field-selector", "involvedObject.name=donkeycar-fleet", "-o",
            "jsonpath={range .items[*]}{.reason}{\" \"}{.count}{\" \"}{.firstTimestamp}{\" \"}{.message}{\"\\n\"}{end}")
        #expect(
            events.split(separator: "\n").filter { $0.hasPrefix("RolledBack ") && $0.contains("turned Degraded running v1.2.0") }.count == 1,
            "\(events)")
        sandbox.signal(SIGINT)
        #expect(await sandbox.wait() == 0)
    }

    @Test func theTableShowsPhasePipelinesAndDeployments() throws {
        let created = KubeTime.format(Date(timeIntervalSince1970: 1000))
        let meteor: JSONValue = [
            "metadata": ["name": "donkeycar", "namespace": "default", "creationTimestamp": .string(created)],
            "status": [
                "phase": "Building",
                "images": [["name": "car", "verified": true], ["name": "twin", "verified": false, "reason": "SignatureMissing"]],
                "deployments": [["target": "rpi", "syncStatus": "Synced", "healthStatus": "Healthy"]],
            ],
        ]
        let table = StatusView.render([meteor], now: Date(timeIntervalSince1970: 1000 + 300))
        let lines = table.split(separator: "\n")
        #expect(lines[0].split(separator: " ", omittingEmptySubsequences: true) == ["NAMESPACE", "NAME", "PHASE", "PIPELINES", "DEPLOYMENTS", "AGE"])
        #expect(lines[1].contains("car:verified twin:SignatureMissing") && lines[1].contains("rpi:Synced/Healthy") && lines[1].hasSuffix("5m"))
        var fleet = meteor
        fleet[path: "status", "targets"] = [
            ["name": "twins", "clusterSelector": "role=twin", "desired": 3, "synced": 3, "healthy": 2, "degraded": 1],
            ["name": "rpi", "desired": 1, "synced": 1, "healthy": 1, "degraded": 0],
        ]
        fleet[path: "status", "rollout"] = ["stage": "twin", "halted": ["stage": "twin", "reason": "Degraded", "message": "nuc-2 turned Degraded"]]
        let row = StatusView.render([fleet], now: Date(timeIntervalSince1970: 1300)).split(separator: "\n")[1]
        #expect(row.contains("rpi:Synced/Healthy [twins: 2/3 healthy, 1 degraded] rollout: rolled back at twin (Degraded)"), "\(row)")
    }
}

@Suite struct DashboardTests {
    static let dashboard = TestCluster.repositoryDirectory.appendingPathComponent("manifests/monitoring/grafana-dashboard.json")

    /// Metric names (histograms without their _bucket/_count/_sum suffix) in the dashboard's queries.
    static func queriedMetrics() throws -> Set<String> {
        let json = try JSONValue.parse(Array(try Data(contentsOf: dashboard)))
        var names = Set<String>()
        for panel in json["panels"]?.arrayValue ?? [] {
            for target in panel["targets"]?.arrayValue ?? [] {
                let expr = target["expr"]?.stringValue ?? ""
                let regex = try Regex(#"\b(controller_runtime|workqueue|rest_client|leader_election|meteor)_[a-z_]+"#)
                for match in expr.matches(of: regex) {
                    var name = String(expr[match.range])
                    for suffix in ["_bucket", "_count", "_sum"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
                    names.insert(name)
                }
            }
        }
        return names
    }

    @Test func theDashboardIsWhatItsGeneratorWritesAndCoversTheIssueList() async throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("dashboard-\(UUID().uuidString).json")
        let r = try await runProcess(
            "/usr/bin/env", ["python3", TestCluster.repositoryDirectory.appendingPathComponent("hack/dashboard.py").path, out.path])
        #expect(r.status == 0, "\(r.output)")
        #expect(
            try Data(contentsOf: out) == Data(contentsOf: Self.dashboard),
            "manifests/monitoring/grafana-dashboard.json was edited by hand: run hack/dashboard.py")
        let names = try Self.queriedMetrics()
        for wanted in [
            "controller_runtime_reconcile_total", "controller_runtime_reconcile_errors_total", "controller_runtime_reconcile_time_seconds",
            "workqueue_depth",
            "meteor_meteors", "meteor_pipeline_runs_total", "meteor_signature_verifications_total", "meteor_edge_deployments",
            "meteor_time_to_ready_seconds",
        ] {
            #expect(names.contains(wanted), "\(wanted)")
        }
    }
}
