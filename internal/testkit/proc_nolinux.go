//go:build !linux

package testkit

import "os/exec"

// setProcAttrs does nothing where the kernel cannot tie a child's life to its parent's.
func setProcAttrs(*exec.Cmd) {}
