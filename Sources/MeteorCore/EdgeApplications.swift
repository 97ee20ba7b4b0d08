import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// Argo CD Applications: one per placement, created or patched to what it is given, deleted when delivery stops
/// (an untrusted key, an unpinned image) or its placement goes; and what Argo CD reports of them.
extension MeteorReconciler {
    /// Creates the Application, or patches its spec and image annotation when they differ; never touches status.
    func ensureApplication(_ desired: JSONValue, meteor: Meteor, raw: JSONValue, cluster: String) async throws {
        guard let applications else { return }
        let key = ObjectKey(desired)
        guard let current = cache.get(key, from: applications) else {
            if try await ignoreAlreadyExists({ try await cache.create(desired, ArgoApplicationBuilder.resourceType) }) != nil {
                await events.record(
                    raw, type: .normal, reason: .applicationCreated,
                    message:
                        "Created Argo CD Application \(key.namespace ?? "")/\(key.name) deploying \(ApplicationState(desired).pinnedImage ?? "") to \(cluster)"
                )
            }
            return
        }
        // Being removed (delivery stopped, Argo CD taking its resources off the device): created again once gone.
        if current[path: "metadata", "deletionTimestamp"] != nil { return }
        guard current[path: "metadata", "labels", MeteorLabels.meteorUID] == desired[path: "metadata", "labels", MeteorLabels.meteorUID] else {
            await events.record(
                raw, type: .warning, reason: .applicationConflict,
                message: "Application \(key.name) exists and belongs to another Meteor; not touching it")
            return
        }
        let desiredSpec = desired["spec"] ?? .object([:])
        let image = desired[path: "metadata", "annotations", "meteor.zone/image"]
        if MergePatch.apply(desiredSpec, to: current["spec"] ?? .object([:])) != current["spec"]
            || current[path: "metadata", "annotations", "meteor.zone/image"] != image
        {
            try await cache.patch(
                key, ArgoApplicationBuilder.resourceType,
                .merge(["metadata": ["annotations": ["meteor.zone/image": image ?? .null]], "spec": desiredSpec]))
            let before = ApplicationState(current)
            await events.record(
                raw, type: .normal, reason: .applicationUpdated,
                message: "Application \(key.name) now deploys \(image?.stringValue ?? "") (was \(before.pinnedImage ?? "nothing")) to \(cluster)")
        }
    }

    /// Deletes the Applications not about to be given a trusted image (`keep`, by name) whose deployed image was
    /// verified with a key the policies no longer trust for that cluster (rotated out, revoked, narrowed), or that
    /// record no key: what runs on the device is presumed compromised, and Argo CD removes it (the Application's
    /// resources finalizer). Delivery resumes when an image signed by a trusted key is verified.
    /// Returns what was stopped, for the Deployed condition.
    func stopUntrustedDelivery(
        _ meteor: Meteor, _ edge: Edge, trust: EdgeTrust, keep: Set<String>, raw: JSONValue, settings: EdgeSettings
    ) async throws -> [String] {
        var stopped: [String] = []
        let namespace = meteor.namespace ?? "default"
        for app in applicationsOf(meteor, settings: settings) {
            guard let name = app[path: "metadata", "name"]?.stringValue, !keep.contains(name),
                let targetName = app[path: "metadata", "labels", MeteorLabels.target]?.stringValue,
                let target = edge.targets.first(where: { $0.name == targetName }), let image = edge.images.first(where: { $0.name == target.image }),
                let cluster = app[path: "spec", "destination", "name"]?.stringValue, app[path: "metadata", "deletionTimestamp"] == nil
            else { continue }
            let fingerprint = app[path: "metadata", "annotations", ArgoApplicationBuilder.keyAnnotation]?.stringValue
            if let fingerprint, trust.trusts(fingerprint, repository: image.repository, cluster: cluster, namespace: namespace) { continue }
            try await deleteApplication(app, settings: settings)
            let what = "\(ApplicationState(app).pinnedImage ?? image.repository) on \(cluster)"
            let why =
                "delivery of \(what) stopped: it was verified with key \(fingerprint ?? "(unrecorded)"), which no EdgeTrustPolicy trusts for \(image.repository) there any more"
            stopped.append(why)
            await events.record(raw, type: .warning, reason: .deliveryStopped, message: "Deleted Application \(name): \(why)")
        }
        return stopped
    }

    /// Deletes Applications whose resources Argo CD reports running an image the operator did not pin and verify
    /// (a second container, an init container, a tag): delivery of that target stops until its manifests run only
    /// what is declared (`targets[].images`). Returns what was stopped.
    func stopUnpinnedDelivery(_ meteor: Meteor, raw: JSONValue, settings: EdgeSettings) async throws -> [String] {
        var stopped: [String] = []
        for app in applicationsOf(meteor, settings: settings) where app[path: "metadata", "deletionTimestamp"] == nil {
            let unpinned = Self.unpinnedImages(app)
            guard !unpinned.isEmpty, let name = app[path: "metadata", "name"]?.stringValue else { continue }
            let given = EdgeDelivered(application: app, target: app[path: "metadata", "labels", MeteorLabels.target]?.stringValue ?? "")
            edgeMemory.unpinnedStops.withLock { $0["\(meteor.metadata.uid ?? "")/\(name)"] = given }
            try await deleteApplication(app, settings: settings)
            let why =
                "\(name) runs \(unpinned.joined(separator: ", ")), not pinned and verified: declare every image its manifests run in spec.edge.targets[].images, by digest"
            stopped.append(why)
            await events.record(raw, type: .warning, reason: .deliveryStopped, message: "Deleted Application \(why)")
        }
        return stopped
    }

    /// The Meteor's Applications, from the cache.
    func applicationsOf(_ meteor: Meteor, settings: EdgeSettings) -> [JSONValue] {
        guard let applications, let uid = meteor.metadata.uid else { return [] }
        return applications.store.list(
            namespace: settings.argocdNamespace, labelSelector: LabelSelector([.init(key: MeteorLabels.meteorUID, op: .equals, values: [uid])]))
    }

    /// Deletes Applications no placement wants any more (a target removed, a cluster unlabelled or gone; all of
    /// them when `keep` is empty).
    func pruneApplications(_ meteor: Meteor, keep: Set<String>, settings: EdgeSettings) async throws {
        for app in applicationsOf(meteor, settings: settings) {
            guard let name = app[path: "metadata", "name"]?.stringValue, !keep.contains(name), app[path: "metadata", "deletionTimestamp"] == nil
            else { continue }
            try await deleteApplication(app, settings: settings)
        }
    }

    /// Deletes an Application the operator made (this one: its UID as precondition); Argo CD's finalizer takes its
    /// resources off the device first.
    func deleteApplication(_ app: JSONValue, settings: EdgeSettings) async throws {
        _ = try await ignoreNotFound {
            try await cache.delete(
                ObjectKey(app), ArgoApplicationBuilder.resourceType, DeleteParams(preconditionUID: app[path: "metadata", "uid"]?.stringValue))
        }
    }

    /// A placement's Application, when this Meteor (this UID) made it: from the cache, or the operator's own write.
    func placedApplication(_ p: EdgePlacement, of meteor: Meteor, settings: EdgeSettings) -> JSONValue? {
        guard let applications else { return nil }
        let key = ObjectKey(
            namespace: settings.argocdNamespace, name: p.application(meteorNamespace: meteor.namespace ?? "default", meteor: meteor.name))
        guard let app = cache.get(key, from: applications),
            app[path: "metadata", "labels", MeteorLabels.meteorUID]?.stringValue == meteor.metadata.uid
        else { return nil }
        return app
    }

    /// The placements' Applications, by name, as Argo CD reports them.
    func deploymentStatus(_ meteor: Meteor, _ placements: [EdgePlacement], settings: EdgeSettings) -> [String: EdgeDeploymentStatus] {
        var out: [String: EdgeDeploymentStatus] = [:]
        for p in placements {
            guard let app = placedApplication(p, of: meteor, settings: settings), let name = app[path: "metadata", "name"]?.stringValue else {
                continue
            }
            let state = ApplicationState(app)
            var d = EdgeDeploymentStatus(target: p.target.name, cluster: p.cluster, application: name)
            d.image = state.pinnedImage
            d.revision = state.revision
            d.syncStatus = state.syncStatus ?? "Unknown"
            d.healthStatus = state.healthStatus ?? "Unknown"
            // Argo CD's words, which can run long: a status holds a summary (the Application has the rest).
            d.message = state.message.map { ObjectHelpers.truncated($0, maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes) }
            out[name] = d
        }
        return out
    }
}
