package testenv

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// TryLoadRDB starts bin on a copy of the RDB file rdbPath and reports whether the server loaded
// it. A server that refuses a file exits during startup; that is an answer here (ok false, with
// the server's last log lines), not a test failure. Only a port clash is retried. The server,
// when up, is stopped when the test ends; extra arguments are passed through.
func TryLoadRDB(t TB, bin, rdbPath string, extra ...string) (s *Server, ok bool, why string) {
	t.Helper()
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		name := filepath.Base(rdbPath)
		if err := copyFile(rdbPath, filepath.Join(dir, name)); err != nil {
			t.Fatalf("copy %s: %v", rdbPath, err)
		}
		args := append([]string{"--dbfilename", name}, extra...)
		s, err := startServer(dir, bin, args...)
		if err == nil {
			t.Cleanup(s.Stop)
			return s, true, ""
		}
		why = err.Error()
		if !strings.Contains(why, "Address already in use") {
			return nil, false, why
		}
	}
	return nil, false, why
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy: %w", err)
	}
	return out.Close()
}
