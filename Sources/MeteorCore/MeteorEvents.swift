import KubeModels
import KubeRuntime

/// The reasons of the Events the reconciler records itself (condition reasons, recorded when a condition turns,
/// are `MeteorStatusVocabulary`'s and the planners').
public enum MeteorEventReason: String, Sendable, CaseIterable {
    case expired = "Expired"
    case pipelineRunCreated = "PipelineRunCreated"
    case ready = "Ready"
    case notebookImageNotPublished = "NotebookImageNotPublished"
    case releaseFound = "ReleaseFound"
    case imageVerified = "ImageVerified"
    case imageIndexPublished = "ImageIndexPublished"
    case imageIndexNotPublished = "ImageIndexNotPublished"
    case applicationCreated = "ApplicationCreated"
    case applicationUpdated = "ApplicationUpdated"
    case applicationConflict = "ApplicationConflict"
    case deliveryStopped = "DeliveryStopped"
    case gateStarted = "GateStarted"
}

extension EventRecorder {
    func record(_ object: JSONValue, type: EventType, reason: MeteorEventReason, message: String) async {
        await record(object, type: type, reason: reason.rawValue, message: message)
    }
}
