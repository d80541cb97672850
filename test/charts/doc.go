// Package charts holds the tests of the Helm charts under charts/: they render philotes-worker and the philotes
// umbrella with the Helm v4 SDK for a table of scenarios, validate every rendered object strictly against the
// Kubernetes 1.37 OpenAPI v3 spec and the KEDA v2.21.0 (and prometheus-operator) CRDs read from the Go module
// cache, and assert on the objects. It is its own module so that the product's go.mod stays free of Helm and
// Kubernetes dependencies.
package charts
