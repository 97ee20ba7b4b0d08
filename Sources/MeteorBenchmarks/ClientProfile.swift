import Foundation
import KubeModels

/// Where a scenario's time went on the wire, from the operator's own `/metrics` and the server's: request latency
/// by verb (p50/p99 from the histogram's buckets, interpolated as Prometheus's `histogram_quantile`), mean requests
/// in flight (Little's law: total request time ÷ wall time), 429s the operator was answered (the server's priority
/// and fairness), and the server's own APF rejections.
struct ClientProfile {
    /// One Prometheus text exposition, parsed into samples.
    struct Exposition {
        var samples: [(name: String, labels: [String: String], value: Double)] = []

        init(_ text: String) {
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
                let head = line[..<space]
                guard let brace = head.firstIndex(of: "{") else {
                    samples.append((String(head), [:], value))
                    continue
                }
                var labels: [String: String] = [:]
                for pair in head[head.index(after: brace)...].dropLast().split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { labels[String(kv[0])] = String(kv[1].dropFirst().dropLast()) }
                }
                samples.append((String(head[..<brace]), labels, value))
            }
        }

        func sum(_ name: String, where match: ([String: String]) -> Bool = { _ in true }) -> Double {
            samples.filter { $0.name == name && match($0.labels) }.map(\.value).reduce(0, +)
        }

        /// A histogram's cumulative buckets (upper bound → count), sum and count, per value of `label`.
        func histograms(_ name: String, by label: String) -> [String: Histogram] {
            var out: [String: Histogram] = [:]
            for s in samples {
                guard let key = s.labels[label] else { continue }
                if s.name == name + "_bucket", let le = s.labels["le"] {
                    out[key, default: Histogram()].buckets[le == "+Inf" ? .infinity : Double(le) ?? .infinity, default: 0] += s.value
                } else if s.name == name + "_sum" {
                    out[key, default: Histogram()].sum += s.value
                } else if s.name == name + "_count" {
                    out[key, default: Histogram()].count += s.value
                }
            }
            return out
        }
    }

    struct Histogram {
        var buckets: [Double: Double] = [:]
        var sum = 0.0
        var count = 0.0

        /// What was observed after `earlier`.
        func since(_ earlier: Histogram?) -> Histogram {
            guard let earlier else { return self }
            var d = Histogram(sum: sum - earlier.sum, count: count - earlier.count)
            for (le, n) in buckets { d.buckets[le] = n - (earlier.buckets[le] ?? 0) }
            return d
        }

        /// The q-quantile in seconds, linearly interpolated within its bucket (`histogram_quantile`).
        func quantile(_ q: Double) -> Double? {
            let sorted = buckets.sorted { $0.key < $1.key }
            guard count > 0, let total = sorted.last?.value, total > 0 else { return nil }
            let rank = q * total
            var lower = 0.0, below = 0.0
            for (le, cumulative) in sorted {
                if cumulative >= rank {
                    if le == .infinity { return lower }
                    let inBucket = cumulative - below
                    return inBucket > 0 ? lower + (le - lower) * (rank - below) / inBucket : le
                }
                lower = le
                below = cumulative
            }
            return lower
        }
    }

    /// The operator's client figures between two scrapes of its `/metrics`, over `seconds` of wall time.
    static func between(_ before: String, _ after: String, seconds: Double) -> JSONValue {
        let b = Exposition(before), a = Exposition(after)
        let latency = "rest_client_request_duration_seconds"
        let earlier = b.histograms(latency, by: "verb")
        var byVerb: JSONObject = [:]
        var busy = 0.0
        for (verb, h) in a.histograms(latency, by: "verb").sorted(by: { $0.key < $1.key }) {
            let d = h.since(earlier[verb])
            guard d.count > 0 else { continue }
            busy += d.sum
            func ms(_ s: Double?) -> JSONValue { s.map { .double(($0 * 10_000).rounded() / 10) } ?? .null }
            byVerb[verb] = ["requests": .int(Int64(d.count)), "p50_ms": ms(d.quantile(0.5)), "p99_ms": ms(d.quantile(0.99))]
        }
        let requests = "rest_client_requests_total"
        let throttled = a.sum(requests) { $0["code"] == "429" } - b.sum(requests) { $0["code"] == "429" }
        return [
            "latency_by_verb": .object(byVerb),
            "mean_in_flight": .double(seconds > 0 ? (busy / seconds * 10).rounded() / 10 : 0),
            "answered_429": .int(Int64(throttled)),
        ]
    }
}
