import KubeRuntime

/// A Meteor being deleted, under its finalizer (`CachedClient.finalizer`).
extension MeteorReconciler {
    /// What only the finalizer can remove: Applications in Argo CD's namespace and ImageStreams in Open Data Hub's.
    /// Children in the Meteor's namespace go with it through their ownerReferences.
    func cleanUp(_ meteor: Meteor) async throws {
        if let edge = configuration.edge {
            try await pruneApplications(meteor, keep: [], settings: edge)
            edgeMemory.forget(uid: meteor.metadata.uid ?? "")
        }
        try await pruneSharedImageStreams(namespace: meteor.namespace, uid: meteor.metadata.uid)
    }
}
