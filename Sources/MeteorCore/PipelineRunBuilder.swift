import Crypto
import Foundation
import KubeModels
import KubeRuntime

/// Where builds push and which identity they run as.
public struct BuildSettings: Sendable {
    /// Registry and namespace images are pushed to, e.g. `image-registry.openshift-image-registry.svc:5000/meteor`.
    public var imageRepositoryPrefix: String
    /// The ServiceAccount runs use; nil: `pipeline` where OpenShift Pipelines made one, else `default`
    /// (`BuildPrerequisites` resolves it per namespace).
    public var serviceAccount: String?
    /// A `kubernetes.io/dockerconfigjson` Secret in the Meteor's namespace that buildah pushes with (the
    /// `dockerconfig` workspace); nil: the ServiceAccount's own credentials (OpenShift's internal registry).
    public var pushSecret: String?
    public var pipelineTimeout: String
    public var workspaceSize: String
    /// The UID (and GID and fsGroup) every step runs as, so the workspace one step writes the next can use
    /// (Tekton's catalog uses 65532); nil leaves it to the images and the cluster (OpenShift's SCCs assign one).
    public var runAsUser: Int64?

    public init(imageRepositoryPrefix: String = "image-registry.openshift-image-registry.svc:5000", serviceAccount: String? = nil, pushSecret: String? = nil, pipelineTimeout: String = "1h0m0s", workspaceSize: String = "1Gi", runAsUser: Int64? = 65532) {
        self.imageRepositoryPrefix = imageRepositoryPrefix
        self.serviceAccount = serviceAccount
        self.pushSecret = pushSecret
        self.pipelineTimeout = pipelineTimeout
        self.workspaceSize = workspaceSize
        self.runAsUser = runAsUser
    }

    /// `spec.taskRunTemplate` of every run: the ServiceAccount, and the Pod's securityContext when a UID is set.
    var taskRunTemplate: JSONValue {
        var template: JSONObject = ["serviceAccountName": .string(serviceAccount ?? "default")]
        if let uid = runAsUser {
            template["podTemplate"] = ["securityContext": ["runAsUser": .int(uid), "runAsGroup": .int(uid), "fsGroup": .int(uid)]]
        }
        return .object(template)
    }
}

/// Builds the `tekton.dev/v1` PipelineRun for one pipeline of one Meteor generation.
public enum PipelineRunBuilder {
    public static let resourceType = ResourceType(group: "tekton.dev", version: "v1", kind: "PipelineRun", plural: "pipelineruns", namespaced: true)

    /// Deterministic per Meteor generation and pipeline, so a restart mid-reconcile finds the run it already
    /// created instead of starting a second build. At most 63 characters (Tekton copies it into pod labels).
    public static func name(meteor: String, pipeline: Pipeline, generation: Int64) -> String {
        boundedName(meteor, suffix: "-\(pipeline.shortName)-g\(generation)")
    }

    /// `base + suffix`, shortened to 63 characters by cutting `base` and adding a hash of it, so distinct bases
    /// stay distinct.
    public static func boundedName(_ base: String, suffix: String, limit: Int = 63) -> String {
        let full = base + suffix
        if full.utf8.count <= limit { return full }
        let digest = SHA256.hash(data: Data(base.utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
        var prefix = String(base.prefix(max(1, limit - suffix.utf8.count - 9)))
        while prefix.hasSuffix("-") || prefix.hasSuffix(".") { prefix.removeLast() }
        return String("\(prefix)-\(digest)\(suffix)".prefix(limit))
    }

    /// The image a pipeline pushes for a Meteor.
    public static func image(meteor: Meteor, pipeline: Pipeline, settings: BuildSettings) -> String {
        "\(settings.imageRepositoryPrefix)/\(meteor.namespace ?? "default")/\(meteor.name)-\(pipeline.rawValue):g\(meteor.metadata.generation ?? 1)"
    }

    /// The PipelineRun. `url` and `ref` travel as params only; the Pipeline's tasks read them as
    /// `$(params.url)` bound to environment variables, never spliced into script text.
    public static func build(meteor: Meteor, owner: JSONValue, pipeline: Pipeline, settings: BuildSettings) -> JSONValue {
        let generation = meteor.metadata.generation ?? 1
        var params: [JSONValue] = [
            ["name": "url", "value": .string(meteor.spec.url)],
            ["name": "ref", "value": .string(meteor.spec.ref)],
            ["name": "image", "value": .string(image(meteor: meteor, pipeline: pipeline, settings: settings))],
        ]
        if pipeline == .jupyterbook {
            params.append(["name": "site-name", "value": .string(meteor.name)])
            params.append(["name": "site-url", "value": .string(BookSite.url(meteor: meteor))])
        }
        if pipeline == .jupyterhub, let overlay = meteor.spec.overlay {
            params.append(["name": "overlay", "value": .string(overlay)])
        }
        return run(name: name(meteor: meteor.name, pipeline: pipeline, generation: generation), meteor: meteor, owner: owner, pipeline: pipeline, ref: meteor.spec.ref, params: params, extraLabels: [:], settings: settings)
    }

    /// The parts every Meteor PipelineRun shares: labels, owner, workspace, service account, timeout.
    static func run(name: String, meteor: Meteor, owner: JSONValue, pipeline: Pipeline, ref: String, params: [JSONValue], extraLabels: JSONObject, settings: BuildSettings) -> JSONValue {
        var labels: JSONObject = [
            MeteorLabels.meteor: .string(meteor.name),
            MeteorLabels.pipeline: .string(pipeline.rawValue),
            MeteorLabels.generation: .string(String(meteor.metadata.generation ?? 1)),
            MeteorLabels.managedBy: .string(MeteorLabels.managedByValue),
            "app.kubernetes.io/part-of": "meteor",
        ]
        labels.merge(extraLabels) { $1 }
        var metadata: JSONObject = [
            "name": .string(name),
            "namespace": .string(meteor.namespace ?? "default"),
            "labels": .object(labels),
            "annotations": ["meteor.zone/url": .string(meteor.spec.url), "meteor.zone/ref": .string(ref)],
        ]
        if let ref = ObjectHelpers.controllerReference(to: owner) { metadata["ownerReferences"] = [ref] }
        return [
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": .object(metadata),
            "spec": [
                "pipelineRef": ["name": .string(pipeline.tektonPipeline)],
                "params": .array(params),
                "workspaces": .array([[
                    "name": "source",
                    "volumeClaimTemplate": ["spec": ["accessModes": ["ReadWriteOnce"], "resources": ["requests": ["storage": .string(settings.workspaceSize)]]]],
                ]] + (settings.pushSecret.map { [["name": "dockerconfig", "secret": ["secretName": .string($0), "items": [["key": ".dockerconfigjson", "path": "config.json"]]]]] } ?? [])
                    + (meteor.spec.gitSecretRef.map { [["name": "git-credentials", "secret": ["secretName": .string($0.name)]]] } ?? [])),
                "taskRunTemplate": settings.taskRunTemplate,
                "timeouts": ["pipeline": .string(settings.pipelineTimeout)],
            ],
        ]
    }
}

extension PipelineRunBuilder {
    /// What the operator's cache keeps of a PipelineRun: identity, labels and owners, `spec.status` (cancellation)
    /// and the status fields `PipelineRunState` reads. Tekton's own status (`pipelineSpec`, `childReferences`,
    /// provenance) and the run's params and workspaces are dropped: the reconciler never reads them, and with
    /// thousands of runs cached they are most of the memory.
    public static func trimmedForCache(_ run: JSONValue) -> JSONValue {
        var metadata: JSONObject = [:]
        for key in ["name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "labels", "ownerReferences", "finalizers"] {
            if let v = run[path: "metadata", key] { metadata[key] = v }
        }
        var out: JSONObject = ["metadata": .object(metadata)]
        for key in ["apiVersion", "kind"] { if let v = run[key] { out[key] = v } }
        if let cancel = run[path: "spec", "status"] { out["spec"] = ["status": cancel] }
        var status: JSONObject = [:]
        for key in ["conditions", "results", "startTime", "completionTime"] {
            if let v = run[path: "status", key] { status[key] = v }
        }
        if run["status"] != nil { out["status"] = .object(status) }
        return .object(out)
    }
}

/// What a PipelineRun's status says, in Tekton's terms.
public struct PipelineRunState: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable { case running, succeeded, failed }
    public var outcome: Outcome
    public var reason: String
    public var message: String
    public var results: [String: String]
    /// A failed run's own reasons (its non-empty `…_FAILURE` results), nil when it gave none.
    public var failure: String?
    public var startTime: Date?
    public var completionTime: Date?

    /// Pipeline results named `…_FAILURE` carry a failed Task's one-line reason (`manifests/tekton`: the Tasks
    /// record it in a result and fail in a later step, since a failing step reports no results).
    public static let failureResultSuffix = "_FAILURE"

    /// Reads `status.conditions[type=Succeeded]` (Unknown/True/False), `status.results` and the times; a failed
    /// run's message leads with the reasons its `…_FAILURE` results give.
    public init(_ run: JSONValue) {
        let succeeded = (run[path: "status", "conditions"]?.arrayValue ?? []).first { $0["type"] == "Succeeded" }
        switch succeeded?["status"]?.stringValue {
        case "True": outcome = .succeeded
        case "False": outcome = .failed
        default: outcome = .running
        }
        reason = succeeded?["reason"]?.stringValue ?? (run["status"] == nil ? "Pending" : "Running")
        message = succeeded?["message"]?.stringValue ?? ""
        var results: [String: String] = [:]
        var reasons: [String] = []
        for r in run[path: "status", "results"]?.arrayValue ?? [] {
            guard let n = r["name"]?.stringValue else { continue }
            let value = r["value"]?.stringValue ?? r["value"].map { $0.serializedString() }
            results[n] = value
            if n.hasSuffix(Self.failureResultSuffix), let value, !value.isEmpty { reasons.append(value) }
        }
        self.results = results
        // A failed build says why in its own words (Tekton's message only counts the failed tasks).
        if outcome == .failed, !reasons.isEmpty {
            failure = reasons.joined(separator: "; ")
            message = failure! + " (\(message.isEmpty ? reason : message))"
        }
        startTime = run[path: "status", "startTime"]?.stringValue.flatMap(KubeTime.parse)
        completionTime = run[path: "status", "completionTime"]?.stringValue.flatMap(KubeTime.parse)
    }

    /// Whether `text` is an image digest the operator pins to: `sha256:` and 64 lower-case hex digits.
    public static func isDigest(_ text: String) -> Bool {
        text.range(of: #"\Asha256:[0-9a-f]{64}\z"#, options: .regularExpression) != nil
    }

    /// A run that succeeded without an `IMAGE_DIGEST` the operator can pin to is a failed build: deploying
    /// `image@<whatever it said>` would fail later, and further from the cause.
    public func requiringDigest(runName: String) -> PipelineRunState {
        guard outcome == .succeeded, !(results["IMAGE_DIGEST"].map(Self.isDigest) ?? false) else { return self }
        var s = self
        s.outcome = .failed
        s.reason = "BuildResultMissing"
        s.message = Self.missingDigestMessage(runName)
        return s
    }

    public static func missingDigestMessage(_ runName: String) -> String {
        "PipelineRun \(runName) succeeded without an IMAGE_DIGEST result of the form sha256:<64 hex digits>"
    }
}
