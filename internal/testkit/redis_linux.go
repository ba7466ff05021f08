package testkit

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has the kernel kill redis-server if the test binary
// dies without running its cleanups (a test timeout, a crash), so no stray
// server keeps a port.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
