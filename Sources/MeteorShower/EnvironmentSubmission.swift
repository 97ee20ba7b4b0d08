import Foundation
import HTTPTypes
import Hummingbird
import KubeClient
import KubeModels
import MeteorCore
import NIOCore

/// The home page's second form: a notebook image from a package list (a CustomRuntimeEnvironment of buildType
/// PackageList), submitted and watched like a Meteor.
struct EnvironmentForm: Decodable, Sendable {
    var name: String?
    var packages: String?
    var python: String?
    var csrf: String?
}

enum EnvironmentSubmission {
    /// The Python versions offered (Open Data Hub's workbench images).
    static let pythons = ["3.11", "3.9"]

    /// The form checked with the operator's own rules (`RuntimeEnvironmentBuilder.problems`), errors keyed by field.
    static func validate(_ form: EnvironmentForm) -> (name: String, spec: CustomRuntimeEnvironment.Spec?, errors: [String: String]) {
        var errors: [String: String] = [:]
        let packages = (form.packages ?? "").split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let python = form.python ?? pythons[0]
        if !pythons.contains(python) { errors["python"] = "Choose one of \(pythons.joined(separator: ", "))." }
        var name = (form.name ?? "").trimmingCharacters(in: .whitespaces)
        if name.isEmpty, let first = packages.first {
            name =
                Submission.baseName(for: "/" + (first.split(whereSeparator: { "[=<>!~ ;".contains($0) }).first.map(String.init) ?? "notebook"))
                + "-notebook"
        }
        if name.range(of: #"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\z"#, options: .regularExpression) == nil {
            errors["name"] = "Use lower-case letters, digits and - (at most 40, starting and ending with a letter or digit)."
        }
        let spec = CustomRuntimeEnvironment.Spec(
            buildType: .packageList, packageVersions: packages, runtimeEnvironment: .init(pythonVersion: python))
        if packages.isEmpty {
            errors["packages"] = "List at least one package, one per line (for example pandas>=2.2)."
        } else if let problem = RuntimeEnvironmentBuilder.problems(spec).first {
            errors["packages"] = Submission.sentence(problem.replacingOccurrences(of: "spec.packageVersions: ", with: ""))
        }
        return (name, errors.isEmpty ? spec : nil, errors)
    }
}

extension MeteorShower {
    func submitEnvironment(_ request: Request, _ context: ShowerContext) async throws -> Response {
        let visitor = visitor(request, context)
        let body = try await request.body.collect(upTo: 64 * 1024)
        let form = (try? URLEncodedFormDecoder().decode(EnvironmentForm.self, from: String(buffer: body))) ?? EnvironmentForm()
        if let refused = guardWrite(request, visitor, form: form.csrf) { return refused }
        let echo: [String: Any] = ["name": form.name ?? "", "packages": form.packages ?? "", "python": form.python ?? ""]
        let (name, spec, errors) = EnvironmentSubmission.validate(form)
        guard let spec else { return home(request, context, environment: echo, errors: errors, status: .unprocessableContent) }
        if let limited = rateLimit(request, visitor) { return limited }
        var environment = CustomRuntimeEnvironment(metadata: ObjectMeta(name: name, namespace: options.namespace), spec: spec)
        environment.metadata.annotations = [Self.submitterAnnotation: visitor.user ?? "anonymous"]
        environment.metadata.labels = ["app.kubernetes.io/created-by": "meteor-shower"]
        do {
            _ = try await writer(visitor).dynamic(CustomRuntimeEnvironment.resourceType, namespace: options.namespace).create(
                try JSONValue(encoding: environment), params: WriteParams(fieldManager: "meteor-shower", fieldValidation: .strict))
        } catch let e as KubeError {
            let text =
                e.isAlreadyExists ? "\(name) exists already: choose another name." : "The cluster refused this image: \(e.status?.message ?? "\(e)")"
            return home(
                request, context, environment: echo, environmentError: text, status: e.isAlreadyExists ? .conflict : Self.refusalStatus(e))
        }
        logger.info(
            "shower: submitted a notebook image",
            metadata: ["environment": "\(options.namespace)/\(name)", "submitter": "\(visitor.user ?? "anonymous")"])
        return Response(status: .seeOther, headers: [.location: "/environments/\(name)"])
    }

    /// A CustomRuntimeEnvironment's page, read from the API server (the page keeps no cache of them), refreshed
    /// every few seconds until the build is done.
    func environmentPage(_ request: Request, _ context: ShowerContext, name: String) async throws -> Response {
        let visitor = visitor(request, context)
        let csrf = csrfToken(request, visitor)
        let found: JSONValue
        do {
            found = try await client.dynamic(CustomRuntimeEnvironment.resourceType, namespace: options.namespace).get(name)
        } catch let e as KubeError where e.isNotFound {
            return message(
                request, visitor, status: .notFound, heading: "Not found", text: "There is no notebook image named \(name) in \(options.namespace).",
                csrf: csrf)
        } catch {
            return message(
                request, visitor, status: .badGateway, heading: "Cluster unavailable", text: "Could not read \(name) from the API server: \(error)",
                csrf: csrf)
        }
        let phase = found[path: "status", "phase"]?.stringValue ?? "Pending"
        let ready = (found[path: "status", "conditions"]?.arrayValue ?? []).first { $0["type"] == "Ready" }
        var view: [String: Any] = [
            "name": name, "phase": phase,
            "phaseClass": phase == "Succeeded" ? "state-ready" : phase == "Failed" ? "state-failed" : "state-building",
            "packages": (found[path: "spec", "packageVersions"]?.arrayValue ?? []).compactMap(\.stringValue),
            "python": found[path: "spec", "runtimeEnvironment", "pythonVersion"]?.stringValue ?? "",
        ]
        if let m = ready?["message"]?.stringValue { view["ready"] = m }
        if let image = found[path: "status", "image"]?.stringValue { view["image"] = image }
        if let run = found[path: "status", "pipelines"]?.arrayValue?.first?["pipelineRunName"]?.stringValue { view["run"] = run }
        let done = ready?["status"] == "True" || phase == "Failed"
        return page(visitor, title: name, content: Templates.render("environment", view), events: "", csrf: csrf, refresh: done ? nil : 5)
    }
}
