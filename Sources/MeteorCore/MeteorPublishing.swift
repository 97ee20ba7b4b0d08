import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// What a Meteor's builds publish: the book served (Deployment, Service, Ingress), the notebook image listed in
/// Open Data Hub (ImageStream, image-puller RoleBinding).
extension MeteorReconciler {
    /// Serves each built book and lists each built notebook image; returns when to retry a listing that failed.
    func publish(_ runs: inout [MeteorSummary.Run], meteor: Meteor, raw: JSONValue) async throws -> Duration? {
        var retry: Duration?
        for i in runs.indices where runs[i].state?.outcome == .succeeded {
            guard let image = runs[i].entry.image else { continue }
            switch runs[i].pipeline {
            case .jupyterbook:
                runs[i].entry.url = try await serveBook(meteor, owner: raw, image: image, digest: runs[i].entry.digest)
            case .jupyterhub where configuration.publishImageStreams:
                var source = NotebookImage.Source(meteor: meteor)
                if let commit = runs[i].entry.commit { source.ref = commit }
                if let problem = try await listNotebookImage(source, owner: raw, image: image, digest: runs[i].entry.digest) {
                    runs[i].entry.message = problem
                    await events.record(raw, type: .warning, reason: .notebookImageNotPublished, message: problem)
                    retry = .seconds(60)
                }
            default:
                break
            }
        }
        return retry
    }

    /// Lists a built notebook image in Open Data Hub; what went wrong when its listing could not be written (its
    /// namespace missing, say). The image is built: the book and the status are not held up, and the listing is
    /// tried again later. Meteors and CustomRuntimeEnvironments alike (`NotebookImage.Source`).
    func listNotebookImage(_ source: NotebookImage.Source, owner raw: JSONValue, image: String, digest: String?) async throws -> String? {
        do {
            try await ensure(
                NotebookImage.imageStream(source, owner: raw, image: image, digest: digest, namespace: configuration.notebookImageNamespace),
                NotebookImage.imageStreamType)
            if let shared = configuration.notebookImageNamespace, shared != source.namespace, NotebookImage.isInOpenShiftRegistry(image) {
                try await ensure(
                    NotebookImage.imagePullerRoleBinding(source, owner: raw, pullersNamespace: shared), NotebookImage.roleBindingType,
                    fields: ["subjects"])
            }
            return nil
        } catch let e as KubeError where !e.isConflict {
            let target = configuration.notebookImageNamespace ?? source.namespace
            return
                "Built, but not listed in Open Data Hub: the ImageStream in namespace \(target) could not be written: \(e.status?.message ?? "\(e)")"
        }
    }

    /// Runs the built site and returns the URL it is served at.
    func serveBook(_ meteor: Meteor, owner: JSONValue, image: String, digest: String?) async throws -> String {
        try await ensure(BookSite.deployment(meteor, owner: owner, image: image, digest: digest), BookSite.deploymentType)
        try await ensure(BookSite.service(meteor, owner: owner), BookSite.serviceType)
        if let ingressClass = configuration.ingressClass, let domain = configuration.ingressDomain {
            try await ensure(BookSite.ingress(meteor, owner: owner, ingressClass: ingressClass, domain: domain), BookSite.ingressType)
            return BookSite.url(meteor: meteor, ingressDomain: domain)
        }
        return BookSite.url(meteor: meteor)
    }

    /// Creates a child, or patches its spec back when it drifted; reads the current one from the cache.
    func ensure(_ desired: JSONValue, _ type: ResourceType, fields: [String] = ["spec"]) async throws {
        let key = ObjectKey(desired)
        guard let informer = sites[type.kind], let current = cache.get(key, from: informer) else {
            _ = try await ignoreAlreadyExists { try await cache.create(desired, type) }
            return
        }
        // Only the fields we set are compared, inside lists too: defaults the API server or other controllers add
        // (a container's imagePullPolicy, a Service's clusterIP) are left alone and cost no write.
        var patch: JSONObject = [:]
        for field in fields {
            let wanted = desired[field] ?? .object([:])
            if !ObjectHelpers.satisfies(current[field], wanted) { patch[field] = wanted }
        }
        if !patch.isEmpty { try await cache.patch(key, type, .merge(.object(patch))) }
    }

    /// Whether the Meteor makes objects outside its namespace, which only its finalizer can clean up.
    func reachesOtherNamespaces(_ meteor: Meteor) -> Bool {
        let requested = meteor.spec.requestedPipelines
        if requested.contains(Pipeline.edge.rawValue), configuration.edge != nil { return true }
        guard requested.contains(Pipeline.jupyterhub.rawValue), configuration.publishImageStreams, let shared = configuration.notebookImageNamespace
        else { return false }
        return shared != (meteor.namespace ?? "default")
    }

    /// Deletes the ImageStreams an owner in `namespace` made in the shared notebook-image namespace (found by its uid
    /// label).
    func pruneSharedImageStreams(namespace: String?, uid: String?) async throws {
        guard configuration.publishImageStreams, let shared = configuration.notebookImageNamespace, shared != (namespace ?? "default"),
            let informer = sites[NotebookImage.imageStreamType.kind], let uid
        else { return }
        for stream in informer.store.list(
            namespace: shared, labelSelector: LabelSelector([.init(key: MeteorLabels.meteorUID, op: .equals, values: [uid])]))
        {
            _ = try await ignoreNotFound {
                try await cache.delete(
                    ObjectKey(stream), NotebookImage.imageStreamType, DeleteParams(preconditionUID: stream[path: "metadata", "uid"]?.stringValue))
            }
        }
    }
}
