import ArgumentParser
import Foundation
import Synchronization
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorBenchmarks

@main
struct MeteorBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meteor-bench",
        abstract: "Benchmarks that print numbers, one JSON object per scenario.",
        subcommands: [ScenarioCommand.self, APIServerThroughput.self, WorkQueueThroughput.self, InformerThroughput.self],
        defaultSubcommand: ScenarioCommand.self)
}

/// The operator against the API server's own write ceiling (BENCHMARKS.md).
struct ScenarioCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scenarios",
        abstract: "Operator scenarios: converge (with baseline), steady, pipeline-events, startup.")

    @Option(help: "Scenario to run (repeatable): \(ScenarioOptions.all.joined(separator: ", ")); default all.") var scenario: [String] = []
    @Option(help: "Meteors.") var count = 10_000
    @Option(help: "Concurrent client requests, and the operator's concurrent reconciles.") var concurrency = 32
    @Option(help: "A cluster to run against (with the Meteor and Tekton CRDs); default: the embedded API server.") var kubeconfig: String?
    @Flag(help: "Start a control plane of ../shared/kit (real etcd and kube-apiserver) for the run, with the CRDs installed.") var kit = false
    @Flag(help: "Run the operator as a separate meteor-operator process.") var operatorProcess = false
    @Option(help: "The meteor-operator binary for --operator-process (default: next to meteor-bench).") var operatorBinary: String?
    @Option(help: "Seconds of the steady scenario.") var steadySeconds: Double = 60
    @Flag(help: "Print the BENCHMARKS.md table (machine, date, command) after the JSON lines.") var markdown = false

    func run() async throws {
        var options = ScenarioOptions()
        if !scenario.isEmpty { options.scenarios = scenario }
        options.count = count
        options.concurrency = concurrency
        options.kubeconfig = kubeconfig
        options.kit = kit
        options.steadySeconds = steadySeconds
        if operatorProcess {
            let binary =
                operatorBinary
                ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("meteor-operator").path
            guard FileManager.default.isExecutableFile(atPath: binary) else {
                throw ValidationError("no meteor-operator binary at \(binary) (build it, or pass --operator-binary)")
            }
            options.operatorBinary = binary
        }
        var logger = Logger(label: "meteor-bench")
        logger.logLevel = .warning
        // One line per scenario as it ends, written at once also into a file or pipe (print's buffer would hold a
        // long run's early figures until the end).
        let results = try await Scenarios.run(options, logger: logger) {
            FileHandle.standardOutput.write(Data(($0.serializedString() + "\n").utf8))
        }
        if markdown { print(BenchmarkTable.markdown(results, command: CommandLine.arguments.joined(separator: " "))) }
    }
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
            return d.seconds
        }

        let createSeconds = try await timed(count) { i in
            _ = try await cms.create(
                ConfigMap(
                    metadata: ObjectMeta(name: "bench-\(i)", labels: ["bench": "yes", "shard": "\(i % 10)"]),
                    data: ["index": "\(i)", "payload": String(repeating: "x", count: 200)]))
        }
        let getSeconds = try await timed(count) { i in _ = try await cms.get("bench-\(i)") }
        let patchSeconds = try await timed(count) { i in
            _ = try await cms.patch("bench-\(i)", .merge(["data": ["patched": "true"]]))
        }
        let dynamicStarted = ContinuousClock.now
        _ = try await cms.dynamic.list()
        let dynamicDuration = ContinuousClock.now - dynamicStarted
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
            "list_all_typed_ms": .double((listDuration.seconds * 1000).rounded()),
            "list_all_json_ms": .double((dynamicDuration.seconds * 1000).rounded()),
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

/// Keys through the work queue: adds (with duplicates) and get/done by N workers.
struct WorkQueueThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "workqueue", abstract: "Work queue throughput.")

    @Option(help: "Distinct keys.") var keys = 100_000
    @Option(help: "Workers.") var workers = 4

    func run() async throws {
        let queue = WorkQueue<ObjectKey>()
        let started = ContinuousClock.now
        let total = keys
        await withTaskGroup(of: Int.self) { group in
            group.addTask {
                for i in 0..<total {
                    let k = ObjectKey(namespace: "ns", name: "k\(i)")
                    await queue.add(k)
                    await queue.add(k)
                }
                await queue.shutDown()
                return 0
            }
            for _ in 0..<workers {
                group.addTask {
                    var n = 0
                    while let k = await queue.get() {
                        n += 1
                        await queue.forget(k)
                        await queue.done(k)
                    }
                    return n
                }
            }
            var processed = 0
            for await n in group { processed += n }
            let s = (ContinuousClock.now - started).seconds
            let result: JSONValue = [
                "scenario": "workqueue", "count": .int(Int64(total)), "adds": .int(Int64(total * 2)), "processed": .int(Int64(processed)),
                "workers": .int(Int64(workers)), "seconds": .double((s * 1000).rounded() / 1000),
                "keys_per_second": .double((Double(processed) / s).rounded()),
            ]
            print(result.serializedString())
        }
    }
}

/// Objects through an informer: the initial list into the cache, then watch events delivered to a handler.
struct InformerThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "informer", abstract: "Informer list and watch-event throughput.")

    @Option(help: "Objects listed at start.") var listed = 10_000
    @Option(help: "Objects changed while watching.") var events = 10_000

    func run() async throws {
        let server = try EmbeddedAPIServer()
        try await server.start()
        var options = KubeClient.Options()
        options.qps = 0
        let client = try KubeClient(configuration: ClusterConfiguration(server: URL(string: server.url)!), options: options)
        let cms = client.dynamic(ConfigMap.resourceType, namespace: "default")
        try await parallel(listed) { i in _ = try await cms.create(["metadata": ["name": .string("pre-\(i)")], "data": ["i": .string("\(i)")]]) }
        let informer = DynamicInformer(api: client.dynamic(ConfigMap.resourceType))
        let seen = AsyncStream<Void>.makeStream()
        let target = events
        let counter = Counter()
        await informer.addHandler { e in
            if case .added(let o) = e, o[path: "metadata", "name"]?.stringValue?.hasPrefix("new-") == true {
                if counter.increment() == target { seen.continuation.yield() }
            }
        }
        let listStart = ContinuousClock.now
        let run = Task { await informer.run() }
        await informer.waitForSync()
        let listSeconds = (ContinuousClock.now - listStart).seconds
        let watchStart = ContinuousClock.now
        try await parallel(events) { i in _ = try await cms.create(["metadata": ["name": .string("new-\(i)")]]) }
        for await _ in seen.stream { break }
        let watchSeconds = (ContinuousClock.now - watchStart).seconds
        run.cancel()
        await run.value
        let result: JSONValue = [
            "scenario": "informer", "count": .int(Int64(listed)), "list_sync_seconds": .double((listSeconds * 1000).rounded() / 1000),
            "objects_per_second_listed": .double((Double(listed) / listSeconds).rounded()),
            "events": .int(Int64(events)), "events_per_second_end_to_end": .double((Double(events) / watchSeconds).rounded()),
        ]
        print(result.serializedString())
        try await client.shutdown()
        await server.stop()
    }

    final class Counter: Sendable {
        let value = Mutex(0)
        func increment() -> Int {
            value.withLock {
                $0 += 1; return $0
            }
        }
    }

    func parallel(_ n: Int, width: Int = 32, _ op: @escaping @Sendable (Int) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<min(width, n) { let i = next; next += 1; group.addTask { try await op(i) } }
            while try await group.next() != nil, next < n { let i = next; next += 1; group.addTask { try await op(i) } }
        }
    }
}
