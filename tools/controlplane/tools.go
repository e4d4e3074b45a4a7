//go:build tools

// Package tools records the commands this module builds, so `go mod tidy` keeps them.
// kubectl is only built when no kubectl 1.33 is found on the machine.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
