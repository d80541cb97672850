//go:build tools

// Package tools pins the KEDA operator and metrics adapter that build.sh builds
// from the Go module proxy.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
