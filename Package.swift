// swift-tools-version:6.1
import PackageDescription

// Layers (dependencies point one way):
//   KubeModels      shared wire models: JSON values, ObjectMeta, Status, selectors, watch events
//   KubeClient      Kubernetes API client over AsyncHTTPClient (config, verbs, watch, retries, rate limit)
//   KubeRuntime     controller runtime: informers, work queue, controllers, leader election, metrics, events
//   MeteorCore      the Meteor domain: API types, validation, PipelineRun builder, reconciler, registry and git remotes
//   KubeAPIServer   embedded Kubernetes-compatible API server (tests and sandbox); depends only on KubeModels (and KubeTLS)
//   KubeTLS         a self-signed serving certificate (the embedded server's, the metrics endpoint's)
//   meteor-operator the executable
let package = Package(
    name: "meteor-operator",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "KubeModels", targets: ["KubeModels"]),
        .library(name: "KubeClient", targets: ["KubeClient"]),
        .library(name: "KubeAPIServer", targets: ["KubeAPIServer"]),
        .library(name: "KubeRuntime", targets: ["KubeRuntime"]),
        .library(name: "MeteorCore", targets: ["MeteorCore"]),
        .executable(name: "meteor-operator", targets: ["MeteorOperatorCLI"]),
        .executable(name: "meteor-bench", targets: ["MeteorBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssh.git", from: "0.15.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.4.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.0"),
    ],
    targets: [
        .target(
            name: "KubeModels",
            dependencies: [
                .product(name: "Yams", package: "Yams")
            ]
        ),
        .target(
            name: "KubeClient",
            dependencies: [
                "KubeModels",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "KubeRuntime",
            dependencies: [
                "KubeClient",
                "KubeModels",
                "KubeTLS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "MeteorCore",
            dependencies: [
                "KubeRuntime",
                "KubeClient",
                "KubeModels",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // A self-signed serving certificate, for the embedded server and the metrics endpoint.
        .target(
            name: "KubeTLS",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        .target(
            name: "KubeAPIServer",
            dependencies: [
                "KubeModels",
                "KubeTLS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Sandbox mode: the embedded server, the operator and simulators of Tekton, Argo CD, a registry and git.
        .target(
            name: "MeteorSandbox",
            dependencies: [
                "MeteorShower",
                "KubeAPIServer",
                "KubeClient",
                "KubeModels",
                "KubeRuntime",
                "MeteorCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Meteor Shower: the web page (server-rendered, live over server-sent events from the informer cache).
        .target(
            name: "MeteorShower",
            dependencies: [
                "KubeClient",
                "KubeModels",
                "KubeRuntime",
                "MeteorCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "MeteorOperatorCLI",
            dependencies: [
                "MeteorShower",
                "KubeClient",
                "KubeAPIServer",
                "KubeRuntime",
                "MeteorCore",
                "MeteorSandbox",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The operator-level benchmark scenarios (a library, so tests run them at small N).
        .target(
            name: "MeteorBenchmarks",
            dependencies: [
                "KubeAPIServer",
                "KubeClient",
                "KubeModels",
                "KubeRuntime",
                "MeteorCore",
                "MeteorSandbox",
                "KubeTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Benchmarks that print numbers (build with -c release).
        .executableTarget(
            name: "MeteorBench",
            dependencies: [
                "KubeClient",
                "KubeRuntime",
                "KubeAPIServer",
                "KubeModels",
                "MeteorBenchmarks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The fuzzed parsers (a library: tests replay the regression corpus; hack/fuzz.sh links libFuzzer to it).
        .target(name: "MeteorFuzzTargets", dependencies: ["KubeClient", "KubeModels", "MeteorCore"]),
        // Fixtures shared by test targets: an embedded API server with CRDs installed and a client for it.
        .target(
            name: "KubeTestSupport",
            dependencies: [
                "KubeClient", "KubeAPIServer", "KubeModels", "KubeRuntime",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // Fixtures for tests of the Meteor operator: the embedded server with the operator running, Tekton and Argo CD played.
        .target(
            name: "MeteorTestSupport",
            dependencies: [
                "KubeTestSupport", "MeteorCore", "MeteorSandbox", "MeteorShower", "KubeRuntime", "KubeClient", "KubeAPIServer", "KubeModels",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "KubeModelsTests", dependencies: ["KubeModels"]),
        .testTarget(
            name: "KubeAPIServerTests",
            dependencies: ["KubeAPIServer", "KubeClient", "KubeModels", "KubeTestSupport", .product(name: "NIOHTTP1", package: "swift-nio")]),
        .testTarget(name: "KubeClientTests", dependencies: ["KubeClient", "KubeAPIServer", "KubeTestSupport"]),
        .testTarget(
            name: "MeteorCoreTests",
            dependencies: [
                "MeteorCore", "MeteorSandbox", "MeteorShower", "MeteorBenchmarks", "KubeRuntime", "KubeClient", "KubeAPIServer", "KubeTestSupport",
                "MeteorTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Faults survived, bad input refused, secrets kept (issue 8's suite); property-based where input is free-form.
        .testTarget(
            name: "ReliabilityTests",
            dependencies: [
                "MeteorCore", "MeteorSandbox", "MeteorShower", "KubeRuntime", "KubeClient", "KubeAPIServer", "KubeModels", "KubeTestSupport",
                "MeteorTestSupport", "MeteorFuzzTargets",
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["FuzzCorpus"]
        ),
        .testTarget(
            name: "KubeRuntimeTests",
            dependencies: [
                "KubeRuntime", "KubeClient", "KubeAPIServer", "KubeTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
