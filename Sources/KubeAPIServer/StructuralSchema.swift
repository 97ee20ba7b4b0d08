import Foundation
import KubeModels

/// A CRD's `openAPIV3Schema` in structural form: validates, defaults and prunes objects the way
/// apiextensions-apiserver does. CEL rules (`x-kubernetes-validations`) are not evaluated.
final class StructuralSchema: Sendable {
    let type: String?
    let properties: [String: StructuralSchema]
    let additionalProperties: StructuralSchema?
    let additionalPropertiesAllowed: Bool
    let items: StructuralSchema?
    let required: [String]
    let enumValues: [JSONValue]?
    let pattern: NSRegularExpression?
    let patternText: String?
    let minimum: Double?
    let maximum: Double?
    let exclusiveMinimum: Bool
    let exclusiveMaximum: Bool
    let minLength: Int?
    let maxLength: Int?
    let minItems: Int?
    let maxItems: Int?
    let minProperties: Int?
    let maxProperties: Int?
    let nullable: Bool
    let defaultValue: JSONValue?
    let format: String?
    let preserveUnknownFields: Bool
    let intOrString: Bool
    let embeddedResource: Bool
    let listType: String?
    let listMapKeys: [String]
    let description: String?
    let raw: JSONValue

    init(_ json: JSONValue) {
        raw = json
        type = json["type"]?.stringValue
        var props: [String: StructuralSchema] = [:]
        for (k, v) in json["properties"]?.objectValue ?? [:] { props[k] = StructuralSchema(v) }
        properties = props
        switch json["additionalProperties"] {
        case .object(let o)?:
            additionalProperties = StructuralSchema(.object(o))
            additionalPropertiesAllowed = true
        case .bool(let b)?:
            additionalProperties = nil
            additionalPropertiesAllowed = b
        default:
            additionalProperties = nil
            additionalPropertiesAllowed = false
        }
        items = json["items"].map { StructuralSchema($0) }
        required = json["required"]?.arrayValue?.compactMap(\.stringValue) ?? []
        enumValues = json["enum"]?.arrayValue
        patternText = json["pattern"]?.stringValue
        pattern = patternText.flatMap { try? NSRegularExpression(pattern: Self.re2Anchors($0)) }
        minimum = json["minimum"]?.doubleValue
        maximum = json["maximum"]?.doubleValue
        exclusiveMinimum = json["exclusiveMinimum"]?.boolValue ?? false
        exclusiveMaximum = json["exclusiveMaximum"]?.boolValue ?? false
        minLength = json["minLength"]?.intValue.map(Int.init)
        maxLength = json["maxLength"]?.intValue.map(Int.init)
        minItems = json["minItems"]?.intValue.map(Int.init)
        maxItems = json["maxItems"]?.intValue.map(Int.init)
        minProperties = json["minProperties"]?.intValue.map(Int.init)
        maxProperties = json["maxProperties"]?.intValue.map(Int.init)
        nullable = json["nullable"]?.boolValue ?? false
        defaultValue = json["default"]
        format = json["format"]?.stringValue
        preserveUnknownFields = json["x-kubernetes-preserve-unknown-fields"]?.boolValue ?? false
        intOrString = json["x-kubernetes-int-or-string"]?.boolValue ?? false
        embeddedResource = json["x-kubernetes-embedded-resource"]?.boolValue ?? false
        listType = json["x-kubernetes-list-type"]?.stringValue
        listMapKeys = json["x-kubernetes-list-map-keys"]?.arrayValue?.compactMap(\.stringValue) ?? []
        description = json["description"]?.stringValue
    }

    /// Whether unknown keys of an object at this node are kept.
    var keepsUnknown: Bool { preserveUnknownFields || additionalPropertiesAllowed }

    // MARK: Defaulting and pruning

    /// Applies defaults and removes fields the schema does not declare. Returns the pruned field paths.
    func defaultAndPrune(_ value: inout JSONValue, path: String, pruned: inout [String]) {
        switch value {
        case .object(var o):
            for (k, s) in properties where o[k] == nil {
                if let d = s.defaultValue { o[k] = d }
            }
            for k in Array(o.keys) {
                let childPath = path.isEmpty ? k : "\(path).\(k)"
                if let s = properties[k] {
                    var child = o[k]!
                    if child.isNull, s.nullable == false, let d = s.defaultValue {
                        child = d
                    }
                    s.defaultAndPrune(&child, path: childPath, pruned: &pruned)
                    o[k] = child
                } else if let ap = additionalProperties {
                    var child = o[k]!
                    ap.defaultAndPrune(&child, path: childPath, pruned: &pruned)
                    o[k] = child
                } else if embeddedResource && ["apiVersion", "kind", "metadata"].contains(k) {
                    continue
                } else if !keepsUnknown {
                    o.removeValue(forKey: k)
                    pruned.append(childPath)
                }
            }
            value = .object(o)
        case .array(var a):
            guard let items else { return }
            for i in a.indices {
                items.defaultAndPrune(&a[i], path: "\(path)[\(i)]", pruned: &pruned)
            }
            value = .array(a)
        default:
            return
        }
    }

    // MARK: Validation

    func validate(_ value: JSONValue, path: String, errors: inout [StatusCause]) {
        if value.isNull {
            if nullable || (type == nil && (preserveUnknownFields || intOrString)) { return }
            if type != nil {
                errors.append(invalid(path, value, "\(path) in body must be of type \(type!): \"null\"", reason: "FieldValueTypeInvalid"))
            }
            return
        }
        if intOrString {
            switch value {
            case .int, .string: break
            default:
                errors.append(
                    invalid(path, value, "\(path) in body must be of type integer or string: \"\(value.typeName)\"", reason: "FieldValueTypeInvalid"))
                return
            }
        } else if let type, !Self.matches(type: type, value) {
            errors.append(invalid(path, value, "\(path) in body must be of type \(type): \"\(value.typeName)\"", reason: "FieldValueTypeInvalid"))
            return
        }
        if let enumValues, !enumValues.contains(value) {
            let supported = enumValues.map { $0.serializedString() }.joined(separator: ", ")
            errors.append(
                StatusCause(
                    reason: "FieldValueNotSupported", message: "Unsupported value: \(value.serializedString()): supported values: \(supported)",
                    field: path))
        }
        switch value {
        case .string(let s):
            if let maxLength, s.unicodeScalars.count > maxLength {
                errors.append(StatusCause(reason: "FieldValueTooLong", message: "Too long: may not be more than \(maxLength) bytes", field: path))
            }
            if let minLength, s.unicodeScalars.count < minLength {
                errors.append(invalid(path, value, "\(path) in body should be at least \(minLength) chars long"))
            }
            if let pattern, let patternText,
                pattern.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) == nil
            {
                errors.append(invalid(path, value, "\(path) in body should match '\(patternText)'"))
            }
            if format == "date-time", KubeTime.parse(s) == nil {
                errors.append(invalid(path, value, "\(path) in body must be of type date-time: \"\(s)\""))
            }
        case .int, .double:
            let d = value.doubleValue!
            if let maximum {
                if exclusiveMaximum ? d >= maximum : d > maximum {
                    errors.append(
                        invalid(path, value, "\(path) in body should be less than \(exclusiveMaximum ? "" : "or equal to ")\(Self.number(maximum))"))
                }
            }
            if let minimum {
                if exclusiveMinimum ? d <= minimum : d < minimum {
                    errors.append(
                        invalid(
                            path, value, "\(path) in body should be greater than \(exclusiveMinimum ? "" : "or equal to ")\(Self.number(minimum))"))
                }
            }
        case .array(let a):
            if let maxItems, a.count > maxItems {
                errors.append(
                    StatusCause(reason: "FieldValueTooMany", message: "Too many: \(a.count): must have at most \(maxItems) items", field: path))
            }
            if let minItems, a.count < minItems {
                errors.append(invalid(path, value, "\(path) in body should have at least \(minItems) items"))
            }
            if let items {
                for (i, v) in a.enumerated() { items.validate(v, path: "\(path)[\(i)]", errors: &errors) }
            }
            if listType == "set" {
                var seen = Set<JSONValue>()
                for (i, v) in a.enumerated() where !seen.insert(v).inserted {
                    errors.append(
                        StatusCause(reason: "FieldValueDuplicate", message: "Duplicate value: \(v.serializedString())", field: "\(path)[\(i)]"))
                }
            } else if listType == "map", !listMapKeys.isEmpty {
                var seen = Set<[JSONValue]>()
                for (i, v) in a.enumerated() {
                    let key = listMapKeys.map { v[$0] ?? .null }
                    if !seen.insert(key).inserted {
                        let desc = zip(listMapKeys, key).map { "\"\($0)\":\($1.serializedString())" }.joined(separator: ",")
                        errors.append(
                            StatusCause(
                                reason: "FieldValueDuplicate", message: "Duplicate value: map[string]interface {}{\(desc)}", field: "\(path)[\(i)]"))
                    }
                }
            }
        case .object(let o):
            for r in required where o[r] == nil {
                errors.append(StatusCause(reason: "FieldValueRequired", message: "Required value", field: path.isEmpty ? r : "\(path).\(r)"))
            }
            if let maxProperties, o.count > maxProperties {
                errors.append(
                    StatusCause(reason: "FieldValueTooMany", message: "Too many: \(o.count): must have at most \(maxProperties) items", field: path))
            }
            if let minProperties, o.count < minProperties {
                errors.append(invalid(path, value, "\(path) in body should have at least \(minProperties) properties"))
            }
            for k in o.keys.sorted() {
                let childPath = path.isEmpty ? k : "\(path).\(k)"
                if let s = properties[k] {
                    s.validate(o[k]!, path: childPath, errors: &errors)
                } else if let ap = additionalProperties {
                    ap.validate(o[k]!, path: childPath, errors: &errors)
                }
            }
        default:
            break
        }
    }

    static func number(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
    }

    static func matches(type: String, _ value: JSONValue) -> Bool {
        switch (type, value) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("integer", .int),
            ("number", .int), ("number", .double):
            return true
        case ("integer", .double(let d)):
            return d == d.rounded()
        default:
            return false
        }
    }

    func invalid(_ path: String, _ value: JSONValue, _ detail: String, reason: String = "FieldValueInvalid") -> StatusCause {
        StatusCause(reason: reason, message: "Invalid value: \(Self.render(value)): \(detail)", field: path)
    }

    static func render(_ value: JSONValue) -> String {
        switch value {
        case .object, .array: return "\"\(value.typeName)\""
        default: return value.serializedString()
        }
    }

    /// The schema node at a dotted path (for list-map lookups during server-side apply).
    func child(_ key: String) -> StructuralSchema? {
        properties[key] ?? additionalProperties
    }
}

extension StructuralSchema {
    /// kube-apiserver matches `pattern` with Go's RE2, where `$` (without the m flag) is the end of the text; in
    /// ICU it also matches before a final newline, so `^a$` would accept "a\n". Unescaped `$` outside a
    /// character class becomes `\z`.
    static func re2Anchors(_ pattern: String) -> String {
        var out = ""
        var escaped = false, inClass = false
        for ch in pattern {
            if escaped { out.append(ch); escaped = false; continue }
            switch ch {
            case "\\": escaped = true; out.append(ch)
            case "[": inClass = true; out.append(ch)
            case "]": inClass = false; out.append(ch)
            case "$" where !inClass: out += "\\z"
            default: out.append(ch)
            }
        }
        return out
    }
}
