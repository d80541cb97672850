//go:build tools

// Package tools pins the Kubernetes control-plane commands that build.sh builds
// (go build k8s.io/kubernetes/cmd/...) from the Go module proxy.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
