import Foundation
import KubeModels
import KubeRuntime

/// The PipelineRun for a CustomRuntimeEnvironment's build, and what its spec must say for one.
public enum RuntimeEnvironmentBuilder {
    /// `<name>-<build>-g<generation>` (63 characters at most).
    public static func runName(_ cre: CustomRuntimeEnvironment) -> String {
        let short: String
        switch cre.spec.buildType {
        case .packageList: short = "pkgs"
        case .imageImport: short = "import"
        case .gitRepository: short = "git"
        }
        return PipelineRunBuilder.boundedName(cre.name, suffix: "-\(short)-g\(cre.metadata.generation ?? 1)")
    }

    /// Where a built image is pushed: `<prefix>/<namespace>/<name>-notebook:<commit or generation>`.
    public static func image(_ cre: CustomRuntimeEnvironment, settings: BuildSettings, commit: String?) -> String {
        "\(settings.imageRepositoryPrefix)/\(cre.namespace ?? "default")/\(cre.name)-notebook:\(commit.map { String($0.prefix(12)) } ?? "g\(cre.metadata.generation ?? 1)")"
    }

    /// The Python image the lock is made in, for `3.X`: Red Hat's UBI 9 Python image of that version.
    public static func pythonImage(_ version: String) -> String {
        "registry.access.redhat.com/ubi9/python-\(version.replacingOccurrences(of: ".", with: "")):9.5"
    }

    /// Open Data Hub's workbench image for Python `3.X`, the default base of a package list.
    public static func notebookBaseImage(_ version: String) -> String {
        "quay.io/opendatahub/workbench-images:jupyter-datascience-ubi9-python-\(version)-2024a"
    }

    /// The params of the build's Pipeline (`BuildType.tektonPipeline`). `ref` is the commit to build for a git
    /// repository (else its `gitRef`).
    public static func params(_ cre: CustomRuntimeEnvironment, image: String, ref: String? = nil) -> [JSONValue] {
        let spec = cre.spec
        switch spec.buildType {
        case .packageList:
            var params: [JSONValue] = [
                ["name": "packages", "value": .string((spec.packageVersions ?? []).joined(separator: "\n"))],
                ["name": "image", "value": .string(image)],
            ]
            if let version = spec.runtimeEnvironment?.pythonVersion, !version.isEmpty {
                params.append(["name": "python-version", "value": .string(version)])
                params.append(["name": "python-image", "value": .string(pythonImage(version))])
                if spec.baseImage == nil { params.append(["name": "notebook-base-image", "value": .string(notebookBaseImage(version))]) }
            }
            if let base = spec.baseImage, !base.isEmpty { params.append(["name": "notebook-base-image", "value": .string(base)]) }
            return params
        case .imageImport:
            return [["name": "image", "value": .string(spec.fromImage ?? "")]]
        case .gitRepository:
            return [
                ["name": "url", "value": .string(spec.repository ?? "")], ["name": "ref", "value": .string(ref ?? spec.ref)],
                ["name": "image", "value": .string(image)],
            ]
        }
    }

    /// The PipelineRun: owned by the CustomRuntimeEnvironment, labelled with it and its build; an import reads with
    /// the `imagePullSecret` (its `dockerconfig` workspace and the Pod's pull secret, to run the image) and needs no
    /// source volume.
    public static func build(
        _ cre: CustomRuntimeEnvironment, owner: JSONValue, settings: BuildSettings, name: String? = nil, commit: String? = nil
    ) -> JSONValue {
        let type = cre.spec.buildType
        let importing = type == .imageImport
        var annotations: JSONObject = [:]
        if let repository = cre.spec.repository, type == .gitRepository {
            annotations["meteor.zone/url"] = .string(repository)
            annotations["meteor.zone/ref"] = .string(cre.spec.ref)
        }
        if let commit { annotations["meteor.zone/commit"] = .string(commit) }
        return PipelineRunBuilder.run(
            name: name ?? runName(cre), namespace: cre.namespace ?? "default", owner: owner, pipelineRef: type.tektonPipeline,
            params: params(cre, image: image(cre, settings: settings, commit: commit), ref: commit),
            labels: [
                MeteorLabels.runtimeEnvironment: .string(cre.name), MeteorLabels.pipeline: .string(type.buildName),
                MeteorLabels.generation: .string(String(cre.metadata.generation ?? 1)),
            ],
            annotations: annotations, gitSecret: nil, settings: settings, source: !importing,
            dockerconfig: importing ? cre.spec.imagePullSecret?.name : nil, imagePullSecret: importing ? cre.spec.imagePullSecret?.name : nil)
    }

    /// What stops a build of this spec, one sentence each (empty: it can be built). The Go operator's CRD accepts
    /// every one of these; here they are said in the status instead of built and failed late.
    public static func problems(_ spec: CustomRuntimeEnvironment.Spec) -> [String] {
        var out: [String] = []
        switch spec.buildType {
        case .packageList:
            let packages = spec.packageVersions ?? []
            if packages.isEmpty { out.append("spec.packageVersions: a PackageList needs at least one package") }
            for p in packages where p.range(of: requirementPattern, options: .regularExpression) == nil {
                out.append("spec.packageVersions: \"\(p)\" is not a package with version specifiers (name[extras] op version, …)")
            }
            if let v = spec.runtimeEnvironment?.pythonVersion, !v.isEmpty, v.range(of: #"\A3\.[0-9]{1,2}\z"#, options: .regularExpression) == nil {
                out.append("spec.runtimeEnvironment.pythonVersion: \"\(v)\" is not a Python version of the form 3.X")
            }
        case .imageImport:
            if (spec.fromImage ?? "").isEmpty {
                out.append("spec.fromImage: an ImageImport needs the image to import")
            } else if (try? RegistryClient.Reference(parsing: spec.fromImage!)) == nil {
                out.append("spec.fromImage: \"\(spec.fromImage!)\" is not an image reference (registry/repository:tag or @sha256:…)")
            }
        case .gitRepository:
            let repository = spec.repository ?? ""
            if repository.isEmpty {
                out.append("spec.repository: a GitRepository needs the repository's URL")
            } else if !(repository.hasPrefix("https://") || repository.hasPrefix("http://") || GitSSHRemote.Address(repository) != nil) {
                out.append("spec.repository: \"\(repository)\" is not an http(s) or ssh git URL")
            }
            if spec.ref.range(of: #"\A[A-Za-z0-9._/+@#,-]{1,255}\z"#, options: .regularExpression) == nil {
                out.append("spec.gitRef: \"\(spec.ref)\" may hold letters, digits and . _ / + @ # , - only")
            }
        }
        return out
    }

    /// A PEP 508 requirement without markers or URLs: a name, optional extras, optional version specifiers.
    static let requirementPattern =
        #"\A[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?\s*((===|==|>=|<=|!=|~=|>|<)\s*[A-Za-z0-9.*+!_-]+\s*(,\s*(===|==|>=|<=|!=|~=|>|<)\s*[A-Za-z0-9.*+!_-]+\s*)*)?\z"#
}
