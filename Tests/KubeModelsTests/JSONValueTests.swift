import Foundation
import Testing
@testable import KubeModels

@Suite struct JSONValueTests {
    @Test func parsesAndSerialisesWithoutChangingNumbers() throws {
        let text = #"{"a":3,"b":-9007199254740993,"c":1.5,"d":[true,false,null],"e":"x\"\n\u00e9\ud83d\ude00","f":{}}"#
        let v = try JSONValue.parse(text)
        #expect(v["a"] == .int(3))
        #expect(v["b"] == .int(-9007199254740993))
        #expect(v["c"] == .double(1.5))
        #expect(v["e"] == .string("x\"\né😀"))
        #expect(try JSONValue.parse(v.serializedString()) == v)
    }

    @Test(arguments: ["", "{", "{\"a\":}", "[1,]", "tru", "{\"a\" 1}", "\"\u{01}\"", "01", "1.", "{}x", "[\"\\q\"]"])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test func boundsNestingDepth() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
    }

    @Test func serialisesKubernetesKeysFirst() throws {
        let v: JSONValue = ["status": [:], "zeta": 1, "kind": "X", "apiVersion": "v1", "metadata": [:], "spec": [:], "alpha": 2]
        #expect(v.serializedString() == #"{"apiVersion":"v1","kind":"X","metadata":{},"spec":{},"status":{},"alpha":2,"zeta":1}"#)
    }

    @Test func mergePatchFollowsRFC7386() {
        let target: JSONValue = ["a": "b", "c": ["d": "e", "f": "g"]]
        let patch: JSONValue = ["a": "z", "c": ["f": .null]]
        #expect(MergePatch.apply(patch, to: target) == ["a": "z", "c": ["d": "e"]])
        let modified: JSONValue = ["a": "z", "c": ["d": "e"], "n": [1, 2]]
        let diff = MergePatch.diff(from: target, to: modified)!
        #expect(MergePatch.apply(diff, to: target) == modified)
        #expect(MergePatch.diff(from: target, to: target) == nil)
    }

    @Test func jsonPatchOperations() throws {
        let doc: JSONValue = ["a": [1, 2], "b": ["c": "d"]]
        let patch: JSONValue = [
            ["op": "add", "path": "/a/1", "value": 9], ["op": "remove", "path": "/b/c"],
            ["op": "replace", "path": "/a/0", "value": 0], ["op": "copy", "from": "/a", "path": "/x"],
            ["op": "move", "from": "/x", "path": "/y"], ["op": "test", "path": "/y/1", "value": 9],
            ["op": "add", "path": "/a/-", "value": "end"], ["op": "add", "path": "/b/k~1s", "value": true],
        ]
        #expect(try JSONPatch.apply(patch, to: doc) == ["a": [0, 9, 2, "end"], "b": ["k/s": true], "y": [0, 9, 2]])
        #expect(throws: JSONPatchError.self) { try JSONPatch.apply([["op": "test", "path": "/a", "value": 1]], to: doc) }
        #expect(throws: JSONPatchError.self) { try JSONPatch.apply([["op": "remove", "path": "/nope"]], to: doc) }
    }

    @Test func timesRoundTripInRFC3339() {
        let d = Date(timeIntervalSince1970: 1_700_000_000)
        let s = KubeTime.format(d)
        #expect(s == "2023-11-14T22:13:20Z")
        #expect(KubeTime.parse(s) == d)
        #expect(KubeTime.parse("2023-11-15T00:13:20+02:00") == d)
        #expect(KubeTime.parse("2023-11-14T22:13:20.250Z")!.timeIntervalSince1970 == 1_700_000_000.25)
        #expect(KubeTime.format(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00Z")
        #expect(KubeTime.parse("2026-13-18T08:26:40Z") == nil)
        #expect(KubeTime.formatMicro(Date(timeIntervalSince1970: 1.5)) == "1970-01-01T00:00:01.500000Z")
    }

    @Test func httpDatesParse() {
        #expect(KubeTime.parseHTTPDate("Tue, 14 Nov 2023 22:13:20 GMT") == Date(timeIntervalSince1970: 1_700_000_000))
        #expect(KubeTime.parseHTTPDate("Wed, 02 Dec 2026 00:31:10 GMT").map(KubeTime.format) == "2026-12-02T00:31:10Z")
        for bad in ["", "Tue, 14 Nov 2023 22:13:20 PST", "Tue, 14 Foo 2023 22:13:20 GMT", "Tue, 32 Nov 2023 22:13:20 GMT", "2023-11-14T22:13:20Z"] {
            #expect(KubeTime.parseHTTPDate(bad) == nil, "\(bad)")
        }
    }

    /// Go's time.ParseDuration, as metav1.Duration (Tekton's `spec.timeouts`) carries it.
    @Test func durationsParseAsGoDoes() {
        #expect(KubeDuration.parseSeconds("1h0m0s") == 3600)
        #expect(KubeDuration.parseSeconds("5s") == 5)
        #expect(KubeDuration.parseSeconds("1.5h") == 5400)
        #expect(KubeDuration.parseSeconds("1m30s") == 90)
        #expect(KubeDuration.parseSeconds("300ms") == 0.3)
        #expect(KubeDuration.parseSeconds("0") == 0)
        #expect(KubeDuration.parseSeconds("-2m") == -120)
        for bad in ["", "5", "s", "1d", "1h junk", ".s"] { #expect(KubeDuration.parseSeconds(bad) == nil, "\(bad)") }
    }

    @Test func yamlScalarsResolveLikeKubernetes() throws {
        let docs = try YAML.parseAll("a: 1\nb: \"1\"\nc: true\nd: 1.5\ne: null\nf: text\n---\n---\nx: [1, two]\n")
        #expect(docs.count == 2)
        #expect(docs[0] == ["a": 1, "b": "1", "c": true, "d": 1.5, "e": .null, "f": "text"])
        #expect(docs[1] == ["x": [1, "two"]])
    }
}

@Suite struct SelectorTests {
    @Test func parsesEveryOperator() throws {
        let s = try LabelSelector.parse("app=web, tier != db,env in (prod, staging),zone notin (a),gpu,!legacy,x==y")
        #expect(s.requirements.count == 7)
        #expect(s.matches(["app": "web", "tier": "fe", "env": "prod", "zone": "b", "gpu": "", "x": "y"]))
        #expect(!s.matches(["app": "web", "tier": "fe", "env": "prod", "zone": "b", "gpu": "", "legacy": "1", "x": "y"]))
        #expect(!s.matches(["app": "web", "tier": "db", "env": "prod", "gpu": "", "x": "y"]))
        #expect(try LabelSelector.parse("").isEmpty)
        #expect(try LabelSelector.parse("a in (x,y)").description == "a in (x,y)")
    }

    @Test(arguments: ["a in x", "=b", "a=b c", "a in (x", "-a=b", "a=b=c", "a!"])
    func rejectsMalformedSelectors(_ text: String) {
        #expect(throws: LabelSelector.ParseError.self) { try LabelSelector.parse(text) }
    }

    @Test func fieldSelectors() throws {
        let f = try FieldSelector.parse("metadata.name=a,metadata.namespace!=b")
        #expect(f.matches(["metadata.name": "a", "metadata.namespace": "c"]))
        #expect(!f.matches(["metadata.name": "a", "metadata.namespace": "b"]))
    }
}

@Suite struct ResourceCodecTests {
    @Test func updateKeepsFieldsTheModelDoesNotKnow() throws {
        let wire: JSONValue = [
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ["name": "c", "namespace": "ns", "futureMetadataField": "keep", "labels": ["a": "1"]],
            "data": ["k": "v"], "someFutureField": ["nested": [1, 2]],
        ]
        var cm = try ResourceCodec.decode(ConfigMap.self, from: wire)
        cm.data?["k2"] = "v2"
        cm.metadata.labels = nil
        let out = try ResourceCodec.encode(cm)
        #expect(out["someFutureField"] == ["nested": [1, 2]])
        #expect(out[path: "metadata", "futureMetadataField"] == "keep")
        #expect(out[path: "metadata", "labels"] == nil)
        #expect(out["data"] == ["k": "v", "k2": "v2"])
    }

    @Test func freshObjectsCarryApiVersionAndKind() throws {
        let out = try ResourceCodec.encode(
            Lease(metadata: ObjectMeta(name: "l", namespace: "n"), spec: .init(holderIdentity: "me", leaseDurationSeconds: 15)))
        #expect(out["apiVersion"] == "coordination.k8s.io/v1")
        #expect(out["kind"] == "Lease")
        #expect(out[path: "spec", "leaseDurationSeconds"] == 15)
        #expect(out["unknownFields"] == nil)
    }
}
