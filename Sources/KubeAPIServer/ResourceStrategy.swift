import Foundation
import KubeModels

/// The per-kind rules kube-apiserver keeps in each resource's registry strategy (`PrepareForCreate`,
/// `PrepareForUpdate`, a Secret's normalisation, a Namespace's names): `APIServerCore` asks the resource's
/// strategy instead of testing kinds inline.
protocol ResourceStrategy: Sendable {
    /// Spec changes bump `metadata.generation` (custom resources, CRDs, Deployments, Ingresses).
    var tracksGeneration: Bool { get }
    /// A create's `status` is dropped: it is written through `/status` only (custom resources with the subresource).
    var dropsStatusOnCreate: Bool { get }
    /// Names are DNS labels (Namespaces) rather than subdomains.
    var namesAreLabels: Bool { get }
    /// What the kind sets on a new object, once it has its name.
    func prepareForCreate(_ obj: inout JSONValue, name: String) throws
    /// What the kind keeps or recomputes on an update of the main resource (`next`: the proposal over `old`).
    func prepareForUpdate(_ next: inout JSONValue, old: JSONValue) throws
    /// Normalises a written object before its schema judges it.
    func normalize(_ obj: inout JSONValue) throws
    /// The propagation of a delete that names none.
    var defaultPropagation: DeletionPropagation { get }
    /// What a delete does to the object before its finalizers are judged; whether the kind itself holds the object
    /// back (beyond `metadata.finalizers`), and whether propagation adds its finalizer (`foregroundDeletion`, `orphan`).
    func beginDeletion(_ obj: inout JSONValue)
    func holdsDeletion(_ obj: JSONValue) -> Bool
    var propagationAddsFinalizers: Bool { get }
    /// What the server does after the object is stored, or once it is gone.
    func afterWrite(_ stored: JSONValue, core: APIServerCore)
    func afterDelete(_ deleted: JSONValue, core: APIServerCore)
}

extension ResourceStrategy {
    var namesAreLabels: Bool { false }
    func prepareForCreate(_ obj: inout JSONValue, name: String) throws {}
    func prepareForUpdate(_ next: inout JSONValue, old: JSONValue) throws {}
    func normalize(_ obj: inout JSONValue) throws {}
    var defaultPropagation: DeletionPropagation { .background }
    func beginDeletion(_ obj: inout JSONValue) {}
    func holdsDeletion(_ obj: JSONValue) -> Bool { false }
    var propagationAddsFinalizers: Bool { true }
    func afterWrite(_ stored: JSONValue, core: APIServerCore) {}
    func afterDelete(_ deleted: JSONValue, core: APIServerCore) {}
}

/// Built-in kinds other than those below, and every custom resource.
struct GenericStrategy: ResourceStrategy {
    /// Built-in kinds whose spec changes count generations.
    static let generationKinds: Set<String> = ["apps/deployments", "networking.k8s.io/ingresses"]
    let tracksGeneration: Bool
    let dropsStatusOnCreate: Bool

    init(_ r: ServedResource) {
        tracksGeneration = r.isCustom || Self.generationKinds.contains(r.key)
        dropsStatusOnCreate = r.hasStatus && r.isCustom
    }
}

/// A Namespace is born Active with the `kubernetes` finalizer and its name label; its spec (the finalizers) is
/// changed only through `/finalize`. Deleted, it turns Terminating and stays until the namespace controller (the
/// garbage collector here) has emptied it and removed the `kubernetes` finalizer; its dependents go first.
struct NamespaceStrategy: ResourceStrategy {
    var tracksGeneration: Bool { false }
    var dropsStatusOnCreate: Bool { false }
    var namesAreLabels: Bool { true }
    var defaultPropagation: DeletionPropagation { .foreground }
    var propagationAddsFinalizers: Bool { false }

    func beginDeletion(_ obj: inout JSONValue) { obj[path: "status", "phase"] = "Terminating" }
    func holdsDeletion(_ obj: JSONValue) -> Bool { !(obj[path: "spec", "finalizers"]?.arrayValue ?? []).isEmpty }

    func prepareForCreate(_ obj: inout JSONValue, name: String) throws {
        obj["spec"] = ["finalizers": ["kubernetes"]]
        obj["status"] = ["phase": "Active"]
        obj[path: "metadata", "labels", "kubernetes.io/metadata.name"] = .string(name)
    }

    func prepareForUpdate(_ next: inout JSONValue, old: JSONValue) throws { next["spec"] = old["spec"] }
}

/// A CustomResourceDefinition must describe a servable resource; it is accepted and established at once, served
/// once stored, and takes its objects with it when deleted.
struct CRDStrategy: ResourceStrategy {
    var tracksGeneration: Bool { true }
    var dropsStatusOnCreate: Bool { false }

    func afterWrite(_ stored: JSONValue, core: APIServerCore) {
        if let served = try? ServedResource.fromCRD(stored) { core.registry.register(served) }
    }

    func afterDelete(_ deleted: JSONValue, core: APIServerCore) { core.crdDeleted(deleted) }

    func prepareForCreate(_ obj: inout JSONValue, name: String) throws {
        _ = try ServedResource.fromCRD(obj)
        obj["status"] = Self.status(obj)
    }

    func prepareForUpdate(_ next: inout JSONValue, old: JSONValue) throws {
        _ = try ServedResource.fromCRD(next)
        next["status"] = Self.status(next)
    }

    static func status(_ crd: JSONValue) -> JSONValue {
        let now = JSONValue.string(APIServerCore.now())
        let storage = (crd[path: "spec", "versions"]?.arrayValue ?? []).first { $0["storage"]?.boolValue == true }?["name"] ?? .null
        return [
            "acceptedNames": crd[path: "spec", "names"] ?? [:],
            "conditions": [
                ["type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now],
                [
                    "type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                ],
            ],
            "storedVersions": [storage],
        ]
    }
}

/// As the core/v1 Secret strategy does: `stringData` is a write-only convenience merged into `data` (base64,
/// winning over `data` on the same key) and never stored; `type` defaults to Opaque; `data` must be base64.
struct SecretStrategy: ResourceStrategy {
    var tracksGeneration: Bool { false }
    var dropsStatusOnCreate: Bool { false }

    func normalize(_ obj: inout JSONValue) throws {
        var data = obj["data"]?.objectValue ?? [:]
        for (key, value) in data {
            guard let text = value.stringValue, Data(base64Encoded: text) != nil else {
                throw APIError.badRequest("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[\"\(key)\"]")
            }
        }
        for (key, value) in obj["stringData"]?.objectValue ?? [:] {
            data[key] = .string(Data((value.stringValue ?? "").utf8).base64EncodedString())
        }
        if obj["stringData"] != nil || obj["data"] != nil { obj["data"] = data.isEmpty && obj["data"] == nil ? nil : .object(data) }
        obj["stringData"] = nil
        if obj["type"] == nil || obj["type"]?.stringValue == "" { obj["type"] = "Opaque" }
    }
}

extension ServedResource {
    /// The rules of this resource's kind.
    var strategy: any ResourceStrategy {
        if isCustom { return GenericStrategy(self) }
        switch key {
        case APIServerCore.namespacesKey: return NamespaceStrategy()
        case APIServerCore.crdKey: return CRDStrategy()
        case "/secrets": return SecretStrategy()
        default: return GenericStrategy(self)
        }
    }
}
