package functions_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// streamBigRDB writes an RDB of about size bytes straight into a blob (never whole in memory):
// incompressible 64 KiB strings "skip:<i>", and every 16th key a small "keep:<i>" string. It
// returns the keep keys and their values.
func streamBigRDB(t *testing.T, az *testenv.Azurite, name string, size int64, md map[string]*string) map[string]string {
	t.Helper()
	ctx := context.Background()
	c, err := container.NewClientFromConnectionString(az.ConnectionString, functions.ImportContainer, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		t.Fatal(err)
	}
	keep := map[string]string{}
	pr, pw := io.Pipe()
	go func() {
		w, err := rdb.NewWriter(pw, 11)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		rng := rand.NewChaCha8([32]byte{7})
		val := make([]byte, 64<<10)
		_ = w.SelectDB(0)
		for i := 0; int64(i)*int64(len(val)) < size; i++ {
			_, _ = rng.Read(val)
			if err := w.WriteRaw(0, []byte(fmt.Sprintf("skip:%06d", i)), rdb.AppendString(nil, val), 0); err != nil {
				pw.CloseWithError(err)
				return
			}
			if i%16 == 0 {
				k, v := fmt.Sprintf("keep:%06d", i), fmt.Sprintf("value-%d-%x", i, val[:8])
				keep[k] = v
				if err := w.WriteRaw(0, []byte(k), rdb.AppendString(nil, []byte(v)), 0); err != nil {
					pw.CloseWithError(err)
					return
				}
			}
		}
		pw.CloseWithError(w.Close())
	}()
	if _, err := c.NewBlockBlobClient(name).UploadStream(ctx, pr, &blockblob.UploadStreamOptions{BlockSize: 8 << 20, Concurrency: 2, Metadata: md}); err != nil {
		t.Fatal(err)
	}
	return keep
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux: clear_refs 5), so the peak
// measured afterwards is the import's, not an earlier test's.
func resetPeakRSS() {
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// A ~1 GB RDB dropped into rdb-imports is imported by the event and continued across several
// invocations by import messages only (a short time budget), with the handler's memory bounded:
// ranged reads, one value at a time. Most keys are filtered out by match so the target stays
// small; every byte of the file is still read and parsed.
func TestImportRdb1GBContinuedByMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GB import (-short)")
	}
	dst := testenv.StartRedis(t)
	az := testenv.StartAzurite(t)
	start := time.Now()
	keep := streamBigRDB(t, az, "huge.rdb", 1<<30, map[string]*string{functions.MetadataMigration: to.Ptr("huge")})
	t.Logf("generated and uploaded ~1 GiB in %s", time.Since(start).Round(time.Millisecond))
	resetPeakRSS()
	before := engine.PeakRSS()
	start = time.Now()
	// The upload happened before the app started: its event waits in the queue, as it would in
	// Service Bus.
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{"TARGET_REDIS": dst.URL(),
		functions.SettingImportTarget: "TARGET_REDIS", functions.SettingImportMatch: "keep:*",
		// A 1 s budget: the file takes several even on a fast machine (4 s at 250 MB/s).
		functions.SettingImportCheckpointMs: "200", functions.SettingImportSeconds: "1"}})
	st := a.waitImport("huge", 5*time.Minute)
	took := time.Since(start)
	peak := engine.PeakRSS()
	if st.State != "completed" || st.Keys.Copied != int64(len(keep)) || st.Keys.Failed != 0 || !st.Import.Done || st.Import.Offset != st.Import.Size {
		t.Fatalf("state %s keys %+v import %+v", st.State, st.Keys, st.Import)
	}
	if st.Import.Continuations < 2 || st.Import.Attempts != 1 {
		t.Fatalf("continuations %d, attempts %d: want several invocations chained by messages", st.Import.Continuations, st.Import.Attempts)
	}
	t.Logf("%d bytes imported in %s over %d invocations; peak RSS of the test process %d MB (%d MB before)",
		st.Import.Size, took.Round(time.Millisecond), st.Import.Continuations+1, peak>>20, before>>20)
	if peak > 0 && peak-before > 150<<20 {
		t.Fatalf("peak RSS grew by %d MB during the import of a 1 GB file; want it bounded (< 150 MB)", (peak-before)>>20)
	}
	c := dst.Client(t, 0)
	ctx := context.Background()
	if n, _ := c.DBSize(ctx).Result(); n != int64(len(keep)) {
		t.Fatalf("target holds %d keys, want %d", n, len(keep))
	}
	for k, v := range keep {
		if got, err := c.Get(ctx, k).Result(); err != nil || got != v {
			t.Fatalf("%s = %q (%v), want %q", k, got, err, v)
		}
	}
}
