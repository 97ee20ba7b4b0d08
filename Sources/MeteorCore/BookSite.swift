import Foundation
import KubeModels
import KubeRuntime

/// Serving a built JupyterBook: a Deployment running the site image the pipeline pushed and a Service in front,
/// both owned by the Meteor, and an Ingress when an ingress class is configured.
public enum BookSite {
    public static let deploymentType = ResourceType(group: "apps", version: "v1", kind: "Deployment", plural: "deployments", namespaced: true)
    public static let serviceType = ResourceType(group: "", version: "v1", kind: "Service", plural: "services", namespaced: true)
    public static let ingressType = ResourceType(group: "networking.k8s.io", version: "v1", kind: "Ingress", plural: "ingresses", namespaced: true)
    public static let port: Int64 = 8080

    /// Name of the Deployment, Service and Ingress: at most 63 characters, like the PipelineRun's.
    public static func name(_ meteor: Meteor) -> String {
        let base = meteor.name + "-book"
        return base.utf8.count <= 63 ? base : String(PipelineRunBuilder.name(meteor: meteor.name, pipeline: .jupyterbook, generation: 0).dropLast(3))
    }

    /// The in-cluster URL the site is served at (an Ingress host replaces it when configured).
    public static func url(meteor: Meteor, ingressDomain: String? = nil) -> String {
        if let ingressDomain { return "https://\(name(meteor)).\(meteor.namespace ?? "default").\(ingressDomain)/" }
        return "http://\(name(meteor)).\(meteor.namespace ?? "default").svc:\(port)/"
    }

    static func labels(_ meteor: Meteor) -> JSONValue {
        [
            MeteorLabels.meteor: .string(meteor.name), MeteorLabels.pipeline: "jupyterbook",
            MeteorLabels.managedBy: .string(MeteorLabels.managedByValue), "app.kubernetes.io/component": "jupyterbook-site",
        ]
    }

    static func metadata(_ meteor: Meteor, owner: JSONValue) -> JSONValue {
        var m: JSONObject = ["name": .string(name(meteor)), "namespace": .string(meteor.namespace ?? "default"), "labels": labels(meteor)]
        if let ref = ObjectHelpers.controllerReference(to: owner) { m["ownerReferences"] = [ref] }
        return .object(m)
    }

    /// The Deployment serving `image` (pinned by digest when known), unprivileged and read-only.
    public static func deployment(_ meteor: Meteor, owner: JSONValue, image: String, digest: String?) -> JSONValue {
        let selector: JSONValue = [MeteorLabels.meteor: .string(meteor.name), "app.kubernetes.io/component": "jupyterbook-site"]
        let pinned =
            digest.map { d in
                (image.split(separator: ":").count > 2 || !image.contains(":"))
                    ? "\(image)@\(d)" : "\(image.split(separator: ":").dropLast().joined(separator: ":"))@\(d)"
            } ?? image
        return [
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(meteor, owner: owner),
            "spec": [
                "replicas": 1,
                "selector": ["matchLabels": selector],
                "template": [
                    "metadata": ["labels": labels(meteor)],
                    "spec": [
                        "securityContext": ["runAsNonRoot": true, "seccompProfile": ["type": "RuntimeDefault"]],
                        "containers": [
                            [
                                "name": "site", "image": .string(pinned),
                                "ports": [["name": "http", "containerPort": .int(port)]],
                                "readinessProbe": ["httpGet": ["path": "/", "port": "http"]],
                                "resources": ["requests": ["cpu": "10m", "memory": "32Mi"], "limits": ["memory": "128Mi"]],
                                "securityContext": ["allowPrivilegeEscalation": false, "capabilities": ["drop": ["ALL"]]],
                            ]
                        ],
                    ],
                ],
            ],
        ]
    }

    public static func service(_ meteor: Meteor, owner: JSONValue) -> JSONValue {
        [
            "apiVersion": "v1", "kind": "Service", "metadata": metadata(meteor, owner: owner),
            "spec": [
                "selector": [MeteorLabels.meteor: .string(meteor.name), "app.kubernetes.io/component": "jupyterbook-site"],
                "ports": [["name": "http", "port": .int(port), "targetPort": "http"]],
            ],
        ]
    }

    public static func ingress(_ meteor: Meteor, owner: JSONValue, ingressClass: String, domain: String) -> JSONValue {
        let host = "\(name(meteor)).\(meteor.namespace ?? "default").\(domain)"
        return [
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata(meteor, owner: owner),
            "spec": [
                "ingressClassName": .string(ingressClass),
                "rules": [
                    [
                        "host": .string(host),
                        "http": [
                            "paths": [
                                [
                                    "path": "/", "pathType": "Prefix",
                                    "backend": ["service": ["name": .string(name(meteor)), "port": ["name": "http"]]],
                                ]
                            ]
                        ],
                    ]
                ],
            ],
        ]
    }
}
