import Foundation
import KubeModels
import MeteorCore

/// What the page shows of one Meteor, built from the informer's copy (the Meteor as the API server last sent it).
/// Plain dictionaries: the Mustache templates read them by key.
enum MeteorViews {

    static func name(_ m: JSONValue) -> String { m[path: "metadata", "name"]?.stringValue ?? "" }

    /// Newest first.
    static func sorted(_ meteors: [JSONValue]) -> [JSONValue] {
        meteors.sorted { a, b in
            let ta = a[path: "metadata", "creationTimestamp"]?.stringValue ?? "", tb = b[path: "metadata", "creationTimestamp"]?.stringValue ?? ""
            return ta != tb ? ta > tb : name(a) < name(b)
        }
    }

    /// One row of the home page's table.
    static func row(_ m: JSONValue) -> [String: Any] {
        let name = name(m)
        let glance = MeteorGlance(m)
        let phase = m[path: "metadata", "deletionTimestamp"] != nil ? "Deleting" : glance.phase
        var pipelines: [[String: Any]] = []
        var book: String?
        var image: String?
        for p in m[path: "status", "pipelines"]?.arrayValue ?? [] {
            let pipeline = p["name"]?.stringValue ?? ""
            pipelines.append(["name": pipeline, "state": pipelineState(p), "stateClass": pipelineClass(p)])
            // The site from the JupyterBook build, the image JupyterHub spawns from the notebook-image build.
            if pipeline == Pipeline.jupyterbook.rawValue, let url = p["url"]?.stringValue, isWebLink(url) { book = url }
            if pipeline == Pipeline.jupyterhub.rawValue, let img = p["image"]?.stringValue, !img.isEmpty {
                image = img
            }
        }
        // Edge images, one per platform, with their verification.
        for i in m[path: "status", "images"]?.arrayValue ?? [] {
            let verified = i["verified"] == true
            let state = verified ? "verified" : (i["reason"]?.stringValue ?? (i["digest"] == nil ? "building" : "not verified"))
            pipelines.append([
                "name": "\(i["name"]?.stringValue ?? "") (\(i["platform"]?.stringValue ?? ""))", "state": state,
                "stateClass": verified ? "state-ready" : (i["reason"] != nil ? "state-failed" : "state-building"),
            ])
        }
        // Requested pipelines without a status yet are shown as waiting.
        let requested =
            (m[path: "spec", "pipelines"]?.arrayValue?.compactMap(\.stringValue)) ?? [Pipeline.jupyterhub.rawValue, Pipeline.jupyterbook.rawValue]
        for p in requested where !pipelines.contains(where: { ($0["name"] as? String) == p }) && p != Pipeline.edge.rawValue {
            pipelines.append(["name": p, "state": "Waiting", "stateClass": "state-waiting"])
        }
        var row: [String: Any] = [
            "name": name,
            "url": m[path: "spec", "url"]?.stringValue ?? "",
            "ref": m[path: "spec", "ref"]?.stringValue ?? "",
            "phase": phase,
            "phaseClass": stateClass(phase),
            "pipelines": pipelines,
            "deployments": deployments(m),
            "fleets": (m[path: "status", "targets"]?.arrayValue ?? []).compactMap { try? $0.decode(as: EdgeTargetStatus.self) }.filter {
                $0.clusterSelector != nil
            }.map { t -> [String: Any] in
                ["summary": t.summary, "healthClass": t.degraded > 0 ? "state-failed" : t.healthy == t.desired ? "state-ready" : "state-building"]
            },
        ]
        if let rollout = try? m[path: "status", "rollout"]?.decode(as: EdgeRolloutStatus.self) {
            row["rollout"] =
                [
                    "summary": rollout.summary, "waiting": rollout.waiting ?? "",
                    "stateClass": rollout.halted != nil ? "state-failed" : rollout.completed == true ? "state-ready" : "state-building",
                ] as [String: Any]
        }
        if let book { row["book"] = book }
        if let image { row["image"] = image }
        if let expires = m[path: "status", "expirationTimestamp"]?.stringValue { row["expires"] = expires }
        // What went wrong, in the failed builds' own words when they have any.
        if phase == MeteorPhase.failed.rawValue, let problem = glance.problem { row["problem"] = problem }
        return row
    }

    /// The detail page's body.
    static func detail(_ m: JSONValue, events: [JSONValue]) -> [String: Any] {
        var d = row(m)
        d["conditions"] = (m[path: "status", "conditions"]?.arrayValue ?? []).map { c -> [String: Any] in
            [
                "type": c["type"]?.stringValue ?? "", "status": c["status"]?.stringValue ?? "",
                "statusClass": c["status"] == "True" ? "state-ready" : (c["status"] == "False" ? "state-failed" : "state-building"),
                "reason": c["reason"]?.stringValue ?? "", "message": c["message"]?.stringValue ?? "",
                "since": c["lastTransitionTime"]?.stringValue ?? "",
            ]
        }
        d["runs"] = (m[path: "status", "pipelines"]?.arrayValue ?? []).map { p -> [String: Any] in
            var run: [String: Any] = [
                "pipeline": p["name"]?.stringValue ?? "", "run": p["pipelineRunName"]?.stringValue ?? "", "state": pipelineState(p),
                "stateClass": pipelineClass(p),
            ]
            if let digest = p["digest"]?.stringValue { run["digest"] = digest }
            if let message = p["message"]?.stringValue, !message.isEmpty { run["message"] = message }
            return run
        }
        d["images"] = (m[path: "status", "images"]?.arrayValue ?? []).map { i -> [String: Any] in
            var image: [String: Any] = [
                "name": i["name"]?.stringValue ?? "", "platform": i["platform"]?.stringValue ?? "", "repository": i["repository"]?.stringValue ?? "",
                "verified": i["verified"] == true,
            ]
            if let digest = i["digest"]?.stringValue { image["digest"] = digest }
            if let reason = i["reason"]?.stringValue { image["reason"] = reason }
            if let key = i["keyFingerprint"]?.stringValue { image["key"] = key }
            return image
        }
        d["events"] = events.map { e -> [String: Any] in
            [
                "type": e["type"]?.stringValue ?? "", "typeClass": e["type"] == "Warning" ? "state-failed" : "state-ready",
                "reason": e["reason"]?.stringValue ?? "",
                "message": e["message"]?.stringValue ?? "", "count": e["count"]?.intValue ?? 1,
                "when": e["lastTimestamp"]?.stringValue ?? e["eventTime"]?.stringValue ?? e[path: "metadata", "creationTimestamp"]?.stringValue ?? "",
            ]
        }
        if let submitter = m[path: "metadata", "annotations", MeteorShower.submitterAnnotation]?.stringValue { d["submitter"] = submitter }
        d["created"] = m[path: "metadata", "creationTimestamp"]?.stringValue ?? ""
        return d
    }

    static func deployments(_ m: JSONValue) -> [[String: Any]] {
        (m[path: "status", "deployments"]?.arrayValue ?? []).map { d in
            let health = d["healthStatus"]?.stringValue ?? "Unknown"
            return [
                "target": d["target"]?.stringValue ?? "", "cluster": d["cluster"]?.stringValue ?? "",
                "sync": d["syncStatus"]?.stringValue ?? "Unknown",
                "health": health,
                "healthClass": health == "Healthy"
                    ? "state-ready" : (health == "Degraded" || health == "Missing" ? "state-failed" : "state-building"),
            ]
        }
    }

    /// Only http(s) links are rendered: a PipelineRun result is not trusted to be a safe URL (`javascript:`…).
    static func isWebLink(_ url: String) -> Bool {
        guard let scheme = URL(string: url)?.scheme?.lowercased() else { return false }
        return scheme == "http" || scheme == "https"
    }

    static func pipelineState(_ p: JSONValue) -> String {
        switch p["ready"]?.stringValue {
        case "True": return "Succeeded"
        case "False": return p["reason"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? "Failed"
        default: return p["reason"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? "Running"
        }
    }

    static func pipelineClass(_ p: JSONValue) -> String {
        switch p["ready"]?.stringValue {
        case "True": return "state-ready"
        case "False": return "state-failed"
        default: return "state-building"
        }
    }

    static func stateClass(_ state: String) -> String {
        switch state {
        case "Ready", "Succeeded", "Synced", "Healthy": return "state-ready"
        case "Failed", "Cancelled", "PipelineRunCancelled", "Deleting": return "state-failed"
        case "Pending", "Waiting": return "state-waiting"
        default: return "state-building"
        }
    }
}
