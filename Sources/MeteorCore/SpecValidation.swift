import Foundation
import KubeModels

/// What the reconciler checks beyond the CRD schema (a Meteor may have been stored under an older, laxer CRD,
/// such as the Go operator's). Each problem names its field.
public struct SpecProblem: Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var message: String
    public var description: String { "\(field): \(message)" }
}

public enum SpecValidation {
    static let refAllowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/+@#,-")

    /// The spec's problems on this operator: `problems(spec)`, and what it asks of edge delivery that this operator
    /// was not set up for (`edge` nil: no Argo CD; selectors off).
    static func problems(_ spec: Meteor.Spec, edge: EdgeSettings?) -> [SpecProblem] {
        var out = problems(spec)
        if edge == nil, let i = spec.requestedPipelines.firstIndex(of: Pipeline.edge.rawValue) {
            out.append(
                SpecProblem(
                    field: "spec.pipelines[\(i)]",
                    message: "edge delivery needs Argo CD (argoproj.io/v1alpha1 Application), which this cluster does not serve"))
        }
        if let edge, !edge.clusterSelectors, let i = spec.edge?.targets.firstIndex(where: { $0.clusterSelector != nil }) {
            out.append(
                SpecProblem(
                    field: "spec.edge.targets[\(i)].clusterSelector",
                    message:
                        "choosing clusters by label is off on this operator: the cluster admin enables it with --edge-cluster-selectors and config/rbac/argocd_cluster_reader_role.yaml (it lets the operator list Argo CD's cluster Secrets)"
                ))
        }
        return out
    }

    public static func problems(_ spec: Meteor.Spec) -> [SpecProblem] {
        var out: [SpecProblem] = []
        if spec.url.hasPrefix("ssh://") || (!spec.url.contains("://") && spec.url.contains(":")) {
            // ssh (ssh://[user@]host[:port]/path or user@host:path): a user, never a password, and no host or user
            // an ssh client could read as an option.
            if GitSSHRemote.Address(spec.url) == nil
                || spec.url.unicodeScalars.contains(where: {
                    CharacterSet.whitespacesAndNewlines.contains($0) || CharacterSet.controlCharacters.contains($0)
                })
            {
                out.append(
                    SpecProblem(
                        field: "spec.url",
                        message:
                            "must be an ssh address ssh://[user@]host[:port]/path or user@host:path (no password, no whitespace, host and user not starting with -), got \(quoted(spec.url))"
                    ))
            }
        } else if let url = URL(string: spec.url), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme), let host = url.host,
            !host.isEmpty
        {
            if url.user != nil || url.password != nil {
                out.append(SpecProblem(field: "spec.url", message: "must not embed credentials; give the pipeline a git Secret instead"))
            }
            if spec.url.unicodeScalars.contains(where: { CharacterSet.whitespacesAndNewlines.contains($0) }) {
                out.append(SpecProblem(field: "spec.url", message: "must not contain whitespace"))
            }
        } else {
            out.append(
                SpecProblem(field: "spec.url", message: "must be an http or https URL with a host, or an ssh address, got \(quoted(spec.url))"))
        }
        if spec.url.utf8.count > 2048 { out.append(SpecProblem(field: "spec.url", message: "must be at most 2048 bytes")) }
        if spec.ref.isEmpty || spec.ref.utf8.count > 255 {
            out.append(SpecProblem(field: "spec.ref", message: "must be 1 to 255 characters"))
        } else if spec.ref.unicodeScalars.contains(where: { !refAllowed.contains($0) }) {
            out.append(
                SpecProblem(
                    field: "spec.ref",
                    message: "may contain only letters, digits and . _ / + @ # , - (no whitespace or shell metacharacters), got \(quoted(spec.ref))"))
        } else if spec.ref.contains("..") || spec.ref.hasPrefix("/") || spec.ref.hasPrefix("-") || spec.ref.hasSuffix("/")
            || spec.ref.hasSuffix(".lock")
        {
            out.append(SpecProblem(field: "spec.ref", message: "is not a valid git ref name: \(quoted(spec.ref))"))
        }
        if let overlay = spec.overlay, overlay.utf8.count > 63 || overlay.range(of: overlayName, options: .regularExpression) == nil {
            out.append(
                SpecProblem(
                    field: "spec.overlay",
                    message: "must be a Thoth overlay's directory name (letters, digits and - _ . inside, at most 63), got \(quoted(overlay))"))
        }
        if let ttl = spec.ttl, ttl < 0 || ttl > MeteorExpiry.maximumTTL {
            out.append(SpecProblem(field: "spec.ttl", message: "must be between 0 and \(MeteorExpiry.maximumTTL) seconds, got \(ttl)"))
        }
        var seen = Set<String>()
        for (i, p) in spec.requestedPipelines.enumerated() {
            if Pipeline(rawValue: p) == nil {
                out.append(
                    SpecProblem(field: "spec.pipelines[\(i)]", message: "unknown pipeline \(quoted(p)); supported: jupyterhub, jupyterbook, edge"))
            } else if !seen.insert(p).inserted {
                out.append(SpecProblem(field: "spec.pipelines[\(i)]", message: "duplicate pipeline \(quoted(p))"))
            }
        }
        if spec.requestedPipelines.isEmpty {
            out.append(SpecProblem(field: "spec.pipelines", message: "must name at least one pipeline"))
        }
        if spec.requestedPipelines.contains(Pipeline.edge.rawValue) {
            if let edge = spec.edge {
                out += edgeProblems(edge)
            } else {
                out.append(SpecProblem(field: "spec.edge", message: "is required when spec.pipelines includes edge"))
            }
        }
        return out
    }

    // \A and \z, not ^ and $: ICU's $ also matches before a final newline, so "car\n" would pass.
    static let overlayName = #"\A[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\z"#
    static let dnsLabel = #"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\z"#
    static let platforms: Set<String> = [
        "linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/ppc64le", "linux/s390x", "linux/riscv64",
    ]

    static func edgeProblems(_ edge: Edge) -> [SpecProblem] {
        var out: [SpecProblem] = []
        func label(_ value: String, _ field: String, max: Int) {
            if value.utf8.count > max || value.range(of: dnsLabel, options: .regularExpression) == nil {
                out.append(
                    SpecProblem(
                        field: field,
                        message: "must be a DNS label (lowercase letters, digits and -, at most \(max) characters), got \(quoted(value))"))
            }
        }
        func relativePath(_ value: String, _ field: String) {
            if value.isEmpty || value.utf8.count > 1024 || value.hasPrefix("/") || value.split(separator: "/").contains("..")
                || value.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) })
            {
                out.append(
                    SpecProblem(
                        field: field,
                        message: "must be a relative path inside the repository (no leading /, no .., no control characters), got \(quoted(value))"))
            }
        }
        if edge.images.isEmpty { out.append(SpecProblem(field: "spec.edge.images", message: "must list at least one image")) }
        var imageNames = Set<String>()
        var pushedTo: [String: String] = [:]  // repository + platform → image name
        for (i, image) in edge.images.enumerated() {
            if let other = pushedTo.updateValue(image.name, forKey: "\(image.repository) \(image.platform)") {
                out.append(
                    SpecProblem(
                        field: "spec.edge.images[\(i)].repository",
                        message:
                            "images \(quoted(other)) and \(quoted(image.name)) push \(image.platform) to the same repository \(image.repository): give each its own repository or platform (images of one repository and different platforms are published together as an image index)"
                    ))
            }
            label(image.name, "spec.edge.images[\(i)].name", max: 40)
            if !imageNames.insert(image.name).inserted {
                out.append(SpecProblem(field: "spec.edge.images[\(i)].name", message: "duplicate image name \(quoted(image.name))"))
            }
            relativePath(image.dockerfile, "spec.edge.images[\(i)].dockerfile")
            if let context = image.context, context != "." { relativePath(context, "spec.edge.images[\(i)].context") }
            if !platforms.contains(image.platform) {
                out.append(
                    SpecProblem(
                        field: "spec.edge.images[\(i)].platform",
                        message: "unsupported platform \(quoted(image.platform)); supported: \(platforms.sorted().joined(separator: ", "))"))
            }
            if let reference = try? RegistryClient.Reference(parsing: image.repository), reference.tag == nil, reference.digest == nil,
                reference.repository.range(of: #"\A[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*\z"#, options: .regularExpression) != nil
            {
            } else {
                out.append(
                    SpecProblem(
                        field: "spec.edge.images[\(i)].repository",
                        message: "must be registry-host/repository in lowercase, without tag or digest, got \(quoted(image.repository))"))
            }
        }
        if let key = edge.signing.publicKeySecretRef { label(key.name, "spec.edge.signing.publicKeySecretRef.name", max: 253) }
        if let pull = edge.signing.pullSecretRef { label(pull.name, "spec.edge.signing.pullSecretRef.name", max: 253) }
        if edge.targets.isEmpty { out.append(SpecProblem(field: "spec.edge.targets", message: "must list at least one target")) }
        var targetNames = Set<String>()
        for (i, target) in edge.targets.enumerated() {
            label(target.name, "spec.edge.targets[\(i)].name", max: 40)
            if !targetNames.insert(target.name).inserted {
                out.append(SpecProblem(field: "spec.edge.targets[\(i)].name", message: "duplicate target name \(quoted(target.name))"))
            }
            if !imageNames.contains(target.image) {
                out.append(
                    SpecProblem(field: "spec.edge.targets[\(i)].image", message: "names no image in spec.edge.images: \(quoted(target.image))"))
            }
            switch (target.cluster, target.clusterSelector) {
            case (let cluster?, nil):
                if cluster.isEmpty || cluster.utf8.count > 253
                    || cluster.unicodeScalars.contains(where: { CharacterSet.whitespacesAndNewlines.contains($0) })
                {
                    out.append(
                        SpecProblem(
                            field: "spec.edge.targets[\(i)].cluster",
                            message: "must name an Argo CD cluster (1 to 253 characters, no whitespace), got \(quoted(cluster))"))
                }
            case (nil, let selector?):
                do { _ = try selector.labelSelector() } catch {
                    out.append(SpecProblem(field: "spec.edge.targets[\(i)].clusterSelector", message: "is not a label selector: \(error)"))
                }
            default:
                out.append(SpecProblem(field: "spec.edge.targets[\(i)]", message: "must name exactly one of cluster and clusterSelector"))
            }
            relativePath(target.path, "spec.edge.targets[\(i)].path")
            label(target.namespace, "spec.edge.targets[\(i)].namespace", max: 63)
            for (j, extra) in (target.images ?? []).enumerated() {
                let pinned = (try? RegistryClient.Reference(parsing: extra)).map { $0.digest != nil && $0.tag == nil } ?? false
                if !pinned {
                    out.append(
                        SpecProblem(
                            field: "spec.edge.targets[\(i)].images[\(j)]",
                            message: "must name an image by digest, host/repository@sha256:<64 hex>, got \(quoted(extra))"))
                }
            }
        }
        for (i, image) in edge.images.enumerated() where !edge.targets.contains(where: { $0.image == image.name }) {
            out.append(SpecProblem(field: "spec.edge.images[\(i)]", message: "image \(quoted(image.name)) is deployed by no target"))
        }
        if let rollout = edge.rollout {
            var stageNames = Set<String>()
            var staged: [String: String] = [:]
            if rollout.stages.isEmpty { out.append(SpecProblem(field: "spec.edge.rollout.stages", message: "must list at least one stage")) }
            for (i, stage) in rollout.stages.enumerated() {
                label(stage.name, "spec.edge.rollout.stages[\(i)].name", max: 40)
                if !stageNames.insert(stage.name).inserted {
                    out.append(SpecProblem(field: "spec.edge.rollout.stages[\(i)].name", message: "duplicate stage name \(quoted(stage.name))"))
                }
                for (j, target) in stage.targets.enumerated() {
                    if !targetNames.contains(target) {
                        out.append(
                            SpecProblem(
                                field: "spec.edge.rollout.stages[\(i)].targets[\(j)]",
                                message: "names no target in spec.edge.targets: \(quoted(target))"))
                    } else if let other = staged[target] {
                        out.append(
                            SpecProblem(
                                field: "spec.edge.rollout.stages[\(i)].targets[\(j)]",
                                message: "target \(quoted(target)) is already in stage \(quoted(other))"))
                    }
                    staged[target] = staged[target] ?? stage.name
                }
                if let soak = stage.soakSeconds, soak < 0 || soak > 604_800 {
                    out.append(
                        SpecProblem(field: "spec.edge.rollout.stages[\(i)].soakSeconds", message: "must be between 0 and 604800 seconds, got \(soak)")
                    )
                }
                if let gate = stage.gate { label(gate.pipelineRef, "spec.edge.rollout.stages[\(i)].gate.pipelineRef", max: 253) }
            }
            for target in edge.targets where staged[target.name] == nil && !rollout.stages.isEmpty {
                out.append(
                    SpecProblem(
                        field: "spec.edge.rollout.stages",
                        message: "target \(quoted(target.name)) is in no stage: a staged rollout names every target once"))
            }
        }
        if let release = edge.release {
            if release.tagPattern.isEmpty || release.tagPattern.utf8.count > 255
                || release.tagPattern.unicodeScalars.contains(where: {
                    CharacterSet.whitespacesAndNewlines.contains($0) || CharacterSet.controlCharacters.contains($0)
                })
            {
                out.append(
                    SpecProblem(
                        field: "spec.edge.release.tagPattern",
                        message: "must be a glob of 1 to 255 characters without whitespace, got \(quoted(release.tagPattern))"))
            }
            if let interval = release.interval, interval < 10 || interval > 86_400 {
                out.append(SpecProblem(field: "spec.edge.release.interval", message: "must be between 10 and 86400 seconds, got \(interval)"))
            }
        }
        return out
    }

    static func quoted(_ s: String) -> String {
        let clipped = s.count > 80 ? String(s.prefix(80)) + "…" : s
        return JSONValue.string(clipped).serializedString()
    }
}
