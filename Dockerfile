# syntax=docker/dockerfile:1
# Static, CGO-free philotes-worker on a distroless base, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o /out/philotes-worker ./cmd/philotes-worker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/philotes-worker /usr/local/bin/philotes-worker
# The default warehouse lives here; mount a volume or use s3:// in production.
WORKDIR /var/lib/philotes
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/philotes-worker"]
CMD ["run"]
