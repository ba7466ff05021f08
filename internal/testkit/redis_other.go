//go:build !linux

package testkit

import "os/exec"

// setParentDeathSignal does nothing where the kernel has no parent-death
// signal; t.Cleanup still stops the server.
func setParentDeathSignal(*exec.Cmd) {}
