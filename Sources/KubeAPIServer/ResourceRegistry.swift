import Foundation
import KubeModels
import Synchronization

/// The kinds the server serves: built-ins plus whatever established CRDs add.
final class ResourceRegistry: Sendable {
    let resources = Mutex<[String: ServedResource]>([:])

    init() {
        resources.withLock { r in
            for b in ServedResource.builtins { r[b.key] = b }
        }
    }

    func all() -> [ServedResource] {
        resources.withLock { Array($0.values) }.sorted { ($0.group, $0.plural) < ($1.group, $1.plural) }
    }

    func lookup(group: String, version: String, plural: String) -> ServedResource? {
        resources.withLock { r in
            guard let res = r["\(group)/\(plural)"], res.versions.contains(version) else { return nil }
            return res
        }
    }

    func lookup(key: String) -> ServedResource? { resources.withLock { $0[key] } }

    func register(_ r: ServedResource) { resources.withLock { $0[r.key] = r } }

    func unregister(key: String) { _ = resources.withLock { $0.removeValue(forKey: key) } }

    /// Group → versions, for `/apis` and `/api`.
    func groups() -> [(String, [String])] {
        var out: [String: [String]] = [:]
        for r in all() {
            for v in r.versions where !(out[r.group]?.contains(v) ?? false) { out[r.group, default: []].append(v) }
        }
        return out.map { ($0.key, Self.sortVersions($0.value)) }.sorted { $0.0 < $1.0 }
    }

    /// Kubernetes version priority: GA > beta > alpha, higher numbers first.
    static func sortVersions(_ versions: [String]) -> [String] {
        func rank(_ v: String) -> (Int, Int, Int) {
            let scanner = Array(v.dropFirst())
            var major = 0
            var i = 0
            while i < scanner.count, let d = scanner[i].wholeNumberValue { major = major * 10 + d; i += 1 }
            let rest = String(scanner[i...])
            if rest.isEmpty { return (3, major, 0) }
            let level = rest.hasPrefix("beta") ? 2 : rest.hasPrefix("alpha") ? 1 : 0
            let minor = Int(rest.drop(while: { !$0.isNumber })) ?? 0
            return (level, major, minor)
        }
        return versions.sorted { rank($0) > rank($1) }
    }
}
