import Foundation
import KubeModels

/// How to reach and authenticate to a cluster, resolved from a kubeconfig or the in-cluster environment.
public struct ClusterConfiguration: Sendable {
    public enum Credentials: Sendable {
        case none
        case token(String)
        /// A token file re-read when it rotates (service-account tokens, `tokenFile` in kubeconfig).
        case tokenFile(String)
        case clientCertificate(certificatePEM: String, keyPEM: String)
        case exec(ExecConfig)
    }

    public var server: URL
    public var caCertificatePEM: String?
    public var insecureSkipTLSVerify: Bool
    public var credentials: Credentials
    public var namespace: String
    public var tlsServerName: String?
    /// Where this configuration came from, for messages.
    public var source: String

    public init(
        server: URL, caCertificatePEM: String? = nil, insecureSkipTLSVerify: Bool = false, credentials: Credentials = .none,
        namespace: String = "default", tlsServerName: String? = nil, source: String = "explicit"
    ) {
        self.server = server
        self.caCertificatePEM = caCertificatePEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.credentials = credentials
        self.namespace = namespace
        self.tlsServerName = tlsServerName
        self.source = source
    }
}

/// A client-go exec credential plugin (`users[].user.exec`).
public struct ExecConfig: Sendable {
    public var command: String
    public var args: [String]
    public var env: [String: String]
    public var apiVersion: String
    public var workingDirectory: String?

    public init(
        command: String, args: [String] = [], env: [String: String] = [:], apiVersion: String = "client.authentication.k8s.io/v1",
        workingDirectory: String? = nil
    ) {
        self.command = command
        self.args = args
        self.env = env
        self.apiVersion = apiVersion
        self.workingDirectory = workingDirectory
    }
}

/// Loads cluster configuration the way kubectl does.
public enum KubeConfigLoader {
    public struct Options: Sendable {
        public var kubeconfigPath: String?
        public var context: String?
        public var environment: [String: String]
        /// Where in-cluster service-account files live (changeable for tests).
        public var serviceAccountDirectory: String

        public init(
            kubeconfigPath: String? = nil, context: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
            serviceAccountDirectory: String = "/var/run/secrets/kubernetes.io/serviceaccount"
        ) {
            self.kubeconfigPath = kubeconfigPath
            self.context = context
            self.environment = environment
            self.serviceAccountDirectory = serviceAccountDirectory
        }
    }

    /// `--kubeconfig`, else `KUBECONFIG` (several files merged, first wins), else in-cluster, else `~/.kube/config`.
    public static func load(_ options: Options = Options()) throws -> ClusterConfiguration {
        if let path = options.kubeconfigPath, !path.isEmpty {
            return try fromKubeconfig(paths: [path], context: options.context)
        }
        if let env = options.environment["KUBECONFIG"], !env.isEmpty {
            let paths = env.split(separator: ":").map(String.init).filter { !$0.isEmpty }
            return try fromKubeconfig(paths: paths, context: options.context)
        }
        if options.environment["KUBERNETES_SERVICE_HOST"] != nil {
            return try inCluster(environment: options.environment, directory: options.serviceAccountDirectory)
        }
        let home = options.environment["HOME"] ?? NSHomeDirectory()
        let path = home + "/.kube/config"
        guard FileManager.default.fileExists(atPath: path) else {
            throw KubeError.configuration(
                "no cluster configuration: --kubeconfig not given, KUBECONFIG not set, not running in a cluster, and \(path) does not exist")
        }
        return try fromKubeconfig(paths: [path], context: options.context)
    }

    public static func inCluster(
        environment: [String: String] = ProcessInfo.processInfo.environment, directory: String = "/var/run/secrets/kubernetes.io/serviceaccount"
    ) throws -> ClusterConfiguration {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], let port = environment["KUBERNETES_SERVICE_PORT"], !host.isEmpty, !port.isEmpty
        else {
            throw KubeError.configuration("in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
        }
        let tokenPath = directory + "/token"
        guard FileManager.default.isReadableFile(atPath: tokenPath) else {
            throw KubeError.configuration("in-cluster configuration: cannot read service-account token \(tokenPath)")
        }
        let caPath = directory + "/ca.crt"
        let ca = try? String(contentsOfFile: caPath, encoding: .utf8)
        let namespace = (try? String(contentsOfFile: directory + "/namespace", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let hostPart = host.contains(":") ? "[\(host)]" : host
        guard let url = URL(string: "https://\(hostPart):\(port)") else {
            throw KubeError.configuration("in-cluster configuration: invalid host \(host):\(port)")
        }
        return ClusterConfiguration(
            server: url, caCertificatePEM: ca, credentials: .tokenFile(tokenPath), namespace: namespace ?? "default", source: "in-cluster")
    }

    public static func fromKubeconfig(paths: [String], context requested: String? = nil) throws -> ClusterConfiguration {
        var clusters: [String: (JSONValue, String)] = [:]
        var users: [String: (JSONValue, String)] = [:]
        var contexts: [String: (JSONValue, String)] = [:]
        var currentContext: String?
        var readAny = false
        for path in paths {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                if paths.count > 1 && !FileManager.default.fileExists(atPath: path) { continue }
                throw KubeError.configuration("kubeconfig \(path): cannot read file: \(error.localizedDescription)")
            }
            readAny = true
            let doc: JSONValue
            do { doc = try YAML.parse(text) } catch {
                throw KubeError.configuration("kubeconfig \(path): not valid YAML: \(error)")
            }
            if doc.isNull { continue }
            guard case .object = doc else { throw KubeError.configuration("kubeconfig \(path): top level must be a mapping") }
            func collect(_ field: String, _ inner: String, into dict: inout [String: (JSONValue, String)]) throws {
                for (i, entry) in (doc[field]?.arrayValue ?? []).enumerated() {
                    guard let name = entry["name"]?.stringValue else {
                        throw KubeError.configuration("kubeconfig \(path): \(field)[\(i)].name is missing")
                    }
                    if dict[name] == nil { dict[name] = (entry[inner] ?? .object([:]), path) }
                }
            }
            try collect("clusters", "cluster", into: &clusters)
            try collect("users", "user", into: &users)
            try collect("contexts", "context", into: &contexts)
            if currentContext == nil, let c = doc["current-context"]?.stringValue, !c.isEmpty { currentContext = c }
        }
        guard readAny else { throw KubeError.configuration("kubeconfig: none of \(paths.joined(separator: ", ")) exists") }
        let where_ = paths.joined(separator: ":")
        guard let contextName = requested ?? currentContext else {
            throw KubeError.configuration("kubeconfig \(where_): current-context is not set and no context was given")
        }
        guard let (context, contextFile) = contexts[contextName] else {
            throw KubeError.configuration("kubeconfig \(where_): context \"\(contextName)\" not found")
        }
        guard let clusterName = context["cluster"]?.stringValue, let (cluster, clusterFile) = clusters[clusterName] else {
            throw KubeError.configuration(
                "kubeconfig \(contextFile): contexts[\(contextName)].cluster \"\(context["cluster"]?.stringValue ?? "")\" not found")
        }
        guard let serverText = cluster["server"]?.stringValue, let server = URL(string: serverText), server.scheme != nil, server.host != nil else {
            throw KubeError.configuration("kubeconfig \(clusterFile): clusters[\(clusterName)].server is missing or not a URL")
        }
        func resolve(_ p: String, relativeTo file: String) -> String {
            p.hasPrefix("/") ? p : URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent(p).path
        }
        func dataOrFile(_ obj: JSONValue, data: String, file: String, owner: String, ownerFile: String) throws -> String? {
            if let d = obj[data]?.stringValue, !d.isEmpty {
                guard let decoded = Data(base64Encoded: d, options: .ignoreUnknownCharacters), let s = String(data: decoded, encoding: .utf8) else {
                    throw KubeError.configuration("kubeconfig \(ownerFile): \(owner).\(data) is not valid base64")
                }
                return s
            }
            if let f = obj[file]?.stringValue, !f.isEmpty {
                let path = resolve(f, relativeTo: ownerFile)
                do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
                    throw KubeError.configuration("kubeconfig \(ownerFile): \(owner).\(file): cannot read \(path)")
                }
            }
            return nil
        }
        let ca = try dataOrFile(
            cluster, data: "certificate-authority-data", file: "certificate-authority", owner: "clusters[\(clusterName)]", ownerFile: clusterFile)
        let insecure = cluster["insecure-skip-tls-verify"]?.boolValue ?? false
        var credentials = ClusterConfiguration.Credentials.none
        if let userName = context["user"]?.stringValue, !userName.isEmpty {
            guard let (user, userFile) = users[userName] else {
                throw KubeError.configuration("kubeconfig \(contextFile): contexts[\(contextName)].user \"\(userName)\" not found")
            }
            let owner = "users[\(userName)]"
            if let token = user["token"]?.stringValue, !token.isEmpty {
                credentials = .token(token)
            } else if let tf = user["tokenFile"]?.stringValue, !tf.isEmpty {
                credentials = .tokenFile(resolve(tf, relativeTo: userFile))
            } else if let cert = try dataOrFile(user, data: "client-certificate-data", file: "client-certificate", owner: owner, ownerFile: userFile)
            {
                guard let key = try dataOrFile(user, data: "client-key-data", file: "client-key", owner: owner, ownerFile: userFile) else {
                    throw KubeError.configuration("kubeconfig \(userFile): \(owner).client-key-data is missing (a client certificate needs its key)")
                }
                credentials = .clientCertificate(certificatePEM: cert, keyPEM: key)
            } else if let exec = user["exec"], case .object = exec {
                guard let command = exec["command"]?.stringValue, !command.isEmpty else {
                    throw KubeError.configuration("kubeconfig \(userFile): \(owner).exec.command is missing")
                }
                var env: [String: String] = [:]
                for e in exec["env"]?.arrayValue ?? [] {
                    if let n = e["name"]?.stringValue { env[n] = e["value"]?.stringValue ?? "" }
                }
                credentials = .exec(
                    ExecConfig(
                        command: command, args: exec["args"]?.arrayValue?.compactMap(\.stringValue) ?? [], env: env,
                        apiVersion: exec["apiVersion"]?.stringValue ?? "client.authentication.k8s.io/v1",
                        workingDirectory: URL(fileURLWithPath: userFile).deletingLastPathComponent().path))
            } else if user["auth-provider"] != nil {
                throw KubeError.configuration("kubeconfig \(userFile): \(owner).auth-provider is not supported; use an exec credential plugin")
            }
        }
        return ClusterConfiguration(
            server: server, caCertificatePEM: ca, insecureSkipTLSVerify: insecure, credentials: credentials,
            namespace: context["namespace"]?.stringValue ?? "default", tlsServerName: cluster["tls-server-name"]?.stringValue,
            source: where_)
    }
}
