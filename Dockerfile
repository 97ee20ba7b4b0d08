# Build: docker build -t meteor-operator .
FROM swift:6.1-noble AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product meteor-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/.build/release/meteor-operator /usr/local/bin/meteor-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meteor-operator"]
