package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/keywriter"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// saveRDB fills a fresh server with fill, SAVEs it and returns the server and its RDB file.
func saveRDB(t *testing.T, srv *testenv.Server, fill func(c *redis.Client)) string {
	t.Helper()
	c := srv.Client(t, 0)
	fill(c)
	if err := c.Save(ctx).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	return filepath.Join(srv.Dir, "dump.rdb")
}

// fillResumable is every type, a bulk of small keys and values big enough to arrive in parts.
func fillResumable(t *testing.T) func(c *redis.Client) {
	return func(c *redis.Client) {
		if _, err := testenv.FillAllTypes(ctx, c, "t:"); err != nil {
			t.Fatal(err)
		}
		if err := testenv.FillBulk(ctx, c, "b:", 4000, 7); err != nil {
			t.Fatal(err)
		}
		items := make([]any, 5000)
		fields := make([]any, 0, 10000)
		for i := range items {
			items[i] = fmt.Sprintf("list-item-%05d-%s", i, strings.Repeat("x", i%50))
			fields = append(fields, "f"+strconv.Itoa(i), strings.Repeat("v", i%40))
		}
		if err := c.RPush(ctx, "big:list", items...).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, "big:hash", fields...).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.PExpire(ctx, "big:hash", 3*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// fileFacts reads a file with our codec: its key count, the keys delivered in parts, and the
// byte range [start, end) of one value in parts.
type fileFacts struct {
	keys, parted     int64
	bigStart, bigEnd int64
}

func readFacts(t *testing.T, path string) fileFacts {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := rdb.NewReader(f, rdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ff fileFacts
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return ff
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != rdb.KindKey {
			continue
		}
		if e.Last {
			ff.keys++
		}
		if e.Part == 1 {
			ff.parted++
			if ff.bigStart == 0 {
				ff.bigStart = e.Offset
			}
		}
		if e.Last && e.Part > 0 && ff.bigEnd == 0 {
			ff.bigEnd = rd.Offset()
		}
	}
}

// errCut is the failure of a reader cut short.
var errCut = errors.New("connection to storage lost")

// cutReader fails once the file offset reaches cut (the read starts at from).
type cutReader struct {
	r   io.Reader
	off int64
	cut int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.off >= c.cut {
		return 0, errCut
	}
	if left := c.cut - c.off; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.r.Read(p)
	c.off += int64(n)
	return n, err
}

// attempt is one run of the import: from the start or from a checkpoint, with the input cut
// at cut bytes (0 = not cut) or the context cancelled after cancelAfter checkpoints.
type attempt struct {
	cut         int64
	cancelAfter int
}

// runAttempt imports path into conn from resume (nil = the start) and returns the last
// checkpoint reported (as stored: through JSON), the summary and the error.
func runAttempt(t *testing.T, path string, conn *redisconn.Conn, resume *Checkpoint, a attempt) (*Checkpoint, *Summary, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	from := int64(0)
	if resume != nil {
		from = resume.Offset
		if _, err := f.Seek(from, io.SeekStart); err != nil {
			t.Fatal(err)
		}
	}
	var r io.Reader = f
	if a.cut > 0 {
		r = &cutReader{r: f, off: from, cut: a.cut}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last *Checkpoint
	n := 0
	var progressed int64
	o := Options{
		Progress: func(off int64, _ copier.Result) {
			if off < progressed {
				t.Errorf("progress went back from %d to %d", progressed, off)
			}
			progressed = off
		},
		Resume:          resume,
		CheckpointEvery: time.Nanosecond, // at every entry boundary
		Workers:         3,
		Checkpoint: func(cp Checkpoint) error {
			b, err := json.Marshal(cp)
			if err != nil {
				return err
			}
			var stored Checkpoint
			if err := json.Unmarshal(b, &stored); err != nil {
				return err
			}
			last = &stored
			n++
			if a.cancelAfter > 0 && n >= a.cancelAfter {
				cancel()
			}
			return nil
		},
	}
	sum, err := Import(cctx, r, conn, o)
	return last, sum, err
}

// TestImportResumesFromCheckpoint interrupts imports (context cancelled, input cut at several
// points, among them inside a value delivered in parts, and twice in a row) and resumes each
// from its last checkpoint, reading the file from Checkpoint.Offset: the counts end exact (every
// key counted once) and the target equals the source.
func TestImportResumesFromCheckpoint(t *testing.T) {
	src := testenv.StartRedis(t)
	path := saveRDB(t, src, fillResumable(t))
	facts := readFacts(t, path)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	if facts.parted < 2 || facts.bigEnd-facts.bigStart < 1000 {
		t.Fatalf("dataset should hold values in parts: %+v", facts)
	}
	total, _ := src.Client(t, 0).DBSize(ctx).Result()
	if total != facts.keys {
		t.Fatalf("file has %d keys, server %d", facts.keys, total)
	}
	dst := testenv.StartRedis(t)
	conn := openConn(t, dst.URL())
	cases := []struct {
		name     string
		attempts []attempt
	}{
		{"cancel-after-checkpoints", []attempt{{cancelAfter: 40}}},
		{"cut-just-after-header", []attempt{{cut: 30}}},
		{"cut-at-a-quarter", []attempt{{cut: size / 4}}},
		{"cut-inside-a-value-in-parts", []attempt{{cut: (facts.bigStart + facts.bigEnd) / 2}}},
		{"cut-twice", []attempt{{cut: size / 3}, {cut: 2 * size / 3}}},
		{"cancel-then-cut", []attempt{{cancelAfter: 500}, {cut: size - 100}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := dst.Client(t, 0).FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			var resume *Checkpoint
			for i, a := range tc.attempts {
				cp, sum, err := runAttempt(t, path, conn, resume, a)
				if err == nil {
					t.Fatalf("attempt %d was not interrupted (summary %+v)", i, sum.Result)
				}
				if a.cut > 0 && !errors.Is(err, errCut) {
					t.Fatalf("attempt %d: want the cut reader's error, got %v", i, err)
				}
				if cp == nil {
					t.Fatalf("attempt %d: no checkpoint before the interruption (%v)", i, err)
				}
				if resume != nil && cp.Offset < resume.Offset {
					t.Fatalf("checkpoint went back: %d after resuming at %d", cp.Offset, resume.Offset)
				}
				if cp.Counts.Keys() > cp.Scanned || cp.Scanned > total {
					t.Fatalf("checkpoint counts %+v scanned %d (file %d keys)", cp.Counts, cp.Scanned, total)
				}
				// An interrupted run leaves no scratch key behind.
				tmp, _ := dst.Client(t, 0).Keys(ctx, "*redis-migrate:tmp:*").Result()
				if len(tmp) > 0 {
					t.Fatalf("scratch keys left after the interruption: %v", tmp)
				}
				t.Logf("attempt %d stopped (%v); resuming at offset %d of %d with %d keys counted", i, err, cp.Offset, size, cp.Counts.Keys())
				resume = cp
			}
			_, sum, err := runAttempt(t, path, conn, resume, attempt{})
			if err != nil {
				t.Fatalf("resumed import: %v", err)
			}
			if sum.Copied != total || sum.Scanned != total || sum.Failed != 0 || sum.Skipped != 0 || sum.Expired != 0 || sum.Big != facts.parted {
				t.Fatalf("final counts %+v scanned %d; want %d copied and scanned, %d big, nothing else", sum.Result, sum.Scanned, total, facts.parted)
			}
			testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 0)
		})
	}
}

// A value in parts whose TTL has passed is read past, not written, and counted as expired; an
// expired small key likewise.
func TestImportExpiredValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "expired.rdb")
	past, future := time.Now().Add(-time.Hour).UnixMilli(), time.Now().Add(time.Hour).UnixMilli()
	items := make([][]byte, 3000)
	for i := range items {
		items[i] = []byte("item" + strconv.Itoa(i))
	}
	writeRDB(t, path, 10, func(w *rdb.Writer) {
		must(t, w.WriteKey([]byte("big:gone"), &rdb.List{Items: items}, past))
		must(t, w.WriteKey([]byte("big:live"), &rdb.List{Items: items}, future))
		must(t, w.WriteKey([]byte("small:gone"), &rdb.String{Data: []byte("x")}, past))
		must(t, w.WriteKey([]byte("small:live"), &rdb.String{Data: []byte("y")}, 0))
	})
	dst := testenv.StartRedis(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := Import(ctx, f, openConn(t, dst.URL()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Copied != 2 || sum.Expired != 2 || sum.Big != 1 || sum.Scanned != 4 || sum.Failed != 0 {
		t.Fatalf("counts %+v scanned %d; want 2 copied (1 big), 2 expired", sum.Result, sum.Scanned)
	}
	keys, _ := dst.Client(t, 0).Keys(ctx, "*").Result()
	if len(keys) != 2 {
		t.Fatalf("target keys %v; want big:live and small:live only", keys)
	}
	if n, _ := dst.Client(t, 0).LLen(ctx, "big:live").Result(); n != int64(len(items)) {
		t.Fatalf("big:live has %d items", n)
	}
}

// Bug in shared/verify (reported, not ours to fix here): a zset member with score -0 is stored
// by a listpack target as the integer 0 and read back as "0", while the verification's file side
// prints "-0", so the closing verification reports a value difference for identical data.
func TestVerifyNegativeZeroScore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "negzero.rdb")
	writeRDB(t, path, 10, func(w *rdb.Writer) {
		must(t, w.WriteKey([]byte("z"), &rdb.ZSet{Members: []rdb.ZMember{{Member: []byte("a"), Score: math.Copysign(0, -1)}, {Member: []byte("b"), Score: 1}}}, 0))
	})
	dst := testenv.StartRedis(t)
	conn := openConn(t, dst.URL())
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Import(ctx, f, conn, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, f, conn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Ok() {
		t.Fatalf("verification reports %+v for a zset with a -0 score that was imported unchanged", rep.Differences)
	}
}

func writeRDB(t *testing.T, path string, version int, fn func(w *rdb.Writer)) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := rdb.NewWriter(f, version)
	if err != nil {
		t.Fatal(err)
	}
	must(t, w.SelectDB(0))
	fn(w)
	must(t, w.Close())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Hash fields whose own TTL has passed are dropped, as a loading Redis 7.4 drops them (a hash
// left with none is an expired key); on Redis 7.0 the live fields arrive without their TTLs and
// the key is reported. The same holds for a hash big enough to arrive in parts.
func TestImportExpiredHashFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fields.rdb")
	past, future := time.Now().Add(-time.Hour).UnixMilli(), time.Now().Add(time.Hour).UnixMilli()
	f := func(name string, exp int64) rdb.HashField {
		return rdb.HashField{Field: []byte(name), Value: []byte("v-" + name), ExpireAtMs: exp}
	}
	var bigFields []rdb.HashField
	for i := 0; i < 3000; i++ {
		exp := past
		if i%3 == 0 {
			exp = future
		}
		bigFields = append(bigFields, f("f"+strconv.Itoa(i), exp))
	}
	writeRDB(t, path, 12, func(w *rdb.Writer) {
		must(t, w.WriteKey([]byte("h"), &rdb.Hash{Fields: []rdb.HashField{f("gone", past), f("live", future), f("plain", 0)}}, 0))
		must(t, w.WriteKey([]byte("allgone"), &rdb.Hash{Fields: []rdb.HashField{f("x", past), f("y", past)}}, 0))
		must(t, w.WriteKey([]byte("onlyplain"), &rdb.Hash{Fields: []rdb.HashField{f("x", past), f("y", 0)}}, 0))
		must(t, w.WriteKey([]byte("big"), &rdb.Hash{Fields: bigFields}, 0))
		must(t, w.WriteKey([]byte("bigallgone"), &rdb.Hash{Fields: bigFields[1:3]}, 0))
	})
	dst := testenv.StartRedis(t)
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	sum, err := Import(ctx, in, openConn(t, dst.URL()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := dst.Client(t, 0)
	got := func(key string) string {
		h, _ := c.HGetAll(ctx, key).Result()
		return fmt.Sprintf("%d %s %s %s", len(h), h["live"], h["plain"], h["y"])
	}
	if g := got("h"); g != "2 v-live v-plain " {
		t.Errorf("h: %s", g)
	}
	if g := got("onlyplain"); g != "1   v-y" {
		t.Errorf("onlyplain: %s", g)
	}
	if n, _ := c.HLen(ctx, "big").Result(); n != 1000 {
		t.Errorf("big has %d fields, want the 1000 live ones", n)
	}
	if n, _ := c.Exists(ctx, "allgone", "bigallgone").Result(); n != 0 {
		t.Errorf("hashes whose fields all expired were written")
	}
	// h and big lose their live fields' TTLs on 7.0 (reported); onlyplain loses nothing.
	if sum.Copied != 1 || sum.Expired != 2 || sum.Failed != 2 || sum.Scanned != 5 {
		t.Fatalf("counts %+v scanned %d; want 1 copied, 2 expired, 2 failed (field TTLs dropped)", sum.Result, sum.Scanned)
	}
	for _, fl := range sum.Failures {
		if !strings.Contains(fl.Reason, "hash field TTLs") {
			t.Errorf("failure %+v", fl)
		}
	}
	// The closing verification leaves the expired fields out too.
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, in, openConn(t, dst.URL()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Ok() || rep.Checked != 3 {
		t.Fatalf("verification %+v; want h, onlyplain and big checked and matching", rep)
	}
}

// Interrupted while keys are being rebuilt with commands (hashes with field TTLs, which a Redis
// 7.0 cannot RESTORE): a key cut short by the cancellation must not be counted, so the resumed
// import writes it again and the totals stay exact.
func TestImportResumeDuringCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commands.rdb")
	future := time.Now().Add(time.Hour).UnixMilli()
	const hashes, strs = 300, 300
	items := make([][]byte, 2500)
	for i := range items {
		items[i] = []byte("i" + strconv.Itoa(i))
	}
	writeRDB(t, path, 12, func(w *rdb.Writer) {
		for i := 0; i < hashes; i++ {
			must(t, w.WriteKey([]byte("h:"+strconv.Itoa(i)), &rdb.Hash{Fields: []rdb.HashField{
				{Field: []byte("a"), Value: []byte("1"), ExpireAtMs: future}, {Field: []byte("b"), Value: []byte("2")}}}, 0))
			must(t, w.WriteKey([]byte("s:"+strconv.Itoa(i)), &rdb.String{Data: []byte("v" + strconv.Itoa(i))}, 0))
			if i%100 == 50 {
				must(t, w.WriteKey([]byte("big:"+strconv.Itoa(i)), &rdb.List{Items: items}, 0))
			}
		}
	})
	dst := testenv.StartRedis(t)
	conn := openConn(t, dst.URL())
	for _, n := range []int{5, 37, 150, 420} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			if err := dst.Client(t, 0).FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			cp, _, err := runAttempt(t, path, conn, nil, attempt{cancelAfter: n})
			if err == nil || cp == nil {
				t.Fatalf("not interrupted: %v", err)
			}
			_, sum, err := runAttempt(t, path, conn, cp, attempt{})
			if err != nil {
				t.Fatal(err)
			}
			// Every hash is written without its field TTL and reported; nothing else fails.
			if sum.Copied != strs+3 || sum.Failed != hashes || sum.Big != 3 || sum.Scanned != hashes+strs+3 {
				t.Fatalf("counts %+v scanned %d; want %d copied (3 big), %d failed", sum.Result, sum.Scanned, strs+3, hashes)
			}
			for _, f := range sum.Failures {
				if !strings.Contains(f.Reason, "hash field TTLs") {
					t.Fatalf("unexpected failure %+v", f)
				}
			}
			if n, _ := dst.Client(t, 0).DBSize(ctx).Result(); n != hashes+strs+3 {
				t.Fatalf("target holds %d keys", n)
			}
		})
	}
}

// Bug in shared/keywriter (reported, not ours to fix here): AddValue drops the field TTLs of a
// hash on a target without them but returns 0 as their count (the hash case falls through to
// "return 0, nil"), so the copier's fallback reports nothing. The importer counts them itself.
func TestKeywriterCountsDroppedFieldTTLs(t *testing.T) {
	dst := testenv.StartRedis(t)
	b := keywriter.New(dst.Client(t, 0), "h")
	h := &rdb.Hash{Fields: []rdb.HashField{{Field: []byte("a"), Value: []byte("1"), ExpireAtMs: time.Now().Add(time.Hour).UnixMilli()}}}
	dropped, err := b.AddValue(ctx, h, keywriter.ValueOptions{FieldTTL: false})
	b.Abort(ctx)
	if err != nil || dropped != 1 {
		t.Fatalf("AddValue returned %d dropped field TTLs (%v), want 1", dropped, err)
	}
}
