/// The patch formats kube-apiserver accepts, by content type.
public enum PatchType: String, Sendable, CaseIterable {
    case merge = "application/merge-patch+json"
    case json = "application/json-patch+json"
    case strategicMerge = "application/strategic-merge-patch+json"
    case apply = "application/apply-patch+yaml"
}

/// RFC 7386 JSON merge patch.
public enum MergePatch {
    public static func apply(_ patch: JSONValue, to target: JSONValue) -> JSONValue {
        guard case .object(let patchObject) = patch else { return patch }
        var result: JSONObject = target.objectValue ?? [:]
        for (key, value) in patchObject {
            if case .null = value {
                result.removeValue(forKey: key)
            } else {
                result[key] = apply(value, to: result[key] ?? .null)
            }
        }
        return .object(result)
    }

    /// The merge patch that turns `original` into `modified` (nil when they are equal).
    public static func diff(from original: JSONValue, to modified: JSONValue) -> JSONValue? {
        guard case .object(let o) = original, case .object(let m) = modified else {
            if original == modified { return nil }
            return modified
        }
        var patch: JSONObject = [:]
        for (key, value) in m {
            if let old = o[key] {
                if let d = diff(from: old, to: value) {
                    // A nested null would mean "delete"; a literal null value must replace wholesale.
                    patch[key] = value.isNull ? .null : d
                }
            } else {
                patch[key] = value
            }
        }
        for key in o.keys where m[key] == nil { patch[key] = .null }
        if patch.isEmpty { return nil }
        return .object(patch)
    }
}

/// An RFC 6902 operation failed; `test` failures are reported by kube-apiserver as 422 Invalid, the rest as 422 too.
public struct JSONPatchError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var isTestFailure: Bool
    public var description: String { message }
}

/// RFC 6902 JSON patch.
public enum JSONPatch {
    public static func apply(_ patch: JSONValue, to target: JSONValue) throws -> JSONValue {
        guard case .array(let ops) = patch else {
            throw JSONPatchError(message: "json patch must be an array of operations", isTestFailure: false)
        }
        var doc = target
        for op in ops {
            guard let name = op["op"]?.stringValue else {
                throw JSONPatchError(message: "json patch operation is missing \"op\"", isTestFailure: false)
            }
            guard let path = op["path"]?.stringValue else {
                throw JSONPatchError(message: "json patch operation \(name) is missing \"path\"", isTestFailure: false)
            }
            let tokens = try pointer(path)
            switch name {
            case "add":
                guard let v = op["value"] else { throw missingValue(name) }
                doc = try add(v, at: tokens, in: doc, path: path)
            case "remove":
                doc = try remove(at: tokens, in: doc, path: path).0
            case "replace":
                guard let v = op["value"] else { throw missingValue(name) }
                _ = try get(tokens, in: doc, path: path)
                doc = try remove(at: tokens, in: doc, path: path).0
                doc = try add(v, at: tokens, in: doc, path: path)
            case "move":
                guard let from = op["from"]?.stringValue else { throw missingFrom(name) }
                let (d, v) = try remove(at: try pointer(from), in: doc, path: from)
                doc = try add(v, at: tokens, in: d, path: path)
            case "copy":
                guard let from = op["from"]?.stringValue else { throw missingFrom(name) }
                let v = try get(try pointer(from), in: doc, path: from)
                doc = try add(v, at: tokens, in: doc, path: path)
            case "test":
                guard let v = op["value"] else { throw missingValue(name) }
                let actual = try? get(tokens, in: doc, path: path)
                if actual != v {
                    throw JSONPatchError(message: "testing value \(path) failed: test operation failed", isTestFailure: true)
                }
            default:
                throw JSONPatchError(message: "unexpected json patch operation \(name)", isTestFailure: false)
            }
        }
        return doc
    }

    static func missingValue(_ op: String) -> JSONPatchError {
        JSONPatchError(message: "json patch operation \(op) is missing \"value\"", isTestFailure: false)
    }

    static func missingFrom(_ op: String) -> JSONPatchError {
        JSONPatchError(message: "json patch operation \(op) is missing \"from\"", isTestFailure: false)
    }

    /// Splits an RFC 6901 JSON pointer into unescaped tokens.
    public static func pointer(_ path: String) throws -> [String] {
        if path.isEmpty { return [] }
        guard path.hasPrefix("/") else {
            throw JSONPatchError(message: "invalid json pointer \(path)", isTestFailure: false)
        }
        return path.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
        }
    }

    static func get(_ tokens: [String], in doc: JSONValue, path: String) throws -> JSONValue {
        var current = doc
        for t in tokens {
            switch current {
            case .object(let o):
                guard let v = o[t] else { throw notFound(path) }
                current = v
            case .array(let a):
                guard let i = Int(t), i >= 0, i < a.count else { throw notFound(path) }
                current = a[i]
            default:
                throw notFound(path)
            }
        }
        return current
    }

    static func notFound(_ path: String) -> JSONPatchError {
        JSONPatchError(message: "doc is missing path: \"\(path)\": missing value", isTestFailure: false)
    }

    static func add(_ value: JSONValue, at tokens: [String], in doc: JSONValue, path: String) throws -> JSONValue {
        guard let first = tokens.first else { return value }
        let rest = Array(tokens.dropFirst())
        switch doc {
        case .object(var o):
            if rest.isEmpty {
                o[first] = value
            } else {
                guard let child = o[first] else { throw notFound(path) }
                o[first] = try add(value, at: rest, in: child, path: path)
            }
            return .object(o)
        case .array(var a):
            if rest.isEmpty {
                if first == "-" { a.append(value); return .array(a) }
                guard let i = Int(first), i >= 0, i <= a.count else { throw notFound(path) }
                a.insert(value, at: i)
            } else {
                guard let i = Int(first), i >= 0, i < a.count else { throw notFound(path) }
                a[i] = try add(value, at: rest, in: a[i], path: path)
            }
            return .array(a)
        default:
            throw notFound(path)
        }
    }

    static func remove(at tokens: [String], in doc: JSONValue, path: String) throws -> (JSONValue, JSONValue) {
        guard let first = tokens.first else { throw notFound(path) }
        let rest = Array(tokens.dropFirst())
        switch doc {
        case .object(var o):
            guard let child = o[first] else { throw notFound(path) }
            if rest.isEmpty {
                o.removeValue(forKey: first)
                return (.object(o), child)
            }
            let (newChild, removed) = try remove(at: rest, in: child, path: path)
            o[first] = newChild
            return (.object(o), removed)
        case .array(var a):
            guard let i = Int(first), i >= 0, i < a.count else { throw notFound(path) }
            if rest.isEmpty {
                let removed = a.remove(at: i)
                return (.array(a), removed)
            }
            let (newChild, removed) = try remove(at: rest, in: a[i], path: path)
            a[i] = newChild
            return (.array(a), removed)
        default:
            throw notFound(path)
        }
    }
}
