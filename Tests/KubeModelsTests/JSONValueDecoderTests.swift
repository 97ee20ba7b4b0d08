import Foundation
import KubeModels
import Testing

/// The tree decoder decodes what Foundation's JSONDecoder (over the serialised bytes) decodes, the same way, and
/// refuses what it refuses, naming the path.
@Suite struct JSONValueDecoderTests {
    func viaBytes<T: Decodable>(_ type: T.Type, _ value: JSONValue) throws -> T {
        try JSONCoding.decoder.decode(T.self, from: Data(value.serialized()))
    }

    @Test func decodesModelsAsJSONDecoderDoes() throws {
        let event: JSONValue = [
            "apiVersion": "v1", "kind": "Event",
            "metadata": ["name": "e1", "namespace": "default", "creationTimestamp": "2026-11-23T10:00:00Z", "labels": ["a": "b"], "generation": 3],
            "involvedObject": ["kind": "Meteor", "name": "demo", "namespace": "default", "uid": "u"],
            "reason": "Ready", "message": "all good", "type": "Normal", "count": 4,
            "firstTimestamp": "2026-11-23T10:00:00Z", "lastTimestamp": "2026-11-23T10:05:00.123456Z",
            "source": ["component": "meteor-operator"], "unknown": ["kept": [1, 2.5, true, .null]],
        ]
        #expect(try event.decode(as: Event.self) == viaBytes(Event.self, event))
        let lease: JSONValue = [
            "metadata": ["name": "l"],
            "spec": ["holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": "2026-11-23T10:00:00.000000Z", "leaseTransitions": .null],
        ]
        #expect(try lease.decode(as: Lease.self) == viaBytes(Lease.self, lease))
        // Untyped subtrees come through whole; numbers keep their kind.
        let tree: JSONValue = ["a": [1, 1.5, "x", ["b": .null]], "n": 9_007_199_254_740_993]
        #expect(try tree.decode(as: [String: JSONValue].self) == tree.objectValue)
        #expect(try JSONValue.int(3).decode(as: Double.self) == 3)
        #expect(try JSONValue.double(3).decode(as: Int.self) == 3)
        #expect(try ([1, .null, 3] as JSONValue).decode(as: [Int?].self) == [1, nil, 3])
    }

    @Test func refusesWhatJSONDecoderRefusesNamingThePath() {
        let cases: [(JSONValue, String)] = [
            (["metadata": ["name": 5]], "name"),
            (["metadata": ["name": "l"], "spec": ["leaseDurationSeconds": 1.5]], "leaseDurationSeconds"),
            (["metadata": ["name": "l"], "spec": ["leaseDurationSeconds": 4_294_967_296]], "leaseDurationSeconds"),
            (["metadata": ["name": "l", "creationTimestamp": "yesterday"]], "creationTimestamp"),
            (["metadata": ["name": "l"], "spec": "nope"], "spec"),
        ]
        for (value, field) in cases {
            #expect(throws: DecodingError.self, "\(value.serializedString())") { try value.decode(as: Lease.self) }
            #expect(throws: (any Error).self) { try viaBytes(Lease.self, value) }
            do {
                _ = try value.decode(as: Lease.self)
            } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context) {
                #expect(context.codingPath.map(\.stringValue).last == field, "\(context)")
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }
}
