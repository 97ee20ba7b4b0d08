# The operator image: hack/build-image.sh (docker or podman). Multi-stage: Swift's toolchain builds a release
# binary with the Swift runtime linked in statically; the runtime stage is distroless (glibc, CA certificates,
# a non-root user, no shell, no package manager) with that one binary added.
FROM docker.io/library/swift:6.3-noble AS build
WORKDIR /src
# Dependencies first, so source edits do not re-resolve them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product meteor-operator -Xlinker -s \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/meteor-operator" /out/meteor-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meteor-operator /usr/local/bin/meteor-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/meteor-operator"]
CMD ["run", "--leader-elect"]
