import Foundation
import KubeModels

/// Server-side apply: merging an applied configuration into the live object, field by field, with the
/// managers of each field (`ManagedFields`) deciding conflicts.
extension APIServerCore {
    /// Server-side apply of a configuration onto the live object.
    func apply(_ config: JSONValue, to live: JSONValue, scope: RequestScope, options: WriteOptions) throws -> JSONValue {
        let r = scope.resource
        let manager = options.fieldManager ?? ""
        let schema = r.schemas[r.storageVersion]
        guard case .object = config else { throw APIError.badRequest("apply patch must be an object") }
        if let av = config["apiVersion"]?.stringValue, av != scope.apiVersion, !r.versions.contains(where: { r.apiVersion($0) == av }) {
            throw APIError.badRequest("the API version in the data (\(av)) does not match the expected API version (\(scope.apiVersion))")
        }
        if let k = config["kind"]?.stringValue, k != r.kind {
            throw APIError.invalid(
                kind: k, group: r.group, name: scope.name ?? "", field: "kind", reason: "FieldValueInvalid",
                message: "Invalid value: \"\(k)\": must be \(r.kind)")
        }
        var owned = ManagedFields.ownedPart(config)
        if scope.isStatus {
            owned = ["status": owned["status"] ?? [:]]
        } else if r.hasStatus {
            owned["status"] = nil
        }
        let applied = ManagedFields.leaves(of: owned, schema: schema, builtin: r.builtinListMapKeys)
        var entries = ManagedFields.entries(of: live)
        let sub = scope.isStatus ? "status" : nil
        let mine = entries.firstIndex { $0.manager == manager && $0.operation == "Apply" && $0.subresource == sub }
        let previously = mine.map { entries[$0].paths } ?? []

        var conflicts: [(String, FieldPath)] = []
        for i in entries.indices where i != mine {
            for p in applied {
                guard let theirs = entries[i].paths.first(where: { ManagedFields.overlaps($0, p) }) else { continue }
                if ManagedFields.value(at: p, in: owned) != ManagedFields.value(at: p, in: live) || theirs.count > p.count {
                    conflicts.append((entries[i].manager, p))
                }
            }
        }
        if !conflicts.isEmpty && !options.force {
            conflicts.sort { ManagedFields.render($0.1) < ManagedFields.render($1.1) }
            let causes = conflicts.map {
                StatusCause(reason: "FieldManagerConflict", message: "conflict with \"\($0.0)\"", field: ManagedFields.render($0.1))
            }
            let text = conflicts.map { "conflict with \"\($0.0)\": \(ManagedFields.render($0.1))" }
            let summary =
                conflicts.count == 1
                ? "Apply failed with 1 conflict: \(text[0])" : "Apply failed with \(conflicts.count) conflicts: " + text.joined(separator: "\n")
            throw APIError(code: 409, reason: StatusReason.conflict, message: summary, details: StatusDetails(causes: causes))
        }
        if options.force {
            for i in entries.indices where i != mine {
                entries[i].paths = entries[i].paths.filter { theirs in !applied.contains { ManagedFields.overlaps($0, theirs) } }
            }
        }
        var result = live
        // Fields this manager applied before and no longer applies go away, unless someone else also owns them.
        let dropped = previously.subtracting(applied)
        for p in dropped.sorted(by: { $0.count > $1.count }) {
            let sharedWithOthers = entries.indices.contains { i in i != mine && entries[i].paths.contains { ManagedFields.overlaps($0, p) } }
            if !sharedWithOthers { ManagedFields.remove(p, from: &result) }
        }
        result = ManagedFields.merge(owned, into: result, schema: schema, builtin: r.builtinListMapKeys)
        if let mine {
            entries[mine].paths = applied
            entries[mine].time = Self.now()
        } else {
            entries.append(
                ManagedFields.Entry(
                    manager: manager, operation: "Apply", apiVersion: scope.apiVersion, time: Self.now(), subresource: sub, paths: applied))
        }
        ManagedFields.setEntries(entries, on: &result)
        return result
    }
}
