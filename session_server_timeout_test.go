package alock

import (
	"testing"
	"time"
)

func TestDeriveBounds(t *testing.T) {
	for _, c := range []struct {
		opts                 SessionOptions
		client, server, kern time.Duration
		settings             string
	}{
		{SessionOptions{}, 10 * time.Second, 14 * time.Second, 12 * time.Second,
			"[[tcp_user_timeout 14000ms] [tcp_keepalives_idle 7s] [tcp_keepalives_interval 1s] [tcp_keepalives_count 7] [client_connection_check_interval 1000ms]]"},
		{SessionOptions{KeepaliveInterval: time.Second, KeepaliveTimeout: 2 * time.Second}, 3 * time.Second, 5 * time.Second, 4 * time.Second,
			"[[tcp_user_timeout 5000ms] [tcp_keepalives_idle 2s] [tcp_keepalives_interval 1s] [tcp_keepalives_count 3] [client_connection_check_interval 500ms]]"},
		{SessionOptions{KeepaliveInterval: 300 * time.Millisecond, KeepaliveTimeout: 300 * time.Millisecond}, 3 * time.Second, 5 * time.Second, 4 * time.Second, ""},
		{SessionOptions{ServerTimeout: 30 * time.Second}, 10 * time.Second, 30 * time.Second, 20 * time.Second, ""},
		{SessionOptions{ServerTimeout: -1}, 10 * time.Second, 0, 12 * time.Second, ""},
	} {
		b, err := deriveBounds(c.opts.defaults())
		if err != nil || b.client != c.client || b.server != c.server || b.kernel != c.kern {
			t.Errorf("%+v: got %+v, %v; want client %v server %v kernel %v", c.opts, b, err, c.client, c.server, c.kern)
		}
		if got := render(b.serverSettings()); c.settings != "" && got != c.settings {
			t.Errorf("%+v: settings %s, want %s", c.opts, got, c.settings)
		}
	}
	if _, err := deriveBounds(SessionOptions{ServerTimeout: 10500 * time.Millisecond}.defaults()); err == nil {
		t.Error("a ServerTimeout within a second of the client's bound was accepted")
	}
}

// render prints settings as [[name value] ...].
func render(v [][2]string) string {
	s := "["
	for i, kv := range v {
		if i > 0 {
			s += " "
		}
		s += "[" + kv[0] + " " + kv[1] + "]"
	}
	return s + "]"
}
