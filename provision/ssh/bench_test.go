package ssh

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// patternReader streams n bytes without holding them in memory, so the
// benchmark measures the transport's memory and not the source's.
type patternReader struct{ n int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), r.n))
	for i := range k {
		p[i] = byte(i)
	}
	r.n -= int64(k)
	return k, nil
}

// BenchmarkFanOut runs a command and a 10 MiB upload on 100 in-process hosts
// with the default parallelism and reports wall time per round and the peak
// heap in use while it ran.
func BenchmarkFanOut(b *testing.B) {
	const hosts, size = 100, 10 << 20
	id := newIdentity(b)
	p, _ := newPool(b, Options{})
	var lines []string
	cfgs := map[string]Config{}
	names := make([]string, hosts)
	root := b.TempDir()
	for i := range hosts {
		s := newFakeServer(b, id.pub).start()
		name := fmt.Sprintf("node-%03d", i)
		names[i] = name
		dir := filepath.Join(root, name)
		os.Mkdir(dir, 0o755)
		target := filepath.Join(dir, "blob")
		s.expect("uptime", script("up 1 day\n", "", 0))
		s.expect(statCommand(target), shellHandler(statCommand(target)))
		s.expectPrefix("sync -- ", script("", "", 0))
		lines = append(lines, s.knownLine(s.hostKeys[0].PublicKey()))
		cfg := s.hostConfig(name, id, "")
		cfgs[name] = cfg
	}
	kh := knownHosts(b, lines...)
	ctx := context.Background()

	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	b.ResetTimer()
	for b.Loop() {
		_, err := ForEach(ctx, names, DefaultParallel, func(ctx context.Context, h string) (bool, error) {
			cfg := cfgs[h]
			cfg.KnownHostsFiles = []string{kh}
			c, err := p.Connect(ctx, cfg)
			if err != nil {
				return false, err
			}
			if _, err := c.Run(ctx, Command{Cmd: "uptime"}); err != nil {
				return false, err
			}
			return c.Upload(ctx, FileSpec{Path: filepath.Join(root, h, "blob"), Content: &patternReader{n: size}})
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, h := range names {
			os.Remove(filepath.Join(root, h, "blob"))
		}
		b.StartTimer()
	}
	close(stop)
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
}
