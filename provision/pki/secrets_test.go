package pki

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/log"
)

func TestBootstrapTokenFormat(t *testing.T) {
	seen := map[Secret]bool{}
	for range 1000 {
		tok := newBootstrapToken()
		if !bootstrapTokenFormat.MatchString(tok.Reveal()) {
			t.Fatalf("token %q does not match kubeadm's format", tok.Reveal())
		}
		if seen[tok] {
			t.Fatalf("token repeated")
		}
		seen[tok] = true
		if key := newCertificateKey().Reveal(); !certificateKeyFormat.MatchString(key) {
			t.Fatalf("certificate key %q is not 64 hex characters", key)
		}
	}
}

func TestSecretsReusedAndRenewed(t *testing.T) {
	dir := stateCopy(t)
	first := mustLoad(t, dir).Secrets
	if first.BootstrapTokenCreated != testNow || first.CertificateKeyCreated != testNow {
		t.Errorf("creation times %v %v, want %v", first.BootstrapTokenCreated, first.CertificateKeyCreated, testNow)
	}
	s, _, err := Ensure(dir, externalRequest, testNow.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if s.Secrets != first {
		t.Error("a later run replaced the secrets; renewing them is the apply's decision")
	}
	if id := first.BootstrapTokenID(); id != first.BootstrapToken.Reveal()[:6] {
		t.Errorf("BootstrapTokenID = %q", id)
	}

	for _, tc := range []struct {
		after         time.Duration
		token, certky bool
	}{
		{0, false, false},
		{CertificateKeyTTL - time.Second, false, false},
		{CertificateKeyTTL, false, true},
		{BootstrapTokenTTL - time.Second, false, true},
		{BootstrapTokenTTL, true, true},
	} {
		now := testNow.Add(tc.after)
		if got := first.TokenExpired(now); got != tc.token {
			t.Errorf("TokenExpired after %v = %v", tc.after, got)
		}
		if got := first.CertificateKeyExpired(now); got != tc.certky {
			t.Errorf("CertificateKeyExpired after %v = %v", tc.after, got)
		}
	}

	later := testNow.Add(25 * time.Hour)
	renewed, err := RenewBootstrapToken(dir, later)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.BootstrapToken == first.BootstrapToken || renewed.BootstrapTokenCreated != later || renewed.TokenExpired(later) || !renewed.BootstrapTokenPending {
		t.Error("RenewBootstrapToken did not renew the token and mark it pending")
	}
	if renewed.CertificateKey != first.CertificateKey || renewed.CertificateKeyCreated != first.CertificateKeyCreated {
		t.Error("RenewBootstrapToken changed the certificate key")
	}
	renewed2, err := RenewCertificateKey(dir, later)
	if err != nil {
		t.Fatal(err)
	}
	if renewed2.CertificateKey == first.CertificateKey || !renewed2.CertificateKeyPending || renewed2.BootstrapToken != renewed.BootstrapToken {
		t.Error("RenewCertificateKey renewed the wrong secret, or did not mark it pending")
	}
	if got := mustLoad(t, dir).Secrets; got != renewed2 {
		t.Error("renewed secrets were not stored")
	}
	if fi, err := os.Stat(filepath.Join(dir, secretsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets.json after renewal: %v %v", fi.Mode(), err)
	}
}

// A renewed secret stays pending until the apply records that the cluster
// has it; recording starts its lifetime anew. Recording a value the state
// directory no longer holds (a later plan renewed it again) changes nothing,
// so the newer value stays pending and is created by the next apply.
func TestRecordJoinSecretsOnCluster(t *testing.T) {
	dir := stateCopy(t)
	renewedAt := testNow.Add(30 * time.Hour)
	if _, err := RenewBootstrapToken(dir, renewedAt); err != nil {
		t.Fatal(err)
	}
	s, err := RenewCertificateKey(dir, renewedAt)
	if err != nil {
		t.Fatal(err)
	}
	created := renewedAt.Add(10 * time.Minute)
	if ok, err := RecordBootstrapTokenCreated(dir, s.BootstrapToken, created); err != nil || !ok {
		t.Fatalf("RecordBootstrapTokenCreated = %v, %v", ok, err)
	}
	got := mustLoad(t, dir).Secrets
	if got.BootstrapTokenPending || !got.BootstrapTokenCreated.Equal(created) || got.BootstrapToken != s.BootstrapToken {
		t.Errorf("after recording the token: pending %v, created %v", got.BootstrapTokenPending, got.BootstrapTokenCreated)
	}
	if !got.CertificateKeyPending {
		t.Error("recording the token cleared the certificate key's pending mark")
	}
	if ok, err := RecordCertificatesUploaded(dir, s.CertificateKey, created); err != nil || !ok {
		t.Fatalf("RecordCertificatesUploaded = %v, %v", ok, err)
	}
	got = mustLoad(t, dir).Secrets
	if got.CertificateKeyPending || !got.CertificateKeyCreated.Equal(created) {
		t.Errorf("after recording the upload: pending %v, created %v", got.CertificateKeyPending, got.CertificateKeyCreated)
	}
	if got.CertificateKeyExpired(created.Add(CertificateKeyTTL - time.Second)) {
		t.Error("the recorded upload does not start the key's lifetime")
	}

	// A plan renews again; the apply of an older plan records its own value.
	newer, err := RenewBootstrapToken(dir, created.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := RecordBootstrapTokenCreated(dir, s.BootstrapToken, created.Add(2*time.Hour)); err != nil || ok {
		t.Errorf("recording a replaced token = %v, %v; want false, nil", ok, err)
	}
	if got := mustLoad(t, dir).Secrets; got != newer {
		t.Error("recording a replaced token changed the state directory")
	}
	if fi, err := os.Stat(filepath.Join(dir, secretsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets.json after recording: %v %v", fi.Mode(), err)
	}
	b, err := os.ReadFile(filepath.Join(dir, secretsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"bootstrapTokenPending": true`)) || bytes.Contains(b, []byte("certificateKeyPending")) {
		t.Error("secrets.json does not record exactly the token as pending")
	}
}

func TestCorruptSecretsDoNotLeakIntoErrors(t *testing.T) {
	dir := stateCopy(t)
	path := filepath.Join(dir, secretsFile)
	const leaked = "abcdef.0123456789ABCDEF"
	os.WriteFile(path, []byte(`{"bootstrapToken":"`+leaked+`","certificateKey":"`+strings.Repeat("a", 64)+`"}`), 0o600)
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), leaked) {
		t.Errorf("Load: %v", err)
	}
}

// secretValue is a value no output below may contain.
const secretValue = "s3cr3t.tokenvalue0000"

func TestSecretRedaction(t *testing.T) {
	s := Secret(secretValue)
	secrets := Secrets{BootstrapToken: s, CertificateKey: s}
	file := File{Path: "/etc/kubernetes/pki/ca.key", Mode: 0o600, Content: []byte(secretValue), Secret: true}
	var outputs []string
	for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10s"} {
		outputs = append(outputs,
			fmt.Sprintf(verb, s),
			fmt.Sprintf(verb, &s),
			fmt.Sprintf(verb, secrets),
			fmt.Sprintf(verb, []Secret{s}),
			fmt.Sprintf(verb, map[string]Secret{"k": s}),
			fmt.Sprintf(verb, file),
			fmt.Sprintf(verb, []File{file}))
	}
	outputs = append(outputs, fmt.Sprint(s), fmt.Sprintln(s), s.String(), file.String())
	// Not map[Secret]T: encoding/json writes keys of any string kind verbatim (see the Secret doc comment).
	for _, v := range []any{s, secrets, file, []File{file}, map[string]Secret{"k": s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, string(b))
	}
	text, _ := s.MarshalText()
	outputs = append(outputs, string(text))

	var slogBuf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&slogBuf, nil), slog.NewJSONHandler(&slogBuf, nil)} {
		slog.New(h).Info("join", "token", s, "secrets", secrets, "file", file)
	}
	outputs = append(outputs, slogBuf.String())

	for _, f := range []log.Formatter{log.TextFormatter, log.JSONFormatter, log.LogfmtFormatter} {
		var buf bytes.Buffer
		logger := log.NewWithOptions(&buf, log.Options{Formatter: f})
		logger.Info("join", "token", s, "secrets", secrets, "file", file)
		logger.With("token", s).Error(fmt.Errorf("join failed with %v", s))
		logger.Infof("token %s", s)
		if !strings.Contains(buf.String(), redacted) {
			t.Errorf("charmbracelet/log output lacks %q: %s", redacted, buf.String())
		}
		outputs = append(outputs, buf.String())
	}

	for _, out := range outputs {
		if strings.Contains(out, secretValue) || strings.Contains(out, fmt.Sprintf("%x", secretValue)) {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if s.Reveal() != secretValue {
		t.Error("Reveal does not return the value")
	}
}
