import Foundation
import KubeClient
import KubeModels
import Synchronization

/// What a Meteor's builds need in its namespace before a PipelineRun can run there, checked before runs are
/// created so a missing one is named in the Meteor's status rather than in a failed Pod three objects away:
/// the ServiceAccount the runs use (the configured one; else `pipeline` where OpenShift Pipelines made it, else
/// `default`, which every namespace has) and the push Secret, when one is configured. Answers are kept per
/// namespace for `cacheFor`, so creating many Meteors costs one lookup per namespace, and a Secret created later
/// is seen within that time.
public final class BuildPrerequisites: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The settings the namespace's runs are built with (the ServiceAccount resolved).
        case ready(serviceAccount: String)
        case missing(String)
    }

    /// OpenShift Pipelines' ServiceAccount, which can push to the internal registry.
    public static let openShiftPipelinesAccount = "pipeline"

    let client: KubeClient
    let settings: BuildSettings
    let cacheFor: Duration
    /// One lookup per namespace at a time: the workers reconciling a namespace's Meteors share it.
    let cache = Mutex<[String: (lookup: Task<Outcome, any Error>, at: ContinuousClock.Instant)]>([:])

    public init(client: KubeClient, settings: BuildSettings, cacheFor: Duration = .seconds(30)) {
        self.client = client
        self.settings = settings
        self.cacheFor = cacheFor
    }

    public func check(namespace: String) async throws -> Outcome {
        let lookup = cache.withLock { c in
            if let hit = c[namespace], ContinuousClock.now - hit.at < cacheFor { return hit.lookup }
            let task = Task { try await self.lookUp(namespace: namespace) }
            c[namespace] = (task, .now)
            return task
        }
        do {
            return try await lookup.value
        } catch {
            // A failed lookup (the API server unreachable) is not remembered.
            cache.withLock { c in if c[namespace]?.lookup == lookup { c[namespace] = nil } }
            throw error
        }
    }

    func lookUp(namespace: String) async throws -> Outcome {
        let accounts = client.dynamic(
            ResourceType(group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true), namespace: namespace)
        let account: String
        if let configured = settings.serviceAccount {
            guard try await accounts.getOptional(configured) != nil else {
                return .missing(
                    "ServiceAccount \(configured) (--pipeline-service-account) does not exist in namespace \(namespace): create it with push access to \(settings.imageRepositoryPrefix), or start the operator without the flag to use \(Self.openShiftPipelinesAccount) or default"
                )
            }
            account = configured
        } else {
            account = try await accounts.getOptional(Self.openShiftPipelinesAccount) != nil ? Self.openShiftPipelinesAccount : "default"
        }
        if let secret = settings.pushSecret {
            let secrets = client.dynamic(
                ResourceType(group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true), namespace: namespace)
            guard let found = try await secrets.getOptional(secret) else {
                return .missing(
                    "push Secret \(secret) (--push-secret) does not exist in namespace \(namespace): create a kubernetes.io/dockerconfigjson Secret with credentials for \(settings.imageRepositoryPrefix)"
                )
            }
            guard found["type"]?.stringValue == "kubernetes.io/dockerconfigjson", found[path: "data", ".dockerconfigjson"] != nil else {
                return .missing(
                    "push Secret \(secret) in namespace \(namespace) is not of type kubernetes.io/dockerconfigjson with a .dockerconfigjson key (kubectl create secret docker-registry makes one)"
                )
            }
        }
        return .ready(serviceAccount: account)
    }
}
