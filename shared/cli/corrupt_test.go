package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// writeStrings writes an RDB 10 file of n string keys "k:%06d" with values "val-%06d-..." and
// returns its bytes.
func writeStrings(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := rdb.NewWriter(&buf, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SelectDB(0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("val-%06d-%s", i, strings.Repeat(fmt.Sprint(i%10), 40))
		if err := w.WriteKey([]byte(fmt.Sprintf("k:%06d", i)), &rdb.String{Data: []byte(v)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// flipInValues changes one byte inside the values of keys from..to step: the file still parses,
// only the final CRC64 tells.
func flipInValues(t *testing.T, data []byte, from, to, step int) []byte {
	t.Helper()
	out := append([]byte(nil), data...)
	for i := from; i < to; i += step {
		at := bytes.Index(out, []byte(fmt.Sprintf("val-%06d-", i)))
		if at < 0 {
			t.Fatalf("value %d not found in the file", i)
		}
		out[at+12] ^= 0x01 // a digit becomes another printable byte
	}
	return out
}

// No corrupt value is written: a file whose values were changed (caught only by the final CRC64)
// or that is damaged half way imports nothing, exit 2, because a local file is read once before
// anything is written. --check-first=false shows what that check prevents.
func TestImportCorruptFileWritesNothing(t *testing.T) {
	const n = 20000
	good := writeStrings(t, n)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := write("flipped.rdb", flipInValues(t, good, 100, n, 997))
	halfway := append([]byte(nil), good...)
	mid := bytes.Index(halfway, []byte("val-010000-")) - len("k:010000") - 3 // type, key length, key, value length
	if halfway[mid] != rdb.TypeCodeString {
		t.Fatalf("type byte of k:010000 not where expected: %d", halfway[mid])
	}
	halfway[mid] = 200
	damaged := write("damaged.rdb", halfway)
	cut := write("cut.rdb", good[:len(good)/2])
	// Bytes after the trailer (an AOF tail after an RDB preamble) are not the file's: it imports.
	tailed := write("tailed.rdb", append(append([]byte(nil), good...), []byte("*1\r\n$4\r\nPING\r\n")...))

	dst := testenv.StartRedis(t)
	dc := dst.Client(t, 0)
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
		keys int64
	}{
		{"flipped values", []string{flipped}, ExitUsage, "CRC64 mismatch", 0},
		{"damaged half way", []string{damaged}, ExitUsage, "unknown value type or non-OSS opcode 200", 0},
		{"cut half way", []string{cut}, ExitUsage, "unexpected end of input", 0},
		{"flipped, --skip-checksum", []string{flipped, "--skip-checksum"}, ExitOK, "", n},
		{"tail after the trailer", []string{tailed}, ExitOK, "", n},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := dc.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			code, _, errs := run(t, append([]string{"import", "--target", dst.URL()}, c.args...)...)
			keys := dc.DBSize(ctx).Val()
			if code != c.code || keys != c.keys {
				t.Fatalf("exit %d with %d keys written; want exit %d, %d keys\n%s", code, keys, c.code, c.keys, errs)
			}
			if c.code != ExitOK {
				lines := strings.Split(strings.TrimSpace(errs), "\n")
				if len(lines) != 1 || !strings.Contains(lines[0], c.want) || !strings.Contains(lines[0], "nothing was written") ||
					!strings.Contains(lines[0], "offset") {
					t.Fatalf("want one line naming the offset, %q, and that nothing was written:\n%s", c.want, errs)
				}
			}
		})
	}
	// Without the check, the flipped file is imported up to the CRC64 at its end (exit 3):
	// what --check-first prevents.
	if err := dc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	code, _, errs := run(t, "import", "--target", dst.URL(), flipped, "--check-first=false")
	if code != ExitError || !strings.Contains(errs, "CRC64 mismatch") || dc.DBSize(ctx).Val() == 0 {
		t.Fatalf("--check-first=false: exit %d, %d keys\n%s", code, dc.DBSize(ctx).Val(), errs)
	}
}

// For a blob the check is asked for with --check-first (it reads the blob twice).
func TestImportBlobCheckFirst(t *testing.T) {
	data := flipInValues(t, writeStrings(t, 5000), 10, 5000, 501)
	az := testenv.StartAzurite(t)
	client, err := azblob.NewClientFromConnectionString(az.ConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateContainer(ctx, "rdb-imports", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.UploadBuffer(ctx, "rdb-imports", "flipped.rdb", data, nil); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", az.ConnectionString)
	url := az.BlobEndpoint() + "/rdb-imports/flipped.rdb"
	dst := testenv.StartRedis(t)
	dc := dst.Client(t, 0)
	start := time.Now()
	code, _, errs := run(t, "import", "--blob", url, "--target", dst.URL(), "--check-first")
	if code != ExitUsage || dc.DBSize(ctx).Val() != 0 || !strings.Contains(errs, "CRC64 mismatch") || !strings.Contains(errs, "nothing was written") {
		t.Fatalf("--check-first: exit %d, %d keys\n%s", code, dc.DBSize(ctx).Val(), errs)
	}
	t.Logf("refused in %v", time.Since(start))
	code, _, errs = run(t, "import", "--blob", url, "--target", dst.URL())
	if code != ExitError || !strings.Contains(errs, "CRC64 mismatch") {
		t.Fatalf("without --check-first: exit %d\n%s", code, errs)
	}
}
