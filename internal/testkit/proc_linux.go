//go:build linux

package testkit

import (
	"os/exec"
	"syscall"
)

// setProcAttrs makes the kernel kill the subprocess if the test process dies first, so that no
// Caddy outlives an interrupted test run.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
