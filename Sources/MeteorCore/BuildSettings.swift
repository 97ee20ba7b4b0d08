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

    public init(
        imageRepositoryPrefix: String = "image-registry.openshift-image-registry.svc:5000", serviceAccount: String? = nil, pushSecret: String? = nil,
        pipelineTimeout: String = "1h0m0s", workspaceSize: String = "1Gi", runAsUser: Int64? = 65532
    ) {
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
