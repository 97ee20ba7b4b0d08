import KubeModels

/// Strategic merge patch for built-in kinds, reduced to what kubectl sends: a merge patch whose lists with a
/// merge key are merged element by element, and whose `$patch`, `$retainKeys`, `$setElementOrder` and
/// `$deleteFromPrimitiveList` directives are honoured or dropped.
enum StrategicMerge {
    static func toMergePatch(_ patch: JSONValue, original: JSONValue, listMapKeys: [String: [String]], path: [String] = []) -> JSONValue {
        guard case .object(let p) = patch else { return patch }
        if p["$patch"]?.stringValue == "replace" {
            var o = p
            o.removeValue(forKey: "$patch")
            return .object(o)
        }
        if p["$patch"]?.stringValue == "delete" { return .null }
        var out: JSONObject = [:]
        for (k, v) in p {
            if k.hasPrefix("$setElementOrder/") || k == "$retainKeys" || k == "$patch" { continue }
            if k.hasPrefix("$deleteFromPrimitiveList/") {
                let field = String(k.dropFirst("$deleteFromPrimitiveList/".count))
                let remove = Set(v.arrayValue ?? [])
                let current = (out[field] ?? original[field])?.arrayValue ?? []
                out[field] = .array(current.filter { !remove.contains($0) })
                continue
            }
            let childPath = path + [k]
            if case .array(let items) = v, let keys = listMapKeys[childPath.joined(separator: ".")] {
                var merged = original[k]?.arrayValue ?? []
                for item in items {
                    let idx = merged.firstIndex { m in keys.allSatisfy { m[$0] == item[$0] } }
                    if item["$patch"]?.stringValue == "delete" {
                        if let idx { merged.remove(at: idx) }
                    } else if let idx {
                        merged[idx] = MergePatch.apply(item, to: merged[idx])
                    } else {
                        merged.append(item)
                    }
                }
                out[k] = .array(merged)
            } else if case .object = v {
                out[k] = toMergePatch(v, original: original[k] ?? .null, listMapKeys: listMapKeys, path: childPath)
            } else {
                out[k] = v
            }
        }
        return .object(out)
    }
}
