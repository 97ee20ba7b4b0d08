import Crypto
import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore

/// SANDBOX SIMULATOR standing in for Tekton's controller: it runs nothing, it only moves each PipelineRun through
/// Running to Succeeded (or Failed) after a delay and writes realistic results. Edge runs push an image to the
/// sandbox registry and sign it with the sandbox key, so the operator's verification is real.
///
/// On the owning Meteor, `sandbox.meteor.zone/fail: jupyterbook,car,gate` fails the named pipelines, edge images or
/// rollout gates,
/// `sandbox.meteor.zone/hold: "true"` keeps its runs Running until cancelled or timed out (`spec.timeouts.pipeline`,
/// reported as Tekton does: `PipelineRunTimeout`), and
/// `sandbox.meteor.zone/signature: missing|invalid` leaves edge images unsigned or signed with a stranger's key.
/// `sandbox.meteor.zone/image-failure: <why>` fails every run at its image task with that reason, as the buildah
/// Task reports one (its `FAILURE` result, the Pipeline's `IMAGE_FAILURE`).
public final class TektonSimulator: Sendable {
    public static let failAnnotation = "sandbox.meteor.zone/fail"
    public static let imageFailureAnnotation = "sandbox.meteor.zone/image-failure"
    public static let signatureAnnotation = "sandbox.meteor.zone/signature"
    /// `sandbox.meteor.zone/hold: "true"` keeps the Meteor's runs Running until cancelled (a long build).
    public static let holdAnnotation = "sandbox.meteor.zone/hold"

    /// The pipeline tasks of each Pipeline in `manifests/tekton`, in order (a test holds this to the manifests):
    /// real Tekton's condition messages count them.
    public static let pipelineTasks: [Pipeline: [String]] = [
        .jupyterbook: ["clone", "book", "containerfile", "image"],
        .jupyterhub: ["clone", "containerfile", "image"],
        .edge: ["clone", "image", "sign"],
    ]

    /// Each Pipeline's `…_FAILURE` results and the pipeline task whose `FAILURE` result each one is (a test holds
    /// this to the manifests): "" when that task succeeded, absent when it never ran.
    public static let failureResults: [Pipeline: [(result: String, task: String)]] = [
        .jupyterbook: [("CONTAINERFILE_FAILURE", "containerfile"), ("IMAGE_FAILURE", "image")],
        .jupyterhub: [("CONTAINERFILE_FAILURE", "containerfile"), ("IMAGE_FAILURE", "image")],
        .edge: [("IMAGE_FAILURE", "image")],
    ]

    /// The Task whose failure fails a pipeline alone (it is used by no other Pipeline); a requested failure fails
    /// the pipeline at that task, the rest skipped, as Tekton reports it.
    public static let failingTask: [Pipeline: String] = [.jupyterbook: "meteor-jupyter-book"]

    /// Real Tekton's words for a PipelineRun's progress (PipelineRunStatus's reason messages).
    public static func tasksMessage(completed: Int, failed: Int = 0, cancelled: Int = 0, incomplete: Int? = nil, skipped: Int = 0) -> String {
        if let incomplete {
            return "Tasks Completed: \(completed) (Failed: \(failed), Cancelled \(cancelled)), Incomplete: \(incomplete), Skipped: \(skipped)"
        }
        return "Tasks Completed: \(completed) (Failed: \(failed), Cancelled \(cancelled)), Skipped: \(skipped)"
    }

    let client: KubeClient
    let runs: DynamicInformer
    let meteors: DynamicInformer
    let remotes: SandboxRemotes?
    let signer: CosignSigner
    let duration: Duration
    let logger: Logger

    public init(
        client: KubeClient, runs: DynamicInformer, meteors: DynamicInformer, remotes: SandboxRemotes?, signer: CosignSigner, duration: Duration,
        logger: Logger
    ) {
        self.client = client
        self.runs = runs
        self.meteors = meteors
        self.remotes = remotes
        self.signer = signer
        self.duration = duration
        self.logger = logger
    }

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileAction {
        guard let run = runs.store.get(key), run[path: "status", "completionTime"] == nil, run[path: "metadata", "deletionTimestamp"] == nil else {
            return .done
        }
        let api = client.dynamic(PipelineRunBuilder.resourceType, namespace: key.namespace)
        let now = Date()
        if let requested = run[path: "spec", "status"]?.stringValue, requested.hasPrefix("Cancelled") {
            try await write(
                api, key.name,
                Self.finished(now: now, succeeded: false, reason: "Cancelled", message: "PipelineRun \"\(key.name)\" was cancelled", results: [:]))
            return .done
        }
        let labels = run[path: "metadata", "labels"]
        let pipelineName = labels?[MeteorLabels.pipeline]?.stringValue ?? ""
        let gate = labels?[MeteorLabels.gate]?.stringValue
        // A rollout gate runs the sample gate Pipeline (manifests/tekton/samples): one check task.
        let tasks = gate != nil ? ["check"] : Pipeline(rawValue: pipelineName).flatMap { Self.pipelineTasks[$0] } ?? ["build"]
        guard let started = run[path: "status", "startTime"]?.stringValue.flatMap(KubeTime.parse) else {
            let status: JSONValue = [
                "startTime": .string(KubeTime.format(now)),
                "conditions": [
                    [
                        "type": "Succeeded", "status": "Unknown", "reason": "Running",
                        "message": .string(Self.tasksMessage(completed: 0, incomplete: tasks.count)),
                        "lastTransitionTime": .string(KubeTime.format(now)),
                    ]
                ],
            ]
            try await write(api, key.name, status)
            return .requeueAfter(duration)
        }
        let elapsed = now.timeIntervalSince(started)
        // Tekton's default pipeline timeout is an hour; "0" means none.
        let timeoutText = run[path: "spec", "timeouts", "pipeline"]?.stringValue ?? "1h0m0s"
        let timeout = KubeDuration.parseSeconds(timeoutText).flatMap { $0 > 0 ? $0 : nil }
        if let timeout, elapsed >= timeout {
            try await write(
                api, key.name,
                Self.finished(
                    now: now, succeeded: false, reason: "PipelineRunTimeout",
                    message: "PipelineRun \"\(key.name)\" failed to finish within \"\(timeoutText)\"", results: [:]))
            return .done
        }
        let untilTimeout = timeout.map { $0 - elapsed }
        if meteor(of: run)?[path: "metadata", "annotations", Self.holdAnnotation] == "true" {
            return untilTimeout.map { .requeueAfter(.seconds($0) + .milliseconds(1)) } ?? .done
        }
        let total = duration.seconds
        if elapsed < total { return .requeueAfter(.seconds(min(total, timeout ?? total) - elapsed) + .milliseconds(1)) }

        let owner = meteor(of: run)
        let pipeline = pipelineName
        let edgeImage = labels?[MeteorLabels.edgeImage]?.stringValue
        let failOn = Set(
            (owner?[path: "metadata", "annotations", Self.failAnnotation]?.stringValue ?? "").split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces)
            })
        if failOn.contains(pipeline) || edgeImage.map(failOn.contains) == true {
            // Fails at the first task after the clone; Tekton skips the rest.
            try await write(api, key.name, Self.failed(now: now, tasks: tasks, at: min(1, tasks.count - 1), results: [:]))
            return .done
        }
        if gate != nil {
            if failOn.contains("gate") {
                try await write(api, key.name, Self.failed(now: now, tasks: tasks, at: 0, results: [:]))
                return .done
            }
            let images = (run[path: "spec", "params"]?.arrayValue ?? []).first { $0["name"] == "images" }?["value"]?.stringValue ?? ""
            try await write(
                api, key.name,
                Self.finished(
                    now: now, succeeded: true, reason: "Succeeded", message: Self.tasksMessage(completed: 1),
                    results: ["CHECKED": String(images.split(separator: " ").count)]))
            return .done
        }
        let failures = Pipeline(rawValue: pipeline).flatMap { Self.failureResults[$0] } ?? []
        if let why = owner?[path: "metadata", "annotations", Self.imageFailureAnnotation]?.stringValue, let failedAt = tasks.firstIndex(of: "image") {
            // The buildah Task ran and reported why; what came before it reported no failure, what follows is skipped.
            var results: [String: String] = [:]
            for (result, task) in failures { if let at = tasks.firstIndex(of: task), at <= failedAt { results[result] = at == failedAt ? why : "" } }
            try await write(api, key.name, Self.failed(now: now, tasks: tasks, at: failedAt, results: results))
            return .done
        }
        var params: [String: String] = [:]
        for p in run[path: "spec", "params"]?.arrayValue ?? [] {
            if let n = p["name"]?.stringValue, let v = p["value"]?.stringValue { params[n] = v }
        }
        let image = params["image"] ?? "registry.sandbox/unknown:latest"
        var results: [String: String] = ["IMAGE_URL": image]
        for (result, _) in failures { results[result] = "" }
        if pipeline == Pipeline.edge.rawValue, let remotes {
            let reference = try RegistryClient.Reference(parsing: image)
            let digest = try await remotes.pushImage(
                reference, tag: reference.tag ?? "latest", platform: params["platform"] ?? "linux/amd64",
                content: "\(key.name) \(params["ref"] ?? "")")
            switch owner?[path: "metadata", "annotations", Self.signatureAnnotation]?.stringValue {
            case "missing"?: break
            case "invalid"?: try await remotes.push(try CosignSigner().sign(digest: digest, dockerReference: image), to: reference)
            default: try await remotes.push(try signer.sign(digest: digest, dockerReference: image), to: reference)
            }
            results["IMAGE_DIGEST"] = digest
            // What the clone Task reports: the commit the stand-in remote has for the ref.
            results["COMMIT"] = SandboxRemotes.commit(repositoryURL: params["url"] ?? "", ref: params["ref"] ?? "main")
        } else {
            results["IMAGE_DIGEST"] = SignatureVerifier.digest(Array("\(image) \(run[path: "metadata", "uid"]?.stringValue ?? "")".utf8))
        }
        if pipeline == Pipeline.jupyterbook.rawValue { results["URL"] = params["site-url"] ?? "" }
        try await write(
            api, key.name,
            Self.finished(now: now, succeeded: true, reason: "Succeeded", message: Self.tasksMessage(completed: tasks.count), results: results))
        logger.info("sandbox tekton: PipelineRun succeeded", metadata: ["run": "\(key)", "image": "\(image)"])
        return .done
    }

    func meteor(of run: JSONValue) -> JSONValue? {
        guard let name = run.controllerOwner?.name else { return nil }
        return meteors.store.get(ObjectKey(namespace: run[path: "metadata", "namespace"]?.stringValue, name: name))
    }

    /// Failed at `tasks[at]`, the tasks after it skipped, in Tekton's words.
    static func failed(now: Date, tasks: [String], at failedAt: Int, results: [String: String]) -> JSONValue {
        var status = finished(
            now: now, succeeded: false, reason: "Failed",
            message: tasksMessage(completed: failedAt + 1, failed: 1, skipped: tasks.count - failedAt - 1), results: results)
        let skipped = tasks.dropFirst(failedAt + 1)
        if !skipped.isEmpty { status["skippedTasks"] = .array(skipped.map { ["name": .string($0), "reason": "PipelineRun was stopping"] }) }
        return status
    }

    static func finished(now: Date, succeeded: Bool, reason: String, message: String, results: [String: String]) -> JSONValue {
        var status: JSONObject = [
            "completionTime": .string(KubeTime.format(now)),
            "conditions": [
                [
                    "type": "Succeeded", "status": succeeded ? "True" : "False", "reason": .string(reason), "message": .string(message),
                    "lastTransitionTime": .string(KubeTime.format(now)),
                ]
            ],
        ]
        if !results.isEmpty {
            status["results"] = .array(results.sorted { $0.key < $1.key }.map { ["name": .string($0.key), "value": .string($0.value)] })
        }
        return .object(status)
    }

    func write(_ api: DynamicApi, _ name: String, _ status: JSONValue) async throws {
        do {
            _ = try await api.patchStatus(name, .merge(["status": status]), params: WriteParams(fieldManager: "tekton-pipelines-controller"))
        } catch let e as KubeError where e.isNotFound {}
    }
}
