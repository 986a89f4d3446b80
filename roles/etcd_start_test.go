package roles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/kprov/kprov/provision/plan"
)

// TestEtcdFirstMemberStarts starts the first member of the ha-external
// example from its rendered configuration with etcd's embed package, with
// kprov's real certificates, and writes and reads a key over TLS with the
// healthcheck client certificate. Only locations are rewritten: the
// certificate directory and data directory to a temporary one, the
// member's address to 127.0.0.2 and the ports to free ones, so the test
// runs beside anything else on the machine.
func TestEtcdFirstMemberStarts(t *testing.T) {
	inv := loadInventory(t, "../examples/ha-external.kprov.hcl")
	st := newState(t, inv)
	r := render(t, renderCase{}, inv, st)
	h := r.Host(inv.Topology.EtcdMembers[0])
	if h.Etcd.Bootstrap.State != EtcdStateNew {
		t.Fatalf("first member: state %q, want new", h.Etcd.Bootstrap.State)
	}

	dir := t.TempDir()
	for _, f := range h.Files {
		if !strings.HasPrefix(f.Path, "/etc/kubernetes/pki/") {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Content, f.Mode); err != nil {
			t.Fatal(err)
		}
	}
	clientPort, peerPort := freePort(t), freePort(t)
	conf := strings.NewReplacer(
		"/etc/kubernetes/pki/", filepath.Join(dir, "etc/kubernetes/pki")+"/",
		`data-dir: "`+inv.Etcd.DataDir+`"`, `data-dir: "`+filepath.Join(dir, "data")+`"`,
		h.Address+":2379", "127.0.0.2:"+clientPort,
		h.Address+":2380", "127.0.0.2:"+peerPort,
		"127.0.0.1:2379", "127.0.0.1:"+clientPort,
	).Replace(string(fileAt(t, h, plan.EtcdConfigPath).Content))
	confPath := filepath.Join(dir, "etcd.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(conf, h.Address) || strings.Contains(conf, ":2379") || strings.Contains(conf, ":2380") {
		t.Fatalf("address or port left after rewriting:\n%s", conf)
	}
	cfg, err := embed.ConfigFromFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("etcd does not start from the rendered configuration: %v", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd failed: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready after 60s")
	}

	pool := x509.NewCertPool()
	pool.AddCert(st.EtcdCA.Cert)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://127.0.0.1:" + clientPort},
		DialTimeout: 10 * time.Second,
		TLS:         &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{st.EtcdHealthcheckClient.TLSCertificate()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "kprov", "rendered"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	got, err := cli.Get(ctx, "kprov")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "rendered" {
		t.Fatalf("get over TLS: %v %v", got, err)
	}
	members, err := cli.MemberList(ctx)
	if err != nil || len(members.Members) != 1 || members.Members[0].Name != h.Name {
		t.Fatalf("members: %v %v, want only %s", members, err, h.Name)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
