import Crypto
import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// One build per commit: a PipelineRun whose inputs are a resolved commit is named for what it builds (the
/// Pipeline, its params but the push target, the registry and credentials), so every Meteor and
/// CustomRuntimeEnvironment of a namespace that asks for the same artefact from the same commit finds the same run.
/// The first to ask creates it and controls it; the others add themselves as owners. Kubernetes' garbage collector
/// deletes a run only once all its owners are gone, and an owner that moves on (a new commit, a new spec) lets go of
/// its reference instead of cancelling or deleting a run others still use.
public enum SharedBuild {
    /// `<what>-<commit 7>-<key 10>`: the commit readable in `kubectl get pipelineruns`, the key keeping different
    /// settings apart.
    public static func runName(build: String, commit: String, key: String) -> String {
        "\(build)-\(commit.prefix(7))-\(key.prefix(10))"
    }

    /// The identity of a build: SHA-256 over the Pipeline, the params that decide the artefact (all but `image`, the
    /// push target, which is the first asker's) and the settings that reach the image (registry, push Secret, git
    /// Secret, pull Secret).
    public static func key(pipelineRef: String, params: [JSONValue], settings: BuildSettings, secrets: [String?]) -> String {
        var parts = ["pipeline=\(pipelineRef)", "registry=\(settings.imageRepositoryPrefix)", "push=\(settings.pushSecret ?? "")"]
        parts += secrets.map { "secret=\($0 ?? "")" }
        for p in params.sorted(by: { ($0["name"]?.stringValue ?? "") < ($1["name"]?.stringValue ?? "") }) {
            guard let name = p["name"]?.stringValue, name != "image" else { continue }
            parts.append("\(name)=\(p["value"]?.serializedString() ?? "")")
        }
        return SHA256.hash(data: Data(parts.joined(separator: "\n").utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The other owners of `run` (`Kind/name`), `uid` left out; nil when there are none.
    public static func sharers(of run: JSONValue, except uid: String?) -> [String]? {
        let others = run.ownerReferences.filter { $0.uid != uid }.map { "\($0.kind)/\($0.name)" }.sorted()
        return others.isEmpty ? nil : others
    }

    /// An ownerReference to `owner` that does not claim control (the run's creator controls it).
    static func sharedReference(to owner: JSONValue) -> JSONValue? {
        guard var ref = ObjectHelpers.controllerReference(to: owner) else { return nil }
        ref["controller"] = false
        return ref
    }
}

extension MeteorReconciler {
    /// The shared run `name` for `owner` (`SharedBuild`): the cached one, with `owner` added to its owners when it is
    /// not yet one; else created from `body`. A create that finds the run exists (another asker's, not cached yet)
    /// returns no run: the cache catching up brings the owner back, and it then joins.
    func sharedRun(
        _ name: String, namespace: String?, owner: JSONValue, settings: inout BuildSettings?, newSettings: () async throws -> BuildSettings,
        body: (BuildSettings) throws -> JSONValue
    ) async throws -> (run: JSONValue?, created: Bool) {
        let key = ObjectKey(namespace: namespace, name: name)
        let uid = owner[path: "metadata", "uid"]?.stringValue
        if let run = cache.get(key, from: pipelineRuns), !run.isBeingDeleted {
            if run.ownerReferences.contains(where: { $0.uid == uid }) { return (run, false) }
            guard let ref = SharedBuild.sharedReference(to: owner) else { return (run, false) }
            // With the resourceVersion read: a concurrent change to the owners is a 409, retried from the cache.
            let owners = (run[path: "metadata", "ownerReferences"]?.arrayValue ?? []) + [ref]
            let patched = try await cache.patch(
                key, PipelineRunBuilder.resourceType,
                .merge(["metadata": ["ownerReferences": .array(owners), "resourceVersion": run[path: "metadata", "resourceVersion"] ?? .null]]))
            logger.info("joined a shared build", metadata: ["run": "\(key)", "owner": "\(owner[path: "metadata", "name"]?.stringValue ?? "")"])
            return (patched, false)
        }
        if settings == nil { settings = try await newSettings() }
        let wanted = try body(settings!)
        guard let run = try await ignoreAlreadyExists({ try await cache.create(wanted, PipelineRunBuilder.resourceType) }) else {
            return (nil, false)
        }
        return (run, true)
    }

    /// Lets go of a superseded run others still share: `uid`'s ownerReference removed, the run left to them.
    /// Whether it was shared (and so let go of rather than retired).
    func releaseShared(_ run: JSONValue, uid: String) async throws -> Bool {
        let refs = run[path: "metadata", "ownerReferences"]?.arrayValue ?? []
        let remaining = refs.filter { $0["uid"]?.stringValue != uid }
        guard !remaining.isEmpty, remaining.count < refs.count else { return false }
        _ = try await ignoreNotFound {
            try await cache.patch(
                ObjectKey(run), PipelineRunBuilder.resourceType,
                .merge(["metadata": ["ownerReferences": .array(remaining), "resourceVersion": run[path: "metadata", "resourceVersion"] ?? .null]]))
        }
        logger.info("let go of a shared build", metadata: ["run": "\(ObjectKey(run))"])
        return true
    }
}
