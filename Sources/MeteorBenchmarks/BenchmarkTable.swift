import Foundation
import KubeModels

/// The table BENCHMARKS.md carries: one row per scenario, with the machine, date and command above it.
public enum BenchmarkTable {
    public static func markdown(_ results: [JSONValue], command: String, date: Date = Date()) -> String {
        var out = "Machine: \(machine()). Date: \(KubeTime.format(date)). Command: `\(command)`\n\n"
        out += "| scenario | count | seconds | figures |\n| --- | --- | --- | --- |\n"
        for r in results {
            let skip: Set<String> = ["scenario", "count", "seconds"]
            let figures = (r.objectValue ?? [:]).filter { !skip.contains($0.key) }.sorted { $0.key < $1.key }.map { "\($0.key) \(text($0.value))" }
                .joined(separator: ", ")
            out += "| \(r["scenario"]?.stringValue ?? "") | \(text(r["count"] ?? .null)) | \(text(r["seconds"] ?? .null)) | \(figures) |\n"
        }
        return out
    }

    static func text(_ v: JSONValue) -> String {
        if let s = v.stringValue { return s }
        if let o = v.objectValue { return o.sorted { $0.key < $1.key }.map { "\($0.key) \(text($0.value))" }.joined(separator: " ") }
        return v.serializedString()
    }

    static func machine() -> String {
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }.map {
                $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces)
            } ?? "unknown CPU"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let memory =
            meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }.flatMap {
                Double($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
            }.map { $0 / 1024 } ?? 0
        let cores = ProcessInfo.processInfo.activeProcessorCount
        return "Linux \(release), \(cores) cores (\(model))" + (memory > 0 ? ", \(Int(memory / 1024)) GiB" : "")
    }
}
