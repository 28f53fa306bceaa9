package alock

import (
	"net"
	"syscall"
	"time"
	"unsafe"
)

// tcpUserTimeout is TCP_USER_TIMEOUT (linux/tcp.h), missing from syscall.
const tcpUserTimeout = 0x12

// setUserTimeout sets the socket's TCP_USER_TIMEOUT: how long sent data may
// stay unacknowledged, and (with keepalive) how long the peer may stay
// silent, before the kernel gives up on the connection.
func setUserTimeout(tc *net.TCPConn, d time.Duration) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
	})
}

// sinceHeard returns how long ago the kernel last received a packet of the
// connection that the peer sent in answer to ours (data, or an
// acknowledgement: of data, or of a keepalive probe), and whether data we
// sent is unacknowledged past a retransmission timeout (stuck): the peer's
// own keepalive probes refresh the first, not the second, when only our
// direction is cut. ok is false if the socket is closed or TCP_INFO cannot
// be read.
func sinceHeard(tc *net.TCPConn) (d time.Duration, stuck, ok bool) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false, false
	}
	var info syscall.TCPInfo
	var errno syscall.Errno
	err = raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(info))
		_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	})
	if err != nil || errno != 0 {
		return 0, false, false
	}
	d = time.Duration(min(info.Last_data_recv, info.Last_ack_recv)) * time.Millisecond
	return d, info.Unacked > 0 && info.Retransmits > 0, true
}
