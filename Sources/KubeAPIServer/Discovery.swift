import Foundation
import KubeModels

/// Discovery and OpenAPI documents: what kubectl reads to map kinds to resources and to learn that the server
/// validates fields itself (`fieldValidation` on PATCH) so it can send `fieldValidation=Strict`.
enum Discovery {
    static func apiVersions(serverAddress: String) -> JSONValue {
        [
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": .string(serverAddress)]],
        ]
    }

    static func groupList(_ registry: ResourceRegistry) -> JSONValue {
        let groups: [JSONValue] = registry.groups().filter { !$0.0.isEmpty }.map { g in group(g.0, versions: g.1) }
        return ["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(groups)]
    }

    static func group(_ name: String, versions: [String]) -> JSONValue {
        let vs: [JSONValue] = versions.map { ["groupVersion": .string("\(name)/\($0)"), "version": .string($0)] }
        return ["kind": "APIGroup", "apiVersion": "v1", "name": .string(name), "versions": .array(vs), "preferredVersion": vs.first ?? .null]
    }

    static func resourceList(_ registry: ResourceRegistry, group: String, version: String) -> JSONValue? {
        let served = registry.all().filter { $0.group == group && $0.versions.contains(version) }
        guard !served.isEmpty else { return nil }
        var resources: [JSONValue] = []
        for r in served {
            var entry: JSONObject = [
                "name": .string(r.plural), "singularName": .string(r.singular), "namespaced": .bool(r.namespaced),
                "kind": .string(r.kind), "verbs": .array(ServedResource.allVerbs.map(JSONValue.string)),
            ]
            if !r.shortNames.isEmpty { entry["shortNames"] = .array(r.shortNames.map(JSONValue.string)) }
            if !r.categories.isEmpty { entry["categories"] = .array(r.categories.map(JSONValue.string)) }
            entry["storageVersionHash"] = .string(String(r.key.hashValue & 0xffffff, radix: 16))
            resources.append(.object(entry))
            if r.hasStatus {
                resources.append([
                    "name": .string("\(r.plural)/status"), "singularName": "", "namespaced": .bool(r.namespaced), "kind": .string(r.kind),
                    "verbs": ["get", "patch", "update"],
                ])
            }
        }
        return [
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"),
            "resources": .array(resources),
        ]
    }

    // MARK: OpenAPI v3

    static func openAPIRoot(_ registry: ResourceRegistry) -> JSONValue {
        var paths: JSONObject = [:]
        for (g, versions) in registry.groups() {
            for v in versions {
                let key = g.isEmpty ? "api/\(v)" : "apis/\(g)/\(v)"
                paths[key] = ["serverRelativeURL": .string("/openapi/v3/\(key)?hash=\(hash(registry, g, v))")]
            }
        }
        return ["paths": .object(paths)]
    }

    static func hash(_ registry: ResourceRegistry, _ g: String, _ v: String) -> String {
        let served = registry.all().filter { $0.group == g && $0.versions.contains(v) }
        var h: UInt64 = 1469598103934665603
        for r in served {
            for b in (r.key + (r.schemas[v]?.raw.serializedString() ?? "")).utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
        }
        return String(h, radix: 16, uppercase: true)
    }

    static func openAPIGroupVersion(_ registry: ResourceRegistry, group: String, version: String) -> JSONValue? {
        let served = registry.all().filter { $0.group == group && $0.versions.contains(version) }
        guard !served.isEmpty else { return nil }
        var paths: JSONObject = [:]
        var schemas: JSONObject = [:]
        for r in served {
            let gvk: JSONValue = [["group": .string(group), "version": .string(version), "kind": .string(r.kind)]]
            let schemaName =
                "\(group.isEmpty ? "io.k8s.api.core" : group.split(separator: ".").reversed().joined(separator: ".")).\(version).\(r.kind)"
            var schema = r.schemas[version]?.raw ?? ["type": "object", "x-kubernetes-preserve-unknown-fields": true]
            schema["x-kubernetes-group-version-kind"] = gvk
            if schema["properties"] != nil {
                schema[path: "properties", "metadata"] = ["$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
            }
            schemas[schemaName] = schema
            let ref: JSONValue = ["$ref": .string("#/components/schemas/\(schemaName)")]
            let patchTypes: [String] =
                r.isCustom
                ? ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
                : [
                    "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ]
            var patchContent: JSONObject = [:]
            for t in patchTypes { patchContent[t] = ["schema": ["$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"]] }
            let queryParams: [JSONValue] = ["dryRun", "fieldManager", "fieldValidation", "force"].map {
                ["name": .string($0), "in": "query", "schema": ["type": .string($0 == "force" ? "boolean" : "string")], "uniqueItems": true]
            }
            func op(_ id: String, _ action: String, body: JSONValue? = nil, params: [JSONValue] = []) -> JSONValue {
                var o: JSONObject = [
                    "operationId": .string(id), "x-kubernetes-action": .string(action),
                    "x-kubernetes-group-version-kind": ["group": .string(group), "version": .string(version), "kind": .string(r.kind)],
                    "responses": ["200": ["description": "OK", "content": ["application/json": ["schema": ref]]]],
                ]
                if let body { o["requestBody"] = body }
                if !params.isEmpty { o["parameters"] = .array(params) }
                return .object(o)
            }
            let root = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
            let itemPath = r.namespaced ? "\(root)/namespaces/{namespace}/\(r.plural)/{name}" : "\(root)/\(r.plural)/{name}"
            let collPath = r.namespaced ? "\(root)/namespaces/{namespace}/\(r.plural)" : "\(root)/\(r.plural)"
            paths[itemPath] = [
                "get": op("read\(r.kind)", "get"),
                "put": op("replace\(r.kind)", "put", body: ["content": ["application/json": ["schema": ref]]], params: queryParams),
                "patch": op("patch\(r.kind)", "patch", body: ["content": .object(patchContent)], params: queryParams),
                "delete": op("delete\(r.kind)", "delete"),
            ]
            paths[collPath] = [
                "get": op("list\(r.kind)", "list"),
                "post": op("create\(r.kind)", "post", body: ["content": ["application/json": ["schema": ref]]], params: queryParams),
            ]
            if r.hasStatus {
                paths[itemPath + "/status"] = [
                    "patch": op("patch\(r.kind)Status", "patch", body: ["content": .object(patchContent)], params: queryParams)
                ]
            }
        }
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"] = [
            "type": "object",
            "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
            "x-kubernetes-preserve-unknown-fields": true,
        ]
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Patch"] = [
            "type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
        ]
        return [
            "openapi": "3.0.0", "info": ["title": "Kubernetes", "version": "v1.33.0"], "paths": .object(paths),
            "components": ["schemas": .object(schemas)],
        ]
    }
}
