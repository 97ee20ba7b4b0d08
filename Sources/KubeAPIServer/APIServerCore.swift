import Foundation
import HeapModule
import KubeModels

/// What a request addresses once its path is parsed.
struct RequestScope: Sendable {
    var resource: ServedResource
    var version: String
    var namespace: String?
    var name: String?
    var subresource: String?

    var isStatus: Bool { subresource == "status" }
    var apiVersion: String { resource.apiVersion(version) }
    var objectKey: String { (namespace ?? "") + "/" + (name ?? "") }
}

struct WriteOptions: Sendable {
    var dryRun = false
    var fieldManager: String?
    var fieldValidation = FieldValidation.warn
    var force = false
    var userAgent = ""

    /// The manager an update is recorded under: the explicit one, or the client's name from its User-Agent.
    var updateManager: String {
        if let fieldManager, !fieldManager.isEmpty { return fieldManager }
        let ua = userAgent.split(separator: "/").first.map(String.init) ?? ""
        return ua.isEmpty ? "unknown" : ua
    }
}

struct WriteResult: Sendable {
    var value: JSONValue
    var code: Int
    var warnings: [String] = []
}

/// Object semantics of kube-apiserver over the store: metadata rules, status split, generation, finalizers,
/// schema validation, server-side apply, deletion propagation. Knows nothing of HTTP.
final class APIServerCore: Sendable {
    let store: ObjectStore
    let registry: ResourceRegistry
    let gcSignal: AsyncStream<Void>.Continuation
    let gcEvents: AsyncStream<Void>
    static let namespacesKey = "/namespaces"
    static let crdKey = "apiextensions.k8s.io/customresourcedefinitions"

    init(store: ObjectStore, registry: ResourceRegistry) {
        self.store = store
        self.registry = registry
        (gcEvents, gcSignal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    static func now() -> String { KubeTime.format(Date()) }

    static func newUID() -> String { UUID().uuidString.lowercased() }

    static let generateNameAlphabet = Array("bcdfghjklmnpqrstvwxz2456789")

    func bootstrap() {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] where store.get(Self.namespacesKey, "/" + ns) == nil {
            _ = try? store.guaranteedUpdate(Self.namespacesKey, "/" + ns) { _ in
                .put([
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": [
                        "name": .string(ns), "uid": .string(Self.newUID()), "creationTimestamp": .string(Self.now()),
                        "labels": ["kubernetes.io/metadata.name": .string(ns)],
                    ],
                    "spec": ["finalizers": ["kubernetes"]], "status": ["phase": "Active"],
                ])
            }
        }
    }

    // MARK: Reads

    func get(_ scope: RequestScope) throws -> JSONValue {
        guard let o = store.get(scope.resource.key, scope.objectKey) else { throw APIError.notFound(scope.resource, name: scope.name ?? "") }
        return present(o.value, version: scope.version, resource: scope.resource)
    }

    /// Rewrites `apiVersion` for a request made at a version other than the storage version (conversion
    /// strategy None; Tekton's webhook conversion is not run).
    func present(_ value: JSONValue, version: String, resource: ServedResource) -> JSONValue {
        guard version != resource.storageVersion else { return value }
        var v = value
        v["apiVersion"] = .string(resource.apiVersion(version))
        return v
    }

    struct ListResult {
        var items: [StoredObject]
        var rv: UInt64
        var continueToken: String?
        var remaining: Int64?
    }

    func list(
        _ scope: RequestScope, labelSelector: LabelSelector, fieldSelector: FieldSelector?, limit: Int?, continueToken: String?
    ) throws -> ListResult {
        let (all, currentRV) = store.list(scope.resource.key, namespace: scope.namespace)
        var rv = currentRV
        var start: String?
        if let continueToken, !continueToken.isEmpty {
            guard let data = Data(base64Encoded: continueToken), let token = try? JSONValue.parse(data),
                let tokenRV = token["rv"]?.intValue, let s = token["start"]?.stringValue
            else { throw APIError.badRequest("continue key is not valid: illegal base64 data at input byte 0") }
            if store.isCompacted(UInt64(tokenRV)) {
                throw APIError.gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
                )
            }
            start = s
            rv = UInt64(tokenRV)
        }
        // Objects after the continue key that match, by index; a page keeps only the `limit` smallest keys (a
        // bounded heap), so paging through N objects costs O(N log limit) a page, not a sort of all N each time.
        let matching = all.indices.filter { i in
            let o = all[i]
            return (start.map { o.objectKey > $0 } ?? true) && labelSelector.matches(o.labels) && (fieldSelector?.matches(o.fields) ?? true)
        }
        struct Ordered: Comparable {
            let key: String
            let index: Int
            static func < (a: Ordered, b: Ordered) -> Bool { a.key < b.key }
        }
        if let limit, limit > 0, matching.count > limit {
            var smallest = Heap<Ordered>()
            for i in matching {
                smallest.insert(Ordered(key: all[i].objectKey, index: i))
                if smallest.count > limit { smallest.removeMax() }
            }
            let page = smallest.unordered.sorted().map { all[$0.index] }
            let token = JSONValue.object(["rv": .int(Int64(rv)), "start": .string(page.last!.objectKey)]).serializedData().base64EncodedString()
            return ListResult(items: page, rv: rv, continueToken: token, remaining: Int64(matching.count - limit))
        }
        let items = matching.map { Ordered(key: all[$0].objectKey, index: $0) }.sorted().map { all[$0.index] }
        return ListResult(items: items, rv: rv, continueToken: nil, remaining: nil)
    }

    // MARK: Create

    func create(_ scope: RequestScope, body: JSONValue, options: WriteOptions) throws -> WriteResult {
        let r = scope.resource
        var obj = try checkBody(body, scope: scope)
        var warnings: [String] = []
        if obj[path: "metadata", "resourceVersion"]?.stringValue.map({ !$0.isEmpty }) ?? false {
            throw APIError.badRequest("resourceVersion should not be set on objects to be created")
        }
        if r.namespaced {
            guard let ns = scope.namespace else { throw APIError.badRequest("the namespace of the object must be set") }
            obj[path: "metadata", "namespace"] = .string(ns)
            try checkNamespaceAcceptsContent(ns, resource: r, name: obj[path: "metadata", "name"]?.stringValue ?? "")
        } else {
            obj[path: "metadata", "namespace"] = nil
        }
        var name = obj[path: "metadata", "name"]?.stringValue ?? ""
        if name.isEmpty {
            guard let prefix = obj[path: "metadata", "generateName"]?.stringValue, !prefix.isEmpty else {
                throw APIError.invalid(
                    kind: r.kind, group: r.group, name: "", field: "metadata.name", reason: "FieldValueRequired",
                    message: "Required value: name or generateName is required")
            }
            name = String(prefix.prefix(58)) + String((0..<5).map { _ in Self.generateNameAlphabet.randomElement()! })
            obj[path: "metadata", "name"] = .string(name)
        }
        var meta = obj["metadata"]!
        meta["uid"] = .string(Self.newUID())
        meta["creationTimestamp"] = .string(Self.now())
        meta["deletionTimestamp"] = nil
        meta["deletionGracePeriodSeconds"] = nil
        meta["selfLink"] = nil
        meta["managedFields"] = nil
        let strategy = r.strategy
        meta["generation"] = strategy.tracksGeneration ? 1 : nil
        obj["metadata"] = meta
        if strategy.dropsStatusOnCreate { obj["status"] = nil }
        try strategy.prepareForCreate(&obj, name: name)
        try admit(&obj, scope: scope, name: name, options: options, warnings: &warnings)
        recordUpdate(&obj, old: nil, scope: scope, options: options, operation: "Update")
        let finalScope = RequestScope(resource: r, version: scope.version, namespace: scope.namespace, name: name)
        if options.dryRun { return WriteResult(value: present(obj, version: scope.version, resource: r), code: 201, warnings: warnings) }
        let (stored, _) = try store.guaranteedUpdate(r.key, finalScope.objectKey) { current in
            if current != nil { throw APIError.alreadyExists(r, name: name) }
            return .put(obj)
        }
        afterWrite(resource: r, stored: stored!)
        return WriteResult(value: present(stored!.value, version: scope.version, resource: r), code: 201, warnings: warnings)
    }

    func checkNamespaceAcceptsContent(_ ns: String, resource: ServedResource, name: String) throws {
        guard let nsObj = store.get(Self.namespacesKey, "/" + ns) else { throw APIError.namespaceNotFound(ns) }
        if nsObj.value[path: "metadata", "deletionTimestamp"] != nil {
            let what = resource.group.isEmpty ? resource.plural : "\(resource.plural).\(resource.group)"
            throw APIError(
                code: 403, reason: StatusReason.forbidden,
                message: "\(what) \"\(name)\" is forbidden: unable to create new content in namespace \(ns) because it is being terminated",
                details: StatusDetails(
                    name: name.isEmpty ? nil : name, group: resource.group.isEmpty ? nil : resource.group, kind: resource.plural,
                    causes: [StatusCause(reason: "NamespaceTerminating", message: "namespace \(ns) is being terminated", field: "metadata.namespace")]
                ))
        }
    }

    /// Checks apiVersion, kind and that the body is an object; fills them in the stored form.
    func checkBody(_ body: JSONValue, scope: RequestScope) throws -> JSONValue {
        guard case .object = body else {
            throw APIError.badRequest(
                "the object provided is unrecognized (must be of type \(scope.resource.kind)): couldn't get version/kind; json parse error")
        }
        let r = scope.resource
        guard let kind = body["kind"]?.stringValue, !kind.isEmpty else {
            throw APIError.badRequest("Object 'Kind' is missing in '\(body.serializedString().prefix(200))'")
        }
        if let av = body["apiVersion"]?.stringValue, av != scope.apiVersion {
            if !(r.group == "" ? false : r.versions.contains(where: { r.apiVersion($0) == av })) {
                throw APIError.badRequest("the API version in the data (\(av)) does not match the expected API version (\(scope.apiVersion))")
            }
        }
        if kind != r.kind {
            // kube-apiserver names the kind the body claims, not the endpoint's.
            throw APIError.invalid(
                kind: kind, group: r.group, name: body[path: "metadata", "name"]?.stringValue ?? "", field: "kind", reason: "FieldValueInvalid",
                message: "Invalid value: \"\(kind)\": must be \(r.kind)")
        }
        var obj = body
        obj["apiVersion"] = .string(r.apiVersion(r.storageVersion))
        if obj["metadata"] == nil { obj["metadata"] = .object([:]) }
        guard case .object = obj["metadata"]! else {
            throw APIError.badRequest("metadata must be an object")
        }
        return obj
    }

    /// Name and metadata validation, schema defaulting, pruning (with warnings or a strict refusal) and validation.
    func admit(_ obj: inout JSONValue, scope: RequestScope, name: String, options: WriteOptions, warnings: inout [String]) throws {
        let r = scope.resource
        var causes = ObjectValidation.nameCauses(name, labelOnly: r.strategy.namesAreLabels)
        causes += ObjectValidation.metadataCauses(obj["metadata"] ?? [:])
        try r.strategy.normalize(&obj)
        if let schema = r.schemas[r.storageVersion] ?? r.schemas[scope.version] {
            var pruned: [String] = []
            var body = obj
            let meta = body["metadata"]
            body["metadata"] = nil
            body["apiVersion"] = nil
            body["kind"] = nil
            schema.defaultAndPrune(&body, path: "", pruned: &pruned)
            if !pruned.isEmpty {
                switch options.fieldValidation {
                case .strict:
                    let detail = pruned.map { "unknown field \"\($0)\"" }.joined(separator: ", ")
                    throw APIError.badRequest(
                        "\(r.kind) in version \"\(scope.version)\" cannot be handled as a \(r.kind): strict decoding error: \(detail)")
                case .ignore: break
                case .warn: warnings += pruned.map { "unknown field \"\($0)\"" }
                }
            }
            // Identity and metadata are checked above; the schema judges the rest, defaulted and pruned.
            var schemaCauses: [StatusCause] = []
            schema.validate(body, path: "", errors: &schemaCauses)
            causes += schemaCauses.filter { !($0.field ?? "").hasPrefix("metadata") && $0.field != "apiVersion" && $0.field != "kind" }
            body["metadata"] = meta
            body["apiVersion"] = obj["apiVersion"]
            body["kind"] = obj["kind"]
            obj = body
        }
        if !causes.isEmpty {
            throw APIError.invalid(kind: r.kind, group: r.group, name: name, causes: causes)
        }
    }

    // MARK: Update, patch, apply

    enum Mutation {
        case replace(JSONValue)
        case patch(PatchType, JSONValue)
    }

    func update(_ scope: RequestScope, body: JSONValue, options: WriteOptions) throws -> WriteResult {
        let obj = try checkBody(body, scope: scope)
        if let bodyName = obj[path: "metadata", "name"]?.stringValue, bodyName != scope.name {
            throw APIError.badRequest("the name of the object (\(bodyName)) does not match the name on the URL (\(scope.name ?? ""))")
        }
        if let ns = obj[path: "metadata", "namespace"]?.stringValue, !ns.isEmpty, scope.resource.namespaced, ns != scope.namespace {
            throw APIError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
        }
        return try write(scope, options: options, mutation: .replace(obj))
    }

    func patch(_ scope: RequestScope, type: PatchType, patch: JSONValue, options: WriteOptions) throws -> WriteResult {
        if type == .strategicMerge && scope.resource.isCustom {
            throw APIError(
                code: 415, reason: StatusReason.unsupportedMediaType,
                message:
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            )
        }
        if type == .apply {
            guard let fm = options.fieldManager, !fm.isEmpty else {
                throw APIError.invalid(
                    kind: "PatchOptions", group: "meta.k8s.io", name: "",
                    causes: [StatusCause(reason: "FieldValueRequired", message: "Required value: is required for apply patch", field: "fieldManager")]
                )
            }
            if store.get(scope.resource.key, scope.objectKey) == nil && !scope.isStatus {
                var body = patch
                if body["metadata"] == nil { body["metadata"] = .object([:]) }
                if let n = body[path: "metadata", "name"]?.stringValue, n != scope.name {
                    throw APIError.badRequest("the name of the object (\(n)) does not match the name on the URL (\(scope.name ?? ""))")
                }
                body[path: "metadata", "name"] = scope.name.map(JSONValue.string)
                var createOptions = options
                createOptions.fieldManager = fm
                let result = try createApplied(scope, body: body, options: createOptions)
                return result
            }
        }
        return try write(scope, options: options, mutation: .patch(type, patch))
    }

    private func createApplied(_ scope: RequestScope, body: JSONValue, options: WriteOptions) throws -> WriteResult {
        // Record the applied configuration as owned by the manager (operation Apply) rather than Update.
        let r = scope.resource
        var obj = try checkBody(body, scope: scope)
        var warnings: [String] = []
        if let ns = scope.namespace, r.namespaced {
            obj[path: "metadata", "namespace"] = .string(ns);
            try checkNamespaceAcceptsContent(ns, resource: r, name: obj[path: "metadata", "name"]?.stringValue ?? "")
        }
        var meta = obj["metadata"]!
        meta["uid"] = .string(Self.newUID())
        meta["creationTimestamp"] = .string(Self.now())
        meta["managedFields"] = nil
        meta["resourceVersion"] = nil
        let strategy = r.strategy
        if strategy.tracksGeneration { meta["generation"] = 1 }
        obj["metadata"] = meta
        if strategy.dropsStatusOnCreate { obj["status"] = nil }
        try strategy.prepareForCreate(&obj, name: scope.name ?? "")
        try admit(&obj, scope: scope, name: scope.name ?? "", options: options, warnings: &warnings)
        let leaves = ManagedFields.leaves(of: ManagedFields.ownedPart(body), schema: r.schemas[r.storageVersion], builtin: r.builtinListMapKeys)
        ManagedFields.setEntries(
            [
                ManagedFields.Entry(
                    manager: options.fieldManager!, operation: "Apply", apiVersion: scope.apiVersion, time: Self.now(), subresource: nil,
                    paths: leaves)
            ], on: &obj)
        if options.dryRun { return WriteResult(value: obj, code: 201, warnings: warnings) }
        let (stored, _) = try store.guaranteedUpdate(r.key, scope.objectKey) { current in
            if current != nil { throw APIError.conflict(r, name: scope.name ?? "", message: "the object was created concurrently") }
            return .put(obj)
        }
        afterWrite(resource: r, stored: stored!)
        return WriteResult(value: present(stored!.value, version: scope.version, resource: r), code: 201, warnings: warnings)
    }

    /// The shared read-modify-write path of PUT, PATCH and apply.
    private func write(_ scope: RequestScope, options: WriteOptions, mutation: Mutation) throws -> WriteResult {
        let r = scope.resource
        var warnings: [String] = []
        var responseValue: JSONValue?
        let (stored, deleted) = try store.guaranteedUpdate(r.key, scope.objectKey) { current in
            guard let current else { throw APIError.notFound(r, name: scope.name ?? "") }
            let old = current.value
            var proposed: JSONValue
            var preconditionRV: String?
            switch mutation {
            case .replace(let obj):
                proposed = obj
                preconditionRV = obj[path: "metadata", "resourceVersion"]?.stringValue
                if preconditionRV?.isEmpty ?? true {
                    preconditionRV = nil
                    if r.isCustom {
                        throw APIError.invalid(
                            kind: r.kind, group: r.group, name: scope.name ?? "", field: "metadata.resourceVersion", reason: "FieldValueInvalid",
                            message: "Invalid value: 0x0: must be specified for an update")
                    }
                }
            case .patch(let type, let patch):
                preconditionRV = patch[path: "metadata", "resourceVersion"]?.stringValue
                switch type {
                case .merge:
                    proposed = MergePatch.apply(patch, to: old)
                case .strategicMerge:
                    proposed = MergePatch.apply(StrategicMerge.toMergePatch(patch, original: old, listMapKeys: r.builtinListMapKeys), to: old)
                case .json:
                    do {
                        proposed = try JSONPatch.apply(patch, to: old)
                    } catch let e as JSONPatchError {
                        if e.isTestFailure {
                            // What kube-apiserver 1.36 answers, word for word: no details, no causes.
                            throw APIError(
                                code: 422, reason: StatusReason.invalid, message: "the server rejected our request due to an error in our request")
                        }
                        throw APIError(code: 422, reason: StatusReason.invalid, message: e.message)
                    }
                case .apply:
                    preconditionRV = nil
                    proposed = try apply(patch, to: old, scope: scope, options: options)
                }
            }
            if let preconditionRV, preconditionRV != String(current.rv) {
                throw APIError.staleResourceVersion(r, name: scope.name ?? "")
            }
            let isApply: Bool
            if case .patch(.apply, _) = mutation { isApply = true } else { isApply = false }
            var next = try merge(proposed: proposed, old: old, scope: scope, managedFieldsFromProposal: isApply)
            if case .patch(.apply, _) = mutation {
            } else {
                recordUpdate(&next, old: old, scope: scope, options: options, operation: "Update")
            }
            try admit(&next, scope: scope, name: scope.name ?? "", options: options, warnings: &warnings)
            // A write that changes nothing is not a write: no new resourceVersion, no watch event.
            if Self.equalIgnoringVolatile(next, old) {
                responseValue = old
                return .unchanged
            }
            if let causes = finalizerCauses(old: old, new: next, custom: r.isCustom), !causes.isEmpty {
                throw APIError.invalid(kind: r.kind, group: r.group, name: scope.name ?? "", causes: causes)
            }
            if next[path: "metadata", "deletionTimestamp"] != nil, (next[path: "metadata", "finalizers"]?.arrayValue ?? []).isEmpty {
                responseValue = next
                return options.dryRun ? .unchanged : .delete(final: next)
            }
            responseValue = next
            return options.dryRun ? .unchanged : .put(next)
        }
        if options.dryRun {
            return WriteResult(value: present(responseValue ?? .null, version: scope.version, resource: r), code: 200, warnings: warnings)
        }
        if deleted {
            signalGC()
            if let s = stored { r.strategy.afterDelete(s.value, core: self) }
            return WriteResult(
                value: present(stored?.value ?? responseValue ?? .null, version: scope.version, resource: r), code: 200, warnings: warnings)
        }
        if let stored { afterWrite(resource: r, stored: stored) }
        return WriteResult(value: present(stored?.value ?? .null, version: scope.version, resource: r), code: 200, warnings: warnings)
    }

    /// Combines a proposed object with the stored one: server-owned metadata stays, the status/main split is
    /// enforced, generation moves on spec changes only.
    func merge(proposed: JSONValue, old: JSONValue, scope: RequestScope, managedFieldsFromProposal: Bool = false) throws -> JSONValue {
        let r = scope.resource
        var next: JSONValue
        if scope.isStatus {
            next = old
            next["status"] = proposed["status"]
            if managedFieldsFromProposal { next[path: "metadata", "managedFields"] = proposed[path: "metadata", "managedFields"] }
        } else {
            next = proposed
            next["apiVersion"] = old["apiVersion"]
            next["kind"] = old["kind"]
            if r.hasStatus { next["status"] = old["status"] }
            var meta = next["metadata"]?.objectValue ?? [:]
            let oldMeta = old["metadata"]?.objectValue ?? [:]
            for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "name", "namespace"] {
                meta[k] = oldMeta[k]
            }
            meta["managedFields"] = managedFieldsFromProposal ? proposed[path: "metadata", "managedFields"] : oldMeta["managedFields"]
            meta["resourceVersion"] = oldMeta["resourceVersion"]
            next["metadata"] = .object(meta)
            if r.strategy.tracksGeneration {
                let specChanged = Self.specPart(next) != Self.specPart(old)
                let gen = old[path: "metadata", "generation"]?.intValue ?? 1
                next[path: "metadata", "generation"] = .int(specChanged ? gen + 1 : gen)
            }
            try r.strategy.prepareForUpdate(&next, old: old)
        }
        return next
    }

    static func specPart(_ v: JSONValue) -> JSONValue {
        var o = v
        o["metadata"] = nil
        o["status"] = nil
        o["apiVersion"] = nil
        o["kind"] = nil
        return o
    }

    static func equalIgnoringVolatile(_ a: JSONValue, _ b: JSONValue) -> Bool {
        func strip(_ v: JSONValue) -> JSONValue {
            var o = v
            o[path: "metadata", "resourceVersion"] = nil
            if let mf = o[path: "metadata", "managedFields"]?.arrayValue {
                o[path: "metadata", "managedFields"] = .array(
                    mf.map {
                        var e = $0; e["time"] = nil; return e
                    })
            }
            return o
        }
        return strip(a) == strip(b)
    }

    func finalizerCauses(old: JSONValue, new: JSONValue, custom: Bool) -> [StatusCause]? {
        guard old[path: "metadata", "deletionTimestamp"] != nil else { return nil }
        let before = Set((old[path: "metadata", "finalizers"]?.arrayValue ?? []).compactMap(\.stringValue))
        let after = (new[path: "metadata", "finalizers"]?.arrayValue ?? []).compactMap(\.stringValue)
        let added = after.filter { !before.contains($0) }
        if added.isEmpty { return [] }
        let goSlice = "[]string{" + added.map { JSONValue.string($0).serializedString() }.joined(separator: ", ") + "}"
        let cause = StatusCause(
            reason: "FieldValueForbidden",
            message: "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers \(goSlice)",
            field: "metadata.finalizers")
        // kube-apiserver validates ObjectMeta on update twice for custom resources (the generic registry's
        // BeforeUpdate and the strategy), and reports both.
        return custom ? [cause, cause] : [cause]
    }

    /// Moves ownership of the fields an update changed to its manager.
    func recordUpdate(_ obj: inout JSONValue, old: JSONValue?, scope: RequestScope, options: WriteOptions, operation: String) {
        let r = scope.resource
        let schema = r.schemas[r.storageVersion]
        var changed = ManagedFields.changedLeaves(from: old, to: obj, schema: schema, builtin: r.builtinListMapKeys)
        if scope.isStatus { changed = changed.filter { $0.first == .field("status") } }
        if changed.isEmpty { return }
        let manager = options.updateManager
        var entries = ManagedFields.entries(of: old ?? obj)
        for i in entries.indices { entries[i].paths.subtract(changed) }
        let sub = scope.isStatus ? "status" : nil
        if let i = entries.firstIndex(where: { $0.manager == manager && $0.operation == operation && $0.subresource == sub }) {
            entries[i].paths.formUnion(changed)
            entries[i].time = Self.now()
        } else {
            entries.append(
                ManagedFields.Entry(
                    manager: manager, operation: operation, apiVersion: scope.apiVersion, time: Self.now(), subresource: sub, paths: changed))
        }
        ManagedFields.setEntries(entries, on: &obj)
    }

    // MARK: Delete

    struct DeleteOptions {
        var propagationPolicy: DeletionPropagation?
        var preconditionUID: String?
        var preconditionRV: String?
        var dryRun = false
    }

    func delete(_ scope: RequestScope, options: DeleteOptions) throws -> WriteResult {
        let r = scope.resource
        var result: JSONValue = .null
        let (stored, deleted) = try store.guaranteedUpdate(r.key, scope.objectKey) { current in
            guard let current else { throw APIError.notFound(r, name: scope.name ?? "") }
            if let uid = options.preconditionUID, uid != current.uid {
                throw APIError.conflict(
                    r, name: scope.name ?? "", message: "Precondition failed: UID in precondition: \(uid), UID in object meta: \(current.uid)")
            }
            if let rv = options.preconditionRV, rv != String(current.rv) {
                throw APIError.conflict(
                    r, name: scope.name ?? "",
                    message: "Precondition failed: ResourceVersion in precondition: \(rv), ResourceVersion in object meta: \(current.rv)")
            }
            var obj = current.value
            var finalizers = (obj[path: "metadata", "finalizers"]?.arrayValue ?? []).compactMap(\.stringValue)
            let strategy = r.strategy
            let policy = options.propagationPolicy ?? strategy.defaultPropagation
            strategy.beginDeletion(&obj)
            if strategy.propagationAddsFinalizers, obj[path: "metadata", "deletionTimestamp"] == nil {
                if policy == .foreground, !finalizers.contains("foregroundDeletion") { finalizers.append("foregroundDeletion") }
                if policy == .orphan, !finalizers.contains("orphan") { finalizers.append("orphan") }
            }
            if finalizers.isEmpty && !strategy.holdsDeletion(obj) {
                result = obj
                return options.dryRun ? .unchanged : .delete()
            }
            if obj[path: "metadata", "deletionTimestamp"] != nil {
                result = obj
                return .unchanged
            }
            obj[path: "metadata", "finalizers"] = finalizers.isEmpty ? nil : .array(finalizers.map(JSONValue.string))
            obj[path: "metadata", "deletionTimestamp"] = .string(Self.now())
            obj[path: "metadata", "deletionGracePeriodSeconds"] = 0
            if let g = obj[path: "metadata", "generation"]?.intValue { obj[path: "metadata", "generation"] = .int(g + 1) }
            result = obj
            return options.dryRun ? .unchanged : .put(obj)
        }
        signalGC()
        if deleted {
            if let s = stored { r.strategy.afterDelete(s.value, core: self) }
            let value = stored?.value ?? result
            let status: JSONValue = [
                "kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success",
                "details": [
                    "name": .string(scope.name ?? ""), "group": .string(r.group), "kind": .string(r.plural),
                    "uid": value[path: "metadata", "uid"] ?? "",
                ],
            ]
            return WriteResult(value: status, code: 200)
        }
        return WriteResult(value: present(stored?.value ?? result, version: scope.version, resource: r), code: 200)
    }

    // MARK: Side effects

    func afterWrite(resource r: ServedResource, stored: StoredObject) {
        r.strategy.afterWrite(stored.value, core: self)
        // The collector has work only when an object is being deleted or names an owner that does not exist (a
        // full sweep after every write of an owned object made large clusters crawl).
        let refs = stored.value[path: "metadata", "ownerReferences"]?.arrayValue ?? []
        if stored.value[path: "metadata", "deletionTimestamp"] != nil
            || refs.contains(where: { ref in ref["uid"]?.stringValue.map { store.lookup(uid: $0) == nil } ?? true })
        {
            signalGC()
        }
    }

    func crdDeleted(_ crd: JSONValue) {
        guard let group = crd[path: "spec", "group"]?.stringValue, let plural = crd[path: "spec", "names", "plural"]?.stringValue else { return }
        let key = "\(group)/\(plural)"
        registry.unregister(key: key)
        // In etcd's key order (namespace, then name), as the CRD finalizer deletes them; then the resource's watches
        // end (DifferentialTests: "deleting the CRD ends an open watch").
        let (items, _) = store.list(key, namespace: nil)
        for o in items.sorted(by: { ($0.namespace ?? "", $0.name) < ($1.namespace ?? "", $1.name) }) {
            _ = try? store.guaranteedUpdate(key, o.objectKey) { _ in .delete() }
        }
        store.closeWatches(resourceKey: key)
    }

    func signalGC() { gcSignal.yield(()) }
}

extension Array {
    /// The first index where `predicate` becomes true, for a collection partitioned by it.
    func partitioningIndex(where predicate: (Element) -> Bool) -> Int {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if predicate(self[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}
