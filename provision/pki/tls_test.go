package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"testing"
	"time"
)

// TestEtcdCertificatesInRealTLS runs the etcd certificates through crypto/tls
// as etcd uses them: a server with client-cert-auth (RequireAndVerifyClientCert)
// against the etcd CA, and clients verifying the server against the same CA.
func TestEtcdCertificatesInRealTLS(t *testing.T) {
	s := mustLoad(t, stateCopy(t))
	pool := x509.NewCertPool()
	pool.AddCert(s.EtcdCA.Cert)
	member := s.EtcdMembers["etcd-1"]
	// The fixture was issued at testNow; crypto/tls checks validity against the real clock.
	clock := func() time.Time { return testNow.Add(time.Hour) }

	for _, tc := range []struct {
		name       string
		server     *Pair
		client     *Pair
		serverName string
	}{
		{"healthcheck client to server", member.Server, s.EtcdHealthcheckClient, "127.0.0.1"},
		{"apiserver-etcd-client to server by address", member.Server, s.APIServerEtcdClient, "10.0.0.11"},
		{"peer to peer", member.Peer, s.EtcdMembers["etcd-2"].Peer, "etcd-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := handshake(t, pool, clock, tc.server, tc.client, tc.serverName); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("client certificate from another CA is refused", func(t *testing.T) {
		other := &Pair{Cert: s.CA.Cert, key: s.CA.key} // signed by the Kubernetes CA, not the etcd CA
		if err := handshake(t, pool, clock, member.Server, other, "127.0.0.1"); err == nil {
			t.Fatal("server accepted a client outside the etcd CA")
		}
	})
	t.Run("server name not in the certificate is refused", func(t *testing.T) {
		if err := handshake(t, pool, clock, member.Server, s.EtcdHealthcheckClient, "etcd-2"); err == nil {
			t.Fatal("client accepted etcd-1's certificate for etcd-2")
		}
	})
}

// handshake completes a TLS 1.3 handshake over loopback and exchanges a byte; it returns the first error of either side.
func handshake(t *testing.T, pool *x509.CertPool, clock func() time.Time, server, client *Pair, serverName string) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		Time:         clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := conn.(*tls.Conn).Handshake(); err != nil {
			serverErr <- err
			return
		}
		_, err = conn.Write([]byte{'!'})
		serverErr <- err
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{client.TLSCertificate()},
		RootCAs:      pool,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS12,
		Time:         clock,
	})
	if err != nil {
		ln.Close()
		return errors.Join(err, <-serverErr)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// In TLS 1.3 the server verifies the client certificate after the
	// client's handshake returns; reading surfaces its verdict.
	buf := make([]byte, 1)
	_, readErr := io.ReadFull(conn, buf)
	return errors.Join(readErr, <-serverErr)
}
