import Crypto
import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore

/// SANDBOX SIMULATOR standing in for Argo CD's application controller: an Application whose revision or images
/// changed goes OutOfSync/Progressing, then, after a delay, Synced/Healthy at that revision. Deleting an
/// Application removes Argo CD's resources finalizer, as Argo does once the device is cleaned.
///
/// On the owning Meteor, `sandbox.meteor.zone/degrade: microshift-nuc-2,…` makes those clusters turn Degraded
/// running any release but the one that last ran healthy there (`status.rollout.lastHealthy`): a bad release, to
/// watch a staged rollout roll back.
public final class ArgoSimulator: Sendable {
    public static let degradeAnnotation = "sandbox.meteor.zone/degrade"

    let client: KubeClient
    let applications: DynamicInformer
    let meteors: DynamicInformer?
    let duration: Duration
    let logger: Logger

    public init(client: KubeClient, applications: DynamicInformer, meteors: DynamicInformer? = nil, duration: Duration, logger: Logger) {
        self.client = client
        self.applications = applications
        self.meteors = meteors
        self.duration = duration
        self.logger = logger
    }

    /// Whether the Application's Meteor asks for its cluster to turn Degraded on what it is given now.
    func degraded(_ app: JSONValue) -> Bool {
        guard let meteors, let ns = app[path: "metadata", "labels", MeteorLabels.meteorNamespace]?.stringValue,
            let name = app[path: "metadata", "labels", MeteorLabels.meteor]?.stringValue,
            let meteor = meteors.store.get(ObjectKey(namespace: ns, name: name)),
            let clusters = meteor[path: "metadata", "annotations", Self.degradeAnnotation]?.stringValue,
            let cluster = app[path: "spec", "destination", "name"]?.stringValue,
            clusters.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == cluster })
        else { return false }
        let target = app[path: "metadata", "labels", MeteorLabels.target]?.stringValue
        let healthy = (meteor[path: "status", "rollout", "lastHealthy"]?.arrayValue ?? []).first { $0["target"]?.stringValue == target }?["image"]
        return healthy == nil || healthy != app[path: "metadata", "annotations", "meteor.zone/image"]
    }

    public func reconcile(_ key: ObjectKey) async throws -> ReconcileAction {
        guard let app = applications.store.get(key) else { return .done }
        let api = client.dynamic(ArgoApplicationBuilder.resourceType, namespace: key.namespace)
        if app[path: "metadata", "deletionTimestamp"] != nil {
            let finalizers = (app[path: "metadata", "finalizers"]?.arrayValue ?? []).filter {
                $0.stringValue != ArgoApplicationBuilder.resourcesFinalizer
            }
            do {
                _ = try await api.patch(
                    key.name,
                    .merge(["metadata": ["finalizers": .array(finalizers), "resourceVersion": app[path: "metadata", "resourceVersion"] ?? .null]]))
            } catch let e as KubeError where e.isNotFound || e.isConflict {}
            return .done
        }
        let revision = app[path: "spec", "source", "targetRevision"] ?? "HEAD"
        // What the synced resources run, as Argo CD reports it: each kustomize override's new image.
        let images = JSONValue.array(ArgoApplicationBuilder.pinnedImages(app).map(JSONValue.string))
        let now = Date()
        let syncedTo = app[path: "status", "sync", "revision"]
        let reportedImages = app[path: "status", "summary", "images"] ?? .array([])
        let health: JSONValue =
            degraded(app)
            ? ["status": "Degraded", "message": .string("sandbox: CrashLoopBackOff (annotation \(Self.degradeAnnotation) on the Meteor)")]
            : ["status": "Healthy", "message": .null]
        if syncedTo == revision, reportedImages == images, app[path: "status", "sync", "status"] == "Synced",
            app[path: "status", "health", "status"] == health["status"]
        {
            return .done
        }
        let total = duration.seconds
        if app[path: "status", "sync", "status"] == "OutOfSync", let since = app[path: "status", "reconciledAt"]?.stringValue.flatMap(KubeTime.parse),
            app[path: "status", "operationState", "syncResult", "revision"] == revision
        {
            let elapsed = now.timeIntervalSince(since)
            if elapsed < total { return .requeueAfter(.milliseconds(Int64((total - elapsed) * 1000) + 1)) }
            try await patchStatus(
                api, key.name,
                [
                    "sync": [
                        "status": "Synced", "revision": revision,
                        "comparedTo": ["source": app[path: "spec", "source"] ?? .null, "destination": app[path: "spec", "destination"] ?? .null],
                    ],
                    "health": health,
                    "summary": ["images": images],
                    "reconciledAt": .string(KubeTime.format(now)),
                ])
            logger.info("sandbox argo: Application synced", metadata: ["application": "\(key)", "revision": "\(revision.stringValue ?? "")"])
            return .done
        }
        try await patchStatus(
            api, key.name,
            [
                "sync": [
                    "status": "OutOfSync", "revision": syncedTo ?? .null,
                    "comparedTo": ["source": app[path: "spec", "source"] ?? .null, "destination": app[path: "spec", "destination"] ?? .null],
                ],
                "health": [
                    "status": "Progressing",
                    "message": .string("sandbox: syncing to \(app[path: "spec", "destination", "name"]?.stringValue ?? "the device")"),
                ],
                "reconciledAt": .string(KubeTime.format(now)),
                "operationState": [
                    "phase": "Running", "startedAt": .string(KubeTime.format(now)), "operation": ["sync": ["revision": revision]],
                    "syncResult": ["revision": revision],
                ],
            ])
        return .requeueAfter(duration)
    }

    /// Application has no status subresource: Argo CD writes status on the object itself.
    func patchStatus(_ api: DynamicApi, _ name: String, _ status: JSONObject) async throws {
        do {
            _ = try await api.patch(name, .merge(["status": .object(status)]), params: WriteParams(fieldManager: "argocd-application-controller"))
        } catch let e as KubeError where e.isNotFound {}
    }
}
