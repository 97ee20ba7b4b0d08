import Foundation
import KubeModels

/// `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`: the columns kubectl prints. Custom resources get
/// `Name` plus the CRD's printer columns (`Age` only when the CRD declares it, as kube-apiserver does).
enum TableConvertor {
    static func columns(for r: ServedResource, version: String) -> [PrinterColumn] {
        let nameColumn = PrinterColumn(
            name: "Name", type: "string", format: "name",
            description:
                "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
            priority: 0, jsonPath: ".metadata.name")
        let age = PrinterColumn(
            name: "Age", type: "date", format: nil,
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.", priority: 0,
            jsonPath: ".metadata.creationTimestamp")
        if r.isCustom {
            let custom = r.columns[version] ?? []
            return [nameColumn] + (custom.isEmpty ? [age] : custom)
        }
        switch r.kind {
        case "Namespace":
            return [
                nameColumn,
                PrinterColumn(
                    name: "Status", type: "string", format: nil, description: "The status of the namespace", priority: 0, jsonPath: ".status.phase"),
                age,
            ]
        case "ConfigMap":
            return [
                nameColumn,
                PrinterColumn(name: "Data", type: "string", format: nil, description: "Number of data items", priority: 0, jsonPath: "#data"), age,
            ]
        case "Secret":
            return [
                nameColumn,
                PrinterColumn(name: "Type", type: "string", format: nil, description: "The type of the secret", priority: 0, jsonPath: ".type"),
                PrinterColumn(name: "Data", type: "string", format: nil, description: "Number of data items", priority: 0, jsonPath: "#data"), age,
            ]
        case "Lease":
            return [
                nameColumn,
                PrinterColumn(
                    name: "Holder", type: "string", format: nil, description: "The holder of the lease", priority: 0, jsonPath: ".spec.holderIdentity"
                ), age,
            ]
        default:
            return [nameColumn, age]
        }
    }

    static func table(
        _ objects: [JSONValue], resource r: ServedResource, version: String, listMeta: JSONValue, includeObject: String, withColumns: Bool = true
    ) -> JSONValue {
        let cols = columns(for: r, version: version)
        let now = Date()
        let rows: [JSONValue] = objects.map { o in
            var row: JSONObject = ["cells": .array(cols.map { cell($0, o, now: now) })]
            switch includeObject {
            case "None": break
            case "Object": row["object"] = o
            default:
                row["object"] = [
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"] ?? [:],
                ]
            }
            return .object(row)
        }
        var t: JSONObject = ["kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": listMeta, "rows": .array(rows)]
        if withColumns {
            t["columnDefinitions"] = .array(
                cols.map { c in
                    var d: JSONObject = [
                        "name": .string(c.name), "type": .string(c.type == "date" && !r.isCustom ? "string" : c.type),
                        "format": .string(c.format ?? ""), "description": .string(c.description), "priority": .int(Int64(c.priority)),
                    ]
                    if c.type == "date" { d["format"] = "" }
                    return .object(d)
                })
        }
        return .object(t)
    }

    static func cell(_ c: PrinterColumn, _ o: JSONValue, now: Date) -> JSONValue {
        if c.jsonPath == "#data" {
            return .int(Int64((o["data"]?.objectValue?.count ?? 0) + (o["binaryData"]?.objectValue?.count ?? 0)))
        }
        let values = JSONPathLite.evaluate(c.jsonPath, on: o)
        guard let first = values.first else { return c.type == "date" ? "<unknown>" : .null }
        if c.type == "date", let s = first.stringValue, let d = KubeTime.parse(s) {
            return .string(humanDuration(now.timeIntervalSince(d)))
        }
        if values.count > 1 { return .string(values.map { $0.stringValue ?? $0.serializedString() }.joined(separator: ",")) }
        switch (c.type, first) {
        case ("string", .string), ("integer", .int), ("number", .int), ("number", .double), ("boolean", .bool): return first
        case ("string", _): return .string(first.serializedString())
        default: return first
        }
    }

    /// k8s.io/apimachinery/pkg/util/duration.HumanDuration.
    static func humanDuration(_ interval: TimeInterval) -> String {
        let seconds = Int(interval)
        if seconds < -1 { return "<invalid>" }
        if seconds < 0 { return "0s" }
        if seconds < 120 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 10 { return seconds % 60 == 0 ? "\(minutes)m" : "\(minutes)m\(seconds % 60)s" }
        if minutes < 180 { return "\(minutes)m" }
        let hours = minutes / 60
        if hours < 8 { return minutes % 60 == 0 ? "\(hours)h" : "\(hours)h\(minutes % 60)m" }
        if hours < 48 { return "\(hours)h" }
        if hours < 192 { return hours % 24 == 0 ? "\(hours / 24)d" : "\(hours / 24)d\(hours % 24)h" }
        if hours < 24 * 365 * 2 { return "\(hours / 24)d" }
        return "\(hours / 24 / 365)y"
    }
}

/// The JSONPath subset printer columns use: `.a.b`, `[N]`, `[*]`, `[?(@.k=="v")]`.
enum JSONPathLite {
    static func evaluate(_ path: String, on root: JSONValue) -> [JSONValue] {
        var p = path.trimmingCharacters(in: .whitespaces)
        if p.hasPrefix("{") && p.hasSuffix("}") { p = String(p.dropFirst().dropLast()) }
        if p.hasPrefix("$") { p.removeFirst() }
        var current: [JSONValue] = [root]
        var i = p.startIndex
        while i < p.endIndex, !current.isEmpty {
            let c = p[i]
            if c == "." {
                i = p.index(after: i)
                let start = i
                while i < p.endIndex, p[i] != ".", p[i] != "[" { i = p.index(after: i) }
                let key = String(p[start..<i])
                if key.isEmpty { continue }
                current = current.compactMap { $0[key] }
            } else if c == "[" {
                guard let close = p[i...].firstIndex(of: "]") else { return [] }
                var inner = String(p[p.index(after: i)..<close])
                i = p.index(after: close)
                if inner == "*" {
                    current = current.flatMap { $0.arrayValue ?? Array(($0.objectValue ?? [:]).values) }
                } else if let n = Int(inner) {
                    current = current.compactMap { v in
                        guard let a = v.arrayValue else { return nil }
                        let idx = n < 0 ? a.count + n : n
                        return a.indices.contains(idx) ? a[idx] : nil
                    }
                } else if inner.hasPrefix("?(") && inner.hasSuffix(")") {
                    inner = String(inner.dropFirst(2).dropLast())
                    let parts = inner.components(separatedBy: "==")
                    guard parts.count == 2 else { return [] }
                    let field = parts[0].trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "@.", with: "")
                    var expected = parts[1].trimmingCharacters(in: .whitespaces)
                    if expected.hasPrefix("\"") || expected.hasPrefix("'") { expected = String(expected.dropFirst().dropLast()) }
                    current = current.flatMap { v in
                        (v.arrayValue ?? []).filter { el in
                            let got = evaluate("." + field, on: el).first
                            return got?.stringValue == expected || got.map { $0.serializedString() == expected } == true
                        }
                    }
                } else {
                    return []
                }
            } else {
                return []
            }
        }
        return current
    }
}
