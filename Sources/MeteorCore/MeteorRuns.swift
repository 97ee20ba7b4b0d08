import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// The Meteor's PipelineRuns: one per requested pipeline and generation, created when missing with the build
/// settings of its namespace; superseded ones cancelled or pruned.
extension MeteorReconciler {
    /// One PipelineRun per requested pipeline (edge aside), created when missing, with what each run reports. With
    /// no `commit` the runs are the generation's; with one (the ref resolved, `FollowedRefs`) they build that commit
    /// and are shared with whoever asks for the same build (`SharedBuild`). One Event names the runs this call created.
    func runPipelines(_ meteor: Meteor, raw: JSONValue, commit: String? = nil) async throws -> [MeteorSummary.Run] {
        let generation = meteor.metadata.generation ?? 1
        var settings: BuildSettings?
        var out: [MeteorSummary.Run] = []
        var created: [String] = []
        for pipeline in meteor.spec.requestedPipelines.compactMap(Pipeline.init(rawValue:)) where pipeline != .edge {
            let runName: String
            let run: JSONValue?
            let made: Bool
            if let commit {
                let wanted = PipelineRunBuilder.params(meteor: meteor, pipeline: pipeline, ref: commit, image: "")
                let key = SharedBuild.key(
                    pipelineRef: pipeline.tektonPipeline, params: wanted, settings: configuration.build, secrets: [meteor.spec.gitSecretRef?.name])
                runName = SharedBuild.runName(build: pipeline.shortName, commit: commit, key: key)
                (run, made) = try await sharedRun(
                    runName, namespace: meteor.namespace, owner: raw, settings: &settings, newSettings: { try await newRunSettings(meteor) }
                ) {
                    PipelineRunBuilder.build(meteor: meteor, owner: raw, pipeline: pipeline, settings: $0, name: runName, commit: commit)
                }
            } else {
                runName = PipelineRunBuilder.name(meteor: meteor.name, pipeline: pipeline, generation: generation)
                (run, made) = try await createRunIfMissing(runName, of: meteor, settings: &settings) {
                    PipelineRunBuilder.build(meteor: meteor, owner: raw, pipeline: pipeline, settings: $0)
                }
            }
            if made { created.append("\(runName) (\(pipeline.rawValue))") }
            let state = run.map { PipelineRunState($0).requiringDigest(runName: runName) }
            var entry = MeteorSummary.Run(pipeline: pipeline, runName: runName, state: state)
            entry.entry.commit = commit
            entry.entry.sharedWith = run.flatMap { SharedBuild.sharers(of: $0, except: meteor.metadata.uid) }
            out.append(entry)
        }
        if !created.isEmpty {
            await events.record(
                raw, type: .normal, reason: .pipelineRunCreated,
                message: "Created PipelineRun\(created.count > 1 ? "s" : "") \(created.joined(separator: ", ")) at \(commit ?? meteor.spec.ref)")
        }
        return out
    }

    /// The Meteor's run `name` from the cache (or this reconciler's own write); when there is none, created from
    /// `body` with the build settings of the Meteor's namespace, looked up once per reconcile through `settings`.
    /// `created` when this call made it. A create that finds the run exists (an earlier attempt the cache has not
    /// shown yet, or a run of a deleted Meteor of this name the garbage collector has yet to remove) returns no
    /// run: the cache catching up, or that deletion, brings the Meteor back.
    func createRunIfMissing(
        _ name: String, of meteor: Meteor, settings: inout BuildSettings?, body: (BuildSettings) throws -> JSONValue
    ) async throws -> (run: JSONValue?, created: Bool) {
        try await createRunIfMissing(
            name, namespace: meteor.namespace, ownerUID: meteor.metadata.uid, settings: &settings, newSettings: { try await newRunSettings(meteor) },
            body: body)
    }

    /// `createRunIfMissing` for any owner: its namespace and uid, and how its new runs' settings are found.
    func createRunIfMissing(
        _ name: String, namespace: String?, ownerUID: String?, settings: inout BuildSettings?, newSettings: () async throws -> BuildSettings,
        body: (BuildSettings) throws -> JSONValue
    ) async throws -> (run: JSONValue?, created: Bool) {
        if let run = ownRun(ObjectKey(namespace: namespace, name: name), uid: ownerUID) { return (run, false) }
        if settings == nil { settings = try await newSettings() }
        let wanted = try body(settings!)
        guard let run = try await ignoreAlreadyExists({ try await cache.create(wanted, PipelineRunBuilder.resourceType) }) else {
            return (nil, false)
        }
        return (run, true)
    }

    /// The cached (or just written) PipelineRun `key` if the owner `uid` controls it. A run of the same name owned
    /// by another uid belongs to an earlier owner of this name (deleted and created again, or a store that was
    /// lost and refilled), whose results are not this one's: it counts as absent.
    func ownRun(_ key: ObjectKey, uid: String?) -> JSONValue? {
        guard let run = cache.get(key, from: pipelineRuns) else { return nil }
        guard let uid, let owner = run.controllerOwner?.uid else { return run }
        return owner == uid ? run : nil
    }

    /// The build settings for new runs in `namespace`: the ServiceAccount resolved, the push Secret there.
    func buildSettings(namespace: String) async throws -> BuildSettings {
        switch try await prerequisites.check(namespace: namespace) {
        case .ready(let account):
            var settings = configuration.build
            settings.serviceAccount = account
            return settings
        case .missing(let message):
            throw PrerequisiteMissing(message: message)
        }
    }

    /// The settings for a new run of `meteor`: its namespace's (`buildSettings`), once its git Secret, if it
    /// names one, is there and usable.
    func newRunSettings(_ meteor: Meteor) async throws -> BuildSettings {
        let settings = try await buildSettings(namespace: meteor.namespace ?? "default")
        _ = try await gitCredentials(meteor)
        return settings
    }

    /// How the operator reaches a private repository: `spec.gitSecretRef`'s Secret, read as its type says.
    public enum GitAccess: Sendable {
        /// `kubernetes.io/basic-auth` (username, password or token), for http(s) URLs.
        case basic(GitRemote.Credentials)
        /// `kubernetes.io/ssh-auth` (ssh-privatekey, known_hosts), for ssh URLs.
        case ssh(GitSSHRemote.Credentials)
    }

    /// `spec.gitSecretRef`'s credentials; nil without one. A missing Secret, one of the wrong type for the URL, or
    /// one without the keys its type needs is a missing prerequisite, named in the status.
    func gitCredentials(_ meteor: Meteor) async throws -> GitAccess? {
        let overSSH = GitSSHRemote.Address(meteor.spec.url) != nil
        guard let ref = meteor.spec.gitSecretRef else {
            if overSSH {
                throw PrerequisiteMissing(
                    message:
                        "\(meteor.spec.url) is an ssh address: name a kubernetes.io/ssh-auth Secret (ssh-privatekey, known_hosts) in spec.gitSecretRef"
                )
            }
            return nil
        }
        let namespace = meteor.namespace ?? "default"
        let wanted =
            overSSH
            ? "a kubernetes.io/ssh-auth Secret with ssh-privatekey and known_hosts (ssh-keyscan HOST)"
            : "a kubernetes.io/basic-auth Secret with the repository's username and password or access token"
        guard let secret = try await client.api(Secret.self, namespace: namespace).getOptional(ref.name) else {
            throw PrerequisiteMissing(message: "Secret \(ref.name) (spec.gitSecretRef) does not exist in namespace \(namespace): create \(wanted)")
        }
        if overSSH {
            guard secret.type == "kubernetes.io/ssh-auth", let key = secret.value("ssh-privatekey"), let hosts = secret.value("known_hosts"),
                !hosts.isEmpty
            else {
                throw PrerequisiteMissing(
                    message:
                        "Secret \(ref.name) (spec.gitSecretRef) in namespace \(namespace) is not \(wanted), which the ssh address \(meteor.spec.url) needs"
                )
            }
            return .ssh(
                GitSSHRemote.Credentials(privateKey: String(decoding: key, as: UTF8.self), knownHosts: String(decoding: hosts, as: UTF8.self)))
        }
        guard secret.type == "kubernetes.io/basic-auth", let username = secret.value("username"), let password = secret.value("password") else {
            throw PrerequisiteMissing(
                message:
                    "Secret \(ref.name) (spec.gitSecretRef) in namespace \(namespace) is not \(wanted), which the address \(meteor.spec.url) needs")
        }
        return .basic(GitRemote.Credentials(username: String(decoding: username, as: UTF8.self), password: String(decoding: password, as: UTF8.self)))
    }
}
