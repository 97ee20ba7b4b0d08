import Foundation
import Yams

/// YAML documents as JSON values, with YAML 1.1 scalars resolved the way Kubernetes' YAML reader resolves them.
public enum YAML {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var message: String
        public var description: String { message }
    }

    /// Every non-empty document of a multi-document stream (`---` separated).
    public static func parseAll(_ text: String) throws -> [JSONValue] {
        do {
            var docs: [JSONValue] = []
            for node in try Yams.compose_all(yaml: text) {
                let v = try convert(node)
                if !v.isNull { docs.append(v) }
            }
            return docs
        } catch let e as Error {
            throw e
        } catch {
            throw Error(message: "error converting YAML to JSON: \(error)")
        }
    }

    public static func parse(_ text: String) throws -> JSONValue {
        do {
            guard let node = try Yams.compose(yaml: text) else { return .null }
            return try convert(node)
        } catch let e as Error {
            throw e
        } catch {
            throw Error(message: "error converting YAML to JSON: \(error)")
        }
    }

    static func convert(_ node: Node) throws -> JSONValue {
        switch node {
        case .scalar(let scalar):
            // Quoted scalars are strings; plain ones resolve to null, bool, int or float when they look like one.
            if scalar.style != .plain { return .string(scalar.string) }
            if node.null != nil { return .null }
            if let b = node.bool { return .bool(b) }
            if let i = node.int { return .int(Int64(i)) }
            if let d = node.float { return .double(d) }
            return .string(scalar.string)
        case .mapping(let mapping):
            var o: JSONObject = [:]
            for (k, v) in mapping {
                guard case .scalar(let ks) = k else { throw Error(message: "error converting YAML to JSON: mapping keys must be scalars") }
                o[ks.string] = try convert(v)
            }
            return .object(o)
        case .sequence(let seq):
            return .array(try seq.map(convert))
        case .alias:
            throw Error(message: "error converting YAML to JSON: unresolved alias")
        }
    }

    /// Renders a JSON value as YAML (block style, keys in the same stable order as JSON output).
    public static func render(_ value: JSONValue) -> String {
        var out = ""
        renderValue(value, indent: 0, into: &out, inList: false)
        return out
    }

    static func scalarText(_ v: JSONValue) -> String? {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double: return v.serializedString()
        case .string(let s):
            if s.isEmpty { return "\"\"" }
            let plain =
                s.range(of: #"\A[A-Za-z_./][A-Za-z0-9_./ -]*\z"#, options: .regularExpression) != nil
                && !s.hasSuffix(" ")
                && !["true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"].contains(s.lowercased())
            return plain ? s : yamlQuoted(s)
        case .array(let a) where a.isEmpty: return "[]"
        case .object(let o) where o.isEmpty: return "{}"
        default: return nil
        }
    }

    /// A double-quoted YAML scalar: JSON's escaping plus the characters YAML treats as line breaks or forbids
    /// unescaped (DEL, C1 controls, U+2028/U+2029 line and paragraph separators, U+FEFF), which JSON leaves raw.
    static func yamlQuoted(_ s: String) -> String {
        var out = ""
        for scalar in JSONValue.string(s).serializedString().unicodeScalars {
            switch scalar.value {
            case 0x7F, 0x80...0x9F, 0x2028, 0x2029, 0xFEFF: out += String(format: "\\u%04X", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func renderValue(_ value: JSONValue, indent: Int, into out: inout String, inList: Bool) {
        let pad = String(repeating: "  ", count: indent)
        switch value {
        case .object(let o) where !o.isEmpty:
            for (i, k) in JSONValue.orderedKeys(o).enumerated() {
                let prefix = (inList && i == 0) ? "" : pad
                let v = o[k]!
                // Keys are quoted by the same rule as string values (`#`, `: `, `true`… would change meaning).
                let key = scalarText(.string(k))!
                if let s = scalarText(v) {
                    out += "\(prefix)\(key): \(s)\n"
                } else {
                    out += "\(prefix)\(key):\n"
                    renderValue(v, indent: v.arrayValue != nil ? indent : indent + 1, into: &out, inList: false)
                }
            }
        case .array(let a) where !a.isEmpty:
            for v in a {
                if let s = scalarText(v) {
                    out += "\(pad)- \(s)\n"
                } else {
                    out += "\(pad)- "
                    renderValue(v, indent: indent + 1, into: &out, inList: true)
                }
            }
        default:
            out += pad + (scalarText(value) ?? "") + "\n"
        }
    }
}
