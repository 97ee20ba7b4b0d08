import Foundation
import KubeModels

/// A printer column from a CRD's `additionalPrinterColumns`.
struct PrinterColumn: Sendable {
    var name: String
    var type: String
    var format: String?
    var description: String
    var priority: Int
    var jsonPath: String
}

/// One resource the server serves: its names, verbs, scope and, for custom resources, schema per version.
struct ServedResource: Sendable {
    var group: String
    var kind: String
    var plural: String
    var singular: String
    var namespaced: Bool
    var shortNames: [String]
    var categories: [String]
    var versions: [String]
    var storageVersion: String
    var hasStatus: Bool
    var schemas: [String: StructuralSchema]
    var columns: [String: [PrinterColumn]]
    var isCustom: Bool
    var crdName: String?
    /// For built-in kinds: list-map keys by field path, as their OpenAPI strategic-merge metadata declares.
    var builtinListMapKeys: [String: [String]] = [:]

    /// Storage identity: one table per group and plural, whatever version a request names.
    var key: String { "\(group)/\(plural)" }
    var listKind: String { kind + "List" }

    func resourceType(version: String) -> ResourceType {
        ResourceType(group: group, version: version, kind: kind, plural: plural, namespaced: namespaced)
    }

    func apiVersion(_ version: String) -> String { group.isEmpty ? version : "\(group)/\(version)" }

    static let allVerbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

    static func builtin(
        group: String = "", version: String = "v1", kind: String, plural: String, namespaced: Bool,
        shortNames: [String] = [], hasStatus: Bool = false, listMapKeys: [String: [String]] = [:]
    ) -> ServedResource {
        ServedResource(
            group: group, kind: kind, plural: plural, singular: kind.lowercased(), namespaced: namespaced,
            shortNames: shortNames, categories: [], versions: [version], storageVersion: version, hasStatus: hasStatus,
            schemas: [:], columns: [:], isCustom: false, crdName: nil, builtinListMapKeys: listMapKeys)
    }

    static let builtins: [ServedResource] = [
        .builtin(kind: "Namespace", plural: "namespaces", namespaced: false, shortNames: ["ns"], hasStatus: true),
        .builtin(kind: "ConfigMap", plural: "configmaps", namespaced: true, shortNames: ["cm"]),
        .builtin(kind: "Secret", plural: "secrets", namespaced: true),
        .builtin(kind: "Event", plural: "events", namespaced: true, shortNames: ["ev"]),
        .builtin(kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true, shortNames: ["sa"]),
        .builtin(group: "coordination.k8s.io", kind: "Lease", plural: "leases", namespaced: true),
        .builtin(kind: "Service", plural: "services", namespaced: true, shortNames: ["svc"], hasStatus: true),
        .builtin(group: "apps", kind: "Deployment", plural: "deployments", namespaced: true, shortNames: ["deploy"], hasStatus: true),
        .builtin(group: "networking.k8s.io", kind: "Ingress", plural: "ingresses", namespaced: true, shortNames: ["ing"], hasStatus: true),
        // Stored and served, not enforced: the embedded server authorizes through its `Authorizer`, not RBAC objects.
        .builtin(group: "rbac.authorization.k8s.io", kind: "RoleBinding", plural: "rolebindings", namespaced: true),
        // Answered, never stored (`Authentication.review`): how delegated authentication and authorization ask.
        .builtin(group: "authentication.k8s.io", kind: "TokenReview", plural: "tokenreviews", namespaced: false),
        .builtin(group: "authorization.k8s.io", kind: "SubjectAccessReview", plural: "subjectaccessreviews", namespaced: false),
        .builtin(
            group: "apiextensions.k8s.io", kind: "CustomResourceDefinition", plural: "customresourcedefinitions",
            namespaced: false, shortNames: ["crd", "crds"], hasStatus: true, listMapKeys: ["status.conditions": ["type"]]),
    ]

    /// Builds the served resource a CRD describes, or explains why the CRD is invalid.
    static func fromCRD(_ crd: JSONValue) throws -> ServedResource {
        var causes: [StatusCause] = []
        let spec = crd["spec"] ?? .object([:])
        let group = spec["group"]?.stringValue ?? ""
        let names = spec["names"] ?? .object([:])
        let plural = names["plural"]?.stringValue ?? ""
        let kind = names["kind"]?.stringValue ?? ""
        let name = crd[path: "metadata", "name"]?.stringValue ?? ""
        if group.isEmpty { causes.append(StatusCause(reason: "FieldValueRequired", message: "Required value", field: "spec.group")) }
        if plural.isEmpty { causes.append(StatusCause(reason: "FieldValueRequired", message: "Required value", field: "spec.names.plural")) }
        if kind.isEmpty { causes.append(StatusCause(reason: "FieldValueRequired", message: "Required value", field: "spec.names.kind")) }
        if !group.isEmpty, !plural.isEmpty, name != "\(plural).\(group)" {
            causes.append(
                StatusCause(
                    reason: "FieldValueInvalid", message: "Invalid value: \"\(name)\": must be spec.names.plural+\".\"+spec.group",
                    field: "metadata.name"))
        }
        let scope = spec["scope"]?.stringValue ?? ""
        if scope != "Namespaced" && scope != "Cluster" {
            causes.append(
                StatusCause(
                    reason: "FieldValueNotSupported", message: "Unsupported value: \"\(scope)\": supported values: \"Cluster\", \"Namespaced\"",
                    field: "spec.scope"))
        }
        let versionList = spec["versions"]?.arrayValue ?? []
        if versionList.isEmpty {
            causes.append(
                StatusCause(
                    reason: "FieldValueInvalid", message: "Invalid value: null: must have exactly one version marked as storage version",
                    field: "spec.versions"))
        }
        var versions: [String] = []
        var storage: String?
        var schemas: [String: StructuralSchema] = [:]
        var columns: [String: [PrinterColumn]] = [:]
        var hasStatus = false
        for (i, v) in versionList.enumerated() {
            guard let vname = v["name"]?.stringValue else {
                causes.append(StatusCause(reason: "FieldValueRequired", message: "Required value", field: "spec.versions[\(i)].name"))
                continue
            }
            if v["served"]?.boolValue ?? false { versions.append(vname) }
            if v["storage"]?.boolValue ?? false {
                if storage != nil {
                    causes.append(
                        StatusCause(
                            reason: "FieldValueInvalid",
                            message: "Invalid value: \"\(vname)\": must have exactly one version marked as storage version", field: "spec.versions"))
                }
                storage = vname
            }
            if let schema = v[path: "schema", "openAPIV3Schema"] {
                schemas[vname] = StructuralSchema(schema)
            } else if let schema = spec[path: "validation", "openAPIV3Schema"] {
                schemas[vname] = StructuralSchema(schema)
            }
            if v[path: "subresources", "status"] != nil { hasStatus = true }
            columns[vname] = (v["additionalPrinterColumns"]?.arrayValue ?? []).compactMap { c in
                guard let n = c["name"]?.stringValue, let p = c["jsonPath"]?.stringValue else { return nil }
                return PrinterColumn(
                    name: n, type: c["type"]?.stringValue ?? "string", format: c["format"]?.stringValue,
                    description: c["description"]?.stringValue ?? "", priority: Int(c["priority"]?.intValue ?? 0), jsonPath: p)
            }
        }
        causes += metadataSchemaCauses(spec)
        if storage == nil && !versionList.isEmpty {
            causes.append(
                StatusCause(
                    reason: "FieldValueInvalid", message: "Invalid value: \"\": must have exactly one version marked as storage version",
                    field: "spec.versions"))
        }
        if !causes.isEmpty {
            throw APIError.invalid(kind: "CustomResourceDefinition", group: "apiextensions.k8s.io", name: name, causes: causes)
        }
        return ServedResource(
            group: group, kind: kind, plural: plural, singular: names["singular"]?.stringValue ?? kind.lowercased(),
            namespaced: scope == "Namespaced",
            shortNames: names["shortNames"]?.arrayValue?.compactMap(\.stringValue) ?? [],
            categories: names["categories"]?.arrayValue?.compactMap(\.stringValue) ?? [],
            versions: versions, storageVersion: storage!, hasStatus: hasStatus, schemas: schemas, columns: columns,
            isCustom: true, crdName: name)
    }

    /// The root schema may say nothing of `metadata` but `type: object` and constraints on `name`/`generateName`:
    /// the API server owns it. kube-apiserver validates the internal form, where schemas identical in every
    /// version sit once under `spec.validation`, hence the paths.
    static func metadataSchemaCauses(_ spec: JSONValue) -> [StatusCause] {
        let versions = spec["versions"]?.arrayValue ?? []
        var located: [(path: String, schema: JSONValue)] = []
        if let top = spec[path: "validation", "openAPIV3Schema"] {
            located = [("spec.validation.openAPIV3Schema", top)]
        } else {
            let schemas = versions.map { $0[path: "schema", "openAPIV3Schema"] }
            if let first = schemas.first ?? nil, schemas.allSatisfy({ $0 == first }) {
                located = [("spec.validation.openAPIV3Schema", first)]
            } else {
                for (i, s) in schemas.enumerated() { if let s { located.append(("spec.versions[\(i)].schema.openAPIV3Schema", s)) } }
            }
        }
        return located.compactMap { path, schema in
            guard let metadata = schema[path: "properties", "metadata"]?.objectValue else { return nil }
            let properties = metadata["properties"]?.objectValue ?? [:]
            let allowed =
                metadata.keys.allSatisfy { $0 == "type" || $0 == "properties" }
                && (metadata["type"] == nil || metadata["type"] == "object")
                && properties.keys.allSatisfy { $0 == "name" || $0 == "generateName" }
            if allowed { return nil }
            return StatusCause(
                reason: "FieldValueForbidden",
                message: "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
                field: "\(path).properties[metadata]")
        }
    }
}
