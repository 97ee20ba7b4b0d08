import Foundation

/// core/v1 Namespace.
public struct Namespace: KubeResource, Hashable {
    public static let resourceType = ResourceType(group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false)
    public struct Status: Codable, Sendable, Hashable { public var phase: String? }
    public var metadata: ObjectMeta
    public var status: Status?
    public var unknownFields = UnknownFields()

    public init(metadata: ObjectMeta) { self.metadata = metadata }
}

/// core/v1 ConfigMap.
public struct ConfigMap: KubeResource, Hashable {
    public static let resourceType = ResourceType(group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true)
    public var metadata: ObjectMeta
    public var data: [String: String]?
    public var binaryData: [String: String]?
    public var immutable: Bool?
    public var unknownFields = UnknownFields()

    public init(metadata: ObjectMeta, data: [String: String]? = nil) {
        self.metadata = metadata
        self.data = data
    }
}

/// core/v1 Secret. `data` values are base64 on the wire; `stringData` is write-only.
public struct Secret: KubeResource, Hashable {
    public static let resourceType = ResourceType(group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true)
    public var metadata: ObjectMeta
    public var type: String?
    public var data: [String: String]?
    public var stringData: [String: String]?
    public var immutable: Bool?
    public var unknownFields = UnknownFields()

    public init(metadata: ObjectMeta, type: String? = nil, stringData: [String: String]? = nil) {
        self.metadata = metadata
        self.type = type
        self.stringData = stringData
    }

    /// The decoded bytes of `data[key]`.
    public func value(_ key: String) -> Data? {
        data?[key].flatMap { Data(base64Encoded: $0) }
    }
}

/// core/v1 ObjectReference, as used by Events.
public struct ObjectReference: Codable, Sendable, Hashable {
    public var apiVersion: String?
    public var kind: String?
    public var name: String?
    public var namespace: String?
    public var uid: String?
    public var resourceVersion: String?
    public var fieldPath: String?

    public init(
        apiVersion: String? = nil, kind: String? = nil, name: String? = nil, namespace: String? = nil, uid: String? = nil,
        resourceVersion: String? = nil
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
    }
}

/// core/v1 Event.
public struct Event: KubeResource, Hashable {
    public static let resourceType = ResourceType(group: "", version: "v1", kind: "Event", plural: "events", namespaced: true)
    public struct Source: Codable, Sendable, Hashable {
        public var component: String?
        public var host: String?
        public init(component: String? = nil, host: String? = nil) {
            self.component = component
            self.host = host
        }
    }

    public var metadata: ObjectMeta
    public var involvedObject: ObjectReference
    public var reason: String?
    public var message: String?
    public var type: String?
    public var count: Int32?
    public var firstTimestamp: Date?
    public var lastTimestamp: Date?
    public var source: Source?
    public var reportingComponent: String?
    public var reportingInstance: String?
    public var action: String?
    public var unknownFields = UnknownFields()

    public init(metadata: ObjectMeta, involvedObject: ObjectReference, reason: String?, message: String?, type: String?) {
        self.metadata = metadata
        self.involvedObject = involvedObject
        self.reason = reason
        self.message = message
        self.type = type
    }
}

/// coordination.k8s.io/v1 Lease. `acquireTime` and `renewTime` are metav1.MicroTime, kept as strings so their
/// microsecond precision survives a round trip.
public struct Lease: KubeResource, Hashable {
    public static let resourceType = ResourceType(group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true)
    public struct Spec: Codable, Sendable, Hashable {
        public var holderIdentity: String?
        public var leaseDurationSeconds: Int32?
        public var acquireTime: String?
        public var renewTime: String?
        public var leaseTransitions: Int32?

        public init(
            holderIdentity: String? = nil, leaseDurationSeconds: Int32? = nil, acquireTime: String? = nil, renewTime: String? = nil,
            leaseTransitions: Int32? = nil
        ) {
            self.holderIdentity = holderIdentity
            self.leaseDurationSeconds = leaseDurationSeconds
            self.acquireTime = acquireTime
            self.renewTime = renewTime
            self.leaseTransitions = leaseTransitions
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var unknownFields = UnknownFields()

    public init(metadata: ObjectMeta, spec: Spec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}
