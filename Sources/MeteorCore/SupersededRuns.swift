import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// Runs of an earlier generation or release: kept a while (cancelled if still running), then pruned.
extension MeteorReconciler {
    /// Superseded runs (owned by this Meteor, not in `keep`; one shared with others is let go of, `releaseShared`): per pipeline, the newest `keepSupersededRuns` are
    /// kept (cancelled if still running: their results would describe a spec or release no longer wanted) and
    /// the rest are deleted, running or not, with their workspaces (Tekton's TaskRuns and the PVC are the run's
    /// children). Deleting rather than cancelling the older ones keeps a Meteor changed many times at a bounded
    /// number of runs even while Tekton is slow to cancel. Edge runs are cancelled, never deleted: the release
    /// they built may still be the one deployed (its verification reads them).
    func retireSuperseded(_ meteor: Meteor, keep: Set<String>) async throws {
        try await retireSuperseded(uid: meteor.metadata.uid, namespace: meteor.namespace, keep: keep)
    }

    /// `retireSuperseded` for any owner of runs (a Meteor, a CustomRuntimeEnvironment), by its uid and namespace.
    func retireSuperseded(uid: String?, namespace: String?, keep: Set<String>) async throws {
        guard let uid else { return }
        var superseded: [String: [(created: String, name: String, run: JSONValue)]] = [:]
        var toCancel: [(name: String, run: JSONValue)] = []
        // The store's owner index: the runs this Meteor (this uid, not an earlier one of its name) controls.
        for run in pipelineRuns.store.owned(by: uid) {
            guard let name = run[path: "metadata", "name"]?.stringValue, !keep.contains(name),
                run[path: "metadata", "namespace"]?.stringValue == namespace, run[path: "metadata", "deletionTimestamp"] == nil
            else { continue }
            // A build others share is theirs to keep: this Meteor only lets go of it.
            if try await releaseShared(run, uid: uid) { continue }
            let labels = run[path: "metadata", "labels"]
            if labels?[MeteorLabels.edgeImage] != nil || labels?[MeteorLabels.gate] != nil {
                toCancel.append((name, run))
            } else {
                superseded[labels?[MeteorLabels.pipeline]?.stringValue ?? "", default: []].append(
                    (run[path: "metadata", "creationTimestamp"]?.stringValue ?? "", name, run))
            }
        }
        var toDelete: [String] = []
        for (_, members) in superseded {
            // Newest first (RFC 3339 in UTC sorts as text; the name breaks ties within a second).
            let newestFirst = members.sorted { ($0.created, $0.name) > ($1.created, $1.name) }
            let kept = max(0, configuration.keepSupersededRuns)
            toCancel += newestFirst.prefix(kept).map { ($0.name, $0.run) }
            toDelete += newestFirst.dropFirst(kept).map(\.name)
        }
        for old in toCancel where PipelineRunState(old.run).outcome == .running && old.run[path: "spec", "status"]?.stringValue != "Cancelled" {
            _ = try await ignoreNotFound {
                try await cache.patch(
                    ObjectKey(namespace: namespace, name: old.name), PipelineRunBuilder.resourceType, .merge(["spec": ["status": "Cancelled"]])
                )
            }
        }
        for old in toDelete {
            let key = ObjectKey(namespace: namespace, name: old)
            if try await ignoreNotFound({ try await cache.delete(key, PipelineRunBuilder.resourceType, DeleteParams(propagationPolicy: .background)) }
            ) != nil {
                logger.info("pruned a superseded PipelineRun", metadata: ["object": "\(key)"])
            }
        }
    }
}
