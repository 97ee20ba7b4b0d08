import Crypto
import Foundation
import KubeModels
import KubeRuntime

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
    /// `$(params.url)` bound to environment variables, never spliced into script text. `name` and `commit` for a
    /// shared build at a resolved commit (`SharedBuild`); nil: the generation's run of `spec.ref`.
    public static func build(
        meteor: Meteor, owner: JSONValue, pipeline: Pipeline, settings: BuildSettings, name: String? = nil, commit: String? = nil
    ) -> JSONValue {
        let generation = meteor.metadata.generation ?? 1
        let ref = commit ?? meteor.spec.ref
        let image = commit.map {
            "\(settings.imageRepositoryPrefix)/\(meteor.namespace ?? "default")/\(meteor.name)-\(pipeline.rawValue):\($0.prefix(12))"
        }
        var run = run(
            name: name ?? self.name(meteor: meteor.name, pipeline: pipeline, generation: generation), meteor: meteor, owner: owner,
            pipeline: pipeline,
            ref: meteor.spec.ref,
            params: params(
                meteor: meteor, pipeline: pipeline, ref: ref, image: image ?? self.image(meteor: meteor, pipeline: pipeline, settings: settings)),
            extraLabels: [:], settings: settings)
        if let commit { run[path: "metadata", "annotations", "meteor.zone/commit"] = .string(commit) }
        return run
    }

    /// A Meteor pipeline's params: the repository, the ref (or commit) to build, where to push, and what the
    /// pipeline needs besides (the book's site, the notebook's overlay).
    static func params(meteor: Meteor, pipeline: Pipeline, ref: String, image: String) -> [JSONValue] {
        var params: [JSONValue] = [
            ["name": "url", "value": .string(meteor.spec.url)],
            ["name": "ref", "value": .string(ref)],
            ["name": "image", "value": .string(image)],
        ]
        if pipeline == .jupyterbook {
            params.append(["name": "site-name", "value": .string(meteor.name)])
            params.append(["name": "site-url", "value": .string(BookSite.url(meteor: meteor))])
        }
        if pipeline == .jupyterhub, let overlay = meteor.spec.overlay {
            params.append(["name": "overlay", "value": .string(overlay)])
        }
        return params
    }

    /// The parts every Meteor PipelineRun shares: labels, owner, workspace, service account, timeout.
    static func run(
        name: String, meteor: Meteor, owner: JSONValue, pipeline: Pipeline, ref: String, params: [JSONValue], extraLabels: JSONObject,
        settings: BuildSettings
    ) -> JSONValue {
        var labels: JSONObject = [
            MeteorLabels.meteor: .string(meteor.name),
            MeteorLabels.pipeline: .string(pipeline.rawValue),
            MeteorLabels.generation: .string(String(meteor.metadata.generation ?? 1)),
        ]
        labels.merge(extraLabels) { $1 }
        return run(
            name: name, namespace: meteor.namespace ?? "default", owner: owner, pipelineRef: pipeline.tektonPipeline, params: params,
            labels: labels, annotations: ["meteor.zone/url": .string(meteor.spec.url), "meteor.zone/ref": .string(ref)],
            gitSecret: meteor.spec.gitSecretRef?.name, settings: settings)
    }

    /// Any PipelineRun the operator makes: its labels (with the operator's own), its controller owner, the `source`
    /// workspace (a fresh volume; left out with `source: false`), the `dockerconfig` workspace (`dockerconfig`, else
    /// the push Secret), the `git-credentials` workspace, the service account, the timeout.
    static func run(
        name: String, namespace: String, owner: JSONValue, pipelineRef: String, params: [JSONValue], labels: JSONObject, annotations: JSONObject,
        gitSecret: String?, settings: BuildSettings, source: Bool = true, dockerconfig: String? = nil, imagePullSecret: String? = nil
    ) -> JSONValue {
        var labels = labels
        labels[MeteorLabels.managedBy] = .string(MeteorLabels.managedByValue)
        labels["app.kubernetes.io/part-of"] = "meteor"
        var metadata: JSONObject = [
            "name": .string(name), "namespace": .string(namespace), "labels": .object(labels), "annotations": .object(annotations),
        ]
        if let ref = ObjectHelpers.controllerReference(to: owner) { metadata["ownerReferences"] = [ref] }
        var workspaces: [JSONValue] = []
        if source {
            workspaces.append([
                "name": "source",
                "volumeClaimTemplate": [
                    "spec": ["accessModes": ["ReadWriteOnce"], "resources": ["requests": ["storage": .string(settings.workspaceSize)]]]
                ],
            ])
        }
        if let secret = dockerconfig ?? settings.pushSecret {
            workspaces.append([
                "name": "dockerconfig", "secret": ["secretName": .string(secret), "items": [["key": ".dockerconfigjson", "path": "config.json"]]],
            ])
        }
        if let gitSecret { workspaces.append(["name": "git-credentials", "secret": ["secretName": .string(gitSecret)]]) }
        var template = settings.taskRunTemplate
        if let imagePullSecret { template[path: "podTemplate", "imagePullSecrets"] = [["name": .string(imagePullSecret)]] }
        return [
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": .object(metadata),
            "spec": [
                "pipelineRef": ["name": .string(pipelineRef)],
                "params": .array(params),
                "workspaces": .array(workspaces),
                "taskRunTemplate": template,
                "timeouts": ["pipeline": .string(settings.pipelineTimeout)],
            ],
        ]
    }
}

extension PipelineRunBuilder {
    /// The PipelineRun informer's transform (`trimmedForCache`).
    public static let cacheTransform = CacheTransform("meteor.trimmedPipelineRun", trimmedForCache)

    /// What the operator's cache keeps of a PipelineRun: identity, labels and owners, `spec.status` (cancellation)
    /// and the status fields `PipelineRunState` reads. Tekton's own status (`pipelineSpec`, `childReferences`,
    /// provenance) and the run's params and workspaces are dropped: the reconciler never reads them, and with
    /// thousands of runs cached they are most of the memory.
    public static func trimmedForCache(_ run: JSONValue) -> JSONValue {
        var metadata: JSONObject = [:]
        for key in [
            "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "labels", "ownerReferences",
            "finalizers",
        ] {
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
