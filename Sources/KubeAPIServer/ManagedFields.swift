import Foundation
import KubeModels

/// One step of a field path: an object field, or a list-map element identified by its keys.
enum FieldPathElement: Hashable, Sendable {
    case field(String)
    case key(JSONObject)
}

typealias FieldPath = [FieldPathElement]

/// Field ownership for server-side apply, in the FieldsV1 wire format (`f:spec`, `k:{"type":"Ready"}`).
///
/// Modelled: ownership of leaf fields (scalars, atomic lists, empty objects) at any depth, list-maps merged by
/// their keys (from the schema's `x-kubernetes-list-map-keys`, or `type` for `conditions`), conflicts between
/// managers, removal of fields a manager stopped applying, `force`. Not modelled: sets (`v:` elements, treated
/// as atomic lists), `x-kubernetes-map-type: atomic`, version conversion of managed fields.
enum ManagedFields {
    /// The list-map keys for an array at this position, if it is a list-map.
    static func listMapKeys(schema: StructuralSchema?, path: FieldPath, builtin: [String: [String]]) -> [String]? {
        if let schema, schema.listType == "map", !schema.listMapKeys.isEmpty { return schema.listMapKeys }
        let dotted = path.compactMap { if case .field(let f) = $0 { return f } else { return nil } }.joined(separator: ".")
        if let keys = builtin[dotted] { return keys }
        if case .field("conditions")? = path.last, schema?.listType != "atomic" { return ["type"] }
        return nil
    }

    /// Every leaf path of a value.
    static func leaves(of value: JSONValue, schema: StructuralSchema?, builtin: [String: [String]], prefix: FieldPath = []) -> Set<FieldPath> {
        var out = Set<FieldPath>()
        collect(value, schema: schema, builtin: builtin, prefix: prefix, into: &out)
        return out
    }

    private static func collect(
        _ value: JSONValue, schema: StructuralSchema?, builtin: [String: [String]], prefix: FieldPath, into out: inout Set<FieldPath>
    ) {
        switch value {
        case .object(let o) where !o.isEmpty:
            for (k, v) in o {
                collect(v, schema: schema?.child(k), builtin: builtin, prefix: prefix + [.field(k)], into: &out)
            }
        case .array(let a):
            if let keys = listMapKeys(schema: schema, path: prefix, builtin: builtin), !a.isEmpty,
                a.allSatisfy({ el in keys.allSatisfy { el[$0] != nil } })
            {
                for el in a {
                    var key: JSONObject = [:]
                    for k in keys { key[k] = el[k] }
                    var rest = el.objectValue ?? [:]
                    for k in keys { rest.removeValue(forKey: k) }
                    let elPath = prefix + [.key(key)]
                    out.insert(elPath)
                    collect(.object(rest), schema: schema?.items, builtin: builtin, prefix: elPath, into: &out)
                }
            } else if !prefix.isEmpty {
                out.insert(prefix)
            }
        default:
            if !prefix.isEmpty { out.insert(prefix) }
        }
    }

    static func value(at path: FieldPath, in value: JSONValue) -> JSONValue? {
        var current: JSONValue? = value
        for el in path {
            switch el {
            case .field(let f): current = current?[f]
            case .key(let key):
                current = current?.arrayValue?.first { item in key.allSatisfy { item[$0.key] == $0.value } }
            }
            if current == nil { return nil }
        }
        return current
    }

    /// Removes the value at a path (and an element of a list-map entirely when the path names it).
    static func remove(_ path: FieldPath, from value: inout JSONValue) {
        guard let first = path.first else { return }
        let rest = Array(path.dropFirst())
        switch first {
        case .field(let f):
            guard case .object(var o) = value, var child = o[f] else { return }
            if rest.isEmpty {
                o.removeValue(forKey: f)
            } else {
                remove(rest, from: &child)
                o[f] = child
            }
            value = .object(o)
        case .key(let key):
            guard case .array(var a) = value,
                let i = a.firstIndex(where: { item in key.allSatisfy { item[$0.key] == $0.value } })
            else { return }
            if rest.isEmpty {
                a.remove(at: i)
            } else {
                remove(rest, from: &a[i])
            }
            value = .array(a)
        }
    }

    /// Merges an applied configuration into a live object: objects field by field, list-maps element by key,
    /// everything else replaced.
    static func merge(
        _ applied: JSONValue, into live: JSONValue, schema: StructuralSchema?, builtin: [String: [String]], path: FieldPath = []
    ) -> JSONValue {
        switch (applied, live) {
        case (.object(let a), .object(var l)):
            for (k, v) in a {
                l[k] = merge(v, into: l[k] ?? .null, schema: schema?.child(k), builtin: builtin, path: path + [.field(k)])
            }
            return .object(l)
        case (.array(let a), .array(var l)):
            guard let keys = listMapKeys(schema: schema, path: path, builtin: builtin) else { return applied }
            for el in a {
                if let i = l.firstIndex(where: { item in keys.allSatisfy { item[$0] == el[$0] } }) {
                    l[i] = merge(el, into: l[i], schema: schema?.items, builtin: builtin, path: path)
                } else {
                    l.append(el)
                }
            }
            return .array(l)
        default:
            return applied
        }
    }

    /// Whether two paths overlap (one is a prefix of the other).
    static func overlaps(_ a: FieldPath, _ b: FieldPath) -> Bool {
        let n = min(a.count, b.count)
        return Array(a.prefix(n)) == Array(b.prefix(n))
    }

    static func render(_ path: FieldPath) -> String {
        path.map { el -> String in
            switch el {
            case .field(let f): return ".\(f)"
            case .key(let k):
                return "["
                    + k.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.stringValue ?? $0.value.serializedString())" }.joined(separator: ",")
                    + "]"
            }
        }.joined()
    }

    // MARK: FieldsV1

    static func encode(_ paths: Set<FieldPath>) -> JSONValue {
        var root: JSONValue = .object([:])
        for p in paths {
            var keys: [String] = []
            for el in p {
                switch el {
                case .field(let f): keys.append("f:" + f)
                case .key(let k): keys.append("k:" + JSONValue.object(k).serializedString())
                }
            }
            insert(&root, keys[...], isElement: { if case .key = p.last { return true } else { return false } }())
        }
        return root
    }

    private static func insert(_ node: inout JSONValue, _ keys: ArraySlice<String>, isElement: Bool) {
        guard let first = keys.first else {
            if isElement { node["."] = .object([:]) }
            return
        }
        var child = node[first] ?? .object([:])
        insert(&child, keys.dropFirst(), isElement: isElement)
        node[first] = child
    }

    static func decode(_ fields: JSONValue) -> Set<FieldPath> {
        var out = Set<FieldPath>()
        walk(fields, prefix: [], into: &out)
        return out
    }

    private static func walk(_ node: JSONValue, prefix: FieldPath, into out: inout Set<FieldPath>) {
        guard case .object(let o) = node else { return }
        if o.isEmpty || o["."] != nil, !prefix.isEmpty { out.insert(prefix) }
        for (k, v) in o where k != "." {
            if k.hasPrefix("f:") {
                walk(v, prefix: prefix + [.field(String(k.dropFirst(2)))], into: &out)
            } else if k.hasPrefix("k:"), let key = try? JSONValue.parse(String(k.dropFirst(2))).objectValue {
                walk(v, prefix: prefix + [.key(key)], into: &out)
            } else if k.hasPrefix("v:") {
                out.insert(prefix)
            }
        }
    }

    /// A managedFields entry.
    struct Entry: Sendable {
        var manager: String
        var operation: String
        var apiVersion: String
        var time: String
        var subresource: String?
        var paths: Set<FieldPath>

        init(manager: String, operation: String, apiVersion: String, time: String, subresource: String?, paths: Set<FieldPath>) {
            self.manager = manager
            self.operation = operation
            self.apiVersion = apiVersion
            self.time = time
            self.subresource = subresource
            self.paths = paths
        }

        init?(_ json: JSONValue) {
            guard let m = json["manager"]?.stringValue, let op = json["operation"]?.stringValue else { return nil }
            manager = m
            operation = op
            apiVersion = json["apiVersion"]?.stringValue ?? ""
            time = json["time"]?.stringValue ?? ""
            subresource = json["subresource"]?.stringValue
            paths = json["fieldsV1"].map(ManagedFields.decode) ?? []
        }

        var json: JSONValue {
            var o: JSONObject = [
                "manager": .string(manager), "operation": .string(operation), "apiVersion": .string(apiVersion),
                "time": .string(time), "fieldsType": "FieldsV1", "fieldsV1": ManagedFields.encode(paths),
            ]
            if let subresource { o["subresource"] = .string(subresource) }
            return .object(o)
        }
    }

    static func entries(of object: JSONValue) -> [Entry] {
        (object[path: "metadata", "managedFields"]?.arrayValue ?? []).compactMap(Entry.init)
    }

    static func setEntries(_ entries: [Entry], on object: inout JSONValue) {
        let kept = entries.filter { !$0.paths.isEmpty }
        object[path: "metadata", "managedFields"] = kept.isEmpty ? nil : .array(kept.map(\.json))
    }

    /// Paths that differ between two versions of an object (what an update changed).
    static func changedLeaves(from old: JSONValue?, to new: JSONValue, schema: StructuralSchema?, builtin: [String: [String]]) -> Set<FieldPath> {
        let newLeaves = leaves(of: ownedPart(new), schema: schema, builtin: builtin)
        guard let old else { return newLeaves }
        let oldPart = ownedPart(old)
        return newLeaves.filter { value(at: $0, in: oldPart) != value(at: $0, in: ownedPart(new)) }
    }

    /// The part of an object whose fields are tracked: everything but identity and server-set metadata.
    static func ownedPart(_ object: JSONValue) -> JSONValue {
        var o = object
        o["apiVersion"] = nil
        o["kind"] = nil
        if case .object(var meta)? = o["metadata"] {
            for k in [
                "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                "managedFields", "selfLink", "generateName",
            ] {
                meta.removeValue(forKey: k)
            }
            o["metadata"] = meta.isEmpty ? nil : .object(meta)
        }
        return o
    }
}
