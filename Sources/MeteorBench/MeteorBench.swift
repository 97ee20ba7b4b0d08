import ArgumentParser
import Foundation
import KubeAPIServer
import KubeClient
import KubeModels

@main
struct MeteorBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meteor-bench",
        abstract: "Benchmarks that print numbers, one JSON object per scenario.",
        subcommands: [APIServerThroughput.self], defaultSubcommand: APIServerThroughput.self)
}

/// How fast the embedded API server takes writes and serves reads over loopback HTTP, with N objects stored.
struct APIServerThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apiserver", abstract: "Embedded API server throughput.")

    @Option(help: "Objects to create.") var count = 10_000
    @Option(help: "Concurrent client requests.") var concurrency = 32
    @Flag(help: "Serve HTTPS (HTTP/2).") var tls = false

    func run() async throws {
        let server = try EmbeddedAPIServer(configuration: .init(tls: tls))
        try await server.start()
        let config = ClusterConfiguration(server: URL(string: server.url)!, caCertificatePEM: server.caCertificatePEM)
        var options = KubeClient.Options()
        options.qps = 0
        let client = try KubeClient(configuration: config, options: options)
        let cms = client.api(ConfigMap.self, namespace: "default")

        func timed(_ n: Int, _ op: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                var next = 0
                for _ in 0..<min(concurrency, n) {
                    let i = next
                    next += 1
                    group.addTask { try await op(i) }
                }
                while try await group.next() != nil, next < n {
                    let i = next
                    next += 1
                    group.addTask { try await op(i) }
                }
            }
            let d = ContinuousClock.now - started
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }

        let createSeconds = try await timed(count) { i in
            _ = try await cms.create(ConfigMap(metadata: ObjectMeta(name: "bench-\(i)", labels: ["bench": "yes", "shard": "\(i % 10)"]), data: ["index": "\(i)", "payload": String(repeating: "x", count: 200)]))
        }
        let getSeconds = try await timed(count) { i in _ = try await cms.get("bench-\(i)") }
        let patchSeconds = try await timed(count) { i in
            _ = try await cms.patch("bench-\(i)", .merge(["data": ["patched": "true"]]))
        }
        let listStarted = ContinuousClock.now
        let all = try await cms.list()
        let listDuration = ContinuousClock.now - listStarted
        let selected = try await cms.list(ListOptions(labelSelector: "shard=3"))
        let rss = Self.residentMiB()
        let result: JSONValue = [
            "scenario": "apiserver", "count": .int(Int64(count)), "concurrency": .int(Int64(concurrency)), "tls": .bool(tls),
            "create_per_second": .double((Double(count) / createSeconds).rounded()),
            "get_per_second": .double((Double(count) / getSeconds).rounded()),
            "patch_per_second": .double((Double(count) / patchSeconds).rounded()),
            "list_all_ms": .double(Double(listDuration.components.attoseconds) / 1e15 + Double(listDuration.components.seconds) * 1000),
            "listed": .int(Int64(all.items.count)), "selected": .int(Int64(selected.items.count)),
            "process_rss_mib": .double(rss),
        ]
        print(result.serializedString())
        try await client.shutdown()
        await server.stop()
    }

    static func residentMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return (kb / 1024).rounded()
    }
}
