package importer

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// corpusDir is the shared acceptance corpus (see its README), relative to this package.
const corpusDir = "../../../shared/rdb-corpus"

var ctx = context.Background()

// needCorpus skips without the corpus, unless REQUIRE_CORPUS=1 makes its absence a failure.
func needCorpus(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(corpusDir, "_decoded")); err != nil {
		if os.Getenv("REQUIRE_CORPUS") == "1" {
			t.Fatalf("RDB corpus required (REQUIRE_CORPUS=1) but not found: %v", err)
		}
		t.Skip("RDB corpus not present:", err)
	}
}

// corpusFiles lists every corpus file that has a reference decode (the RDB files and the two AOFs
// with an RDB preamble), relative to corpusDir.
func corpusFiles(t *testing.T) []string {
	t.Helper()
	root := filepath.Join(corpusDir, "_decoded")
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() && strings.HasSuffix(p, ".json") {
			rel, _ := filepath.Rel(root, p)
			out = append(out, strings.TrimSuffix(rel, ".json"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// ---- the reference decode ----

type refFile struct {
	Info map[string]any `json:"info"`
	Keys []refKey       `json:"keys"`
}

type refKey struct {
	DB       int    `json:"db"`
	Key      string `json:"key"`
	Type     string `json:"type"`
	RDBType  string `json:"rdbtype"`
	Value    any    `json:"value"`
	ExpireMs *int64 `json:"expire_ms"`
}

func (k refKey) name() string { return string(refBytes(k.Key)) }

// nonFinite turns the bare NaN / Infinity tokens of the reference JSON into strings, outside
// JSON strings, so encoding/json reads the files.
func nonFinite(b []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			out.WriteByte(c)
			if esc {
				esc = false
			} else if c == '\\' {
				esc = true
			} else if c == '"' {
				inStr = false
			}
			continue
		}
		tok := ""
		for _, w := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(b[i:], []byte(w)) {
				tok = w
				break
			}
		}
		switch {
		case c == '"':
			inStr = true
			out.WriteByte(c)
		case tok != "":
			out.WriteString(`"` + tok + `"`)
			i += len(tok) - 1
		default:
			out.WriteByte(c)
		}
	}
	return out.Bytes()
}

func loadRef(t *testing.T, rel string) *refFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir, "_decoded", rel+".json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(nonFinite(b)))
	dec.UseNumber()
	var r refFile
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("reference %s: %v", rel, err)
	}
	return &r
}

// refBytes reads a reference string: "hex:..." spells binary data.
func refBytes(v any) []byte {
	s, _ := v.(string)
	if h, ok := strings.CutPrefix(s, "hex:"); ok {
		if b, err := hex.DecodeString(h); err == nil {
			return b
		}
	}
	return []byte(s)
}

func refFloat(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case string:
		switch x {
		case "-Infinity":
			return math.Inf(-1)
		case "Infinity":
			return math.Inf(1)
		}
	}
	return math.NaN()
}

func refInt(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

// canon renders a value the same way whether it comes from the reference decode or from a
// server, so the two can be compared as strings. Order is kept where the type has one.
type canonValue struct {
	typ   string
	value string
	// fieldTTLs are the hash field TTLs of the reference (a 7.0 target cannot hold them).
	fieldTTLs int
}

func sortedJoin(items []string) string {
	sort.Strings(items)
	return strings.Join(items, "\n")
}

// fmtScore prints a score; -0 prints as 0, since a listpack zset stores -0 as the integer 0 (a
// loading Redis does the same: ZSCORE cannot tell them apart).
func fmtScore(f float64) string {
	if f == 0 {
		return "0"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func canonRef(k refKey) canonValue {
	c := canonValue{typ: k.Type}
	switch k.Type {
	case "string":
		c.value = fmt.Sprintf("%q", refBytes(k.Value))
	case "list", "set":
		arr, _ := k.Value.([]any)
		items := make([]string, len(arr))
		for i, a := range arr {
			items[i] = fmt.Sprintf("%q", refBytes(a))
		}
		if k.Type == "set" {
			c.value = sortedJoin(items)
		} else {
			c.value = strings.Join(items, "\n")
		}
	case "zset":
		arr, _ := k.Value.([]any)
		items := make([]string, len(arr))
		for i, a := range arr {
			pair, _ := a.([]any)
			items[i] = fmt.Sprintf("%q=%s", refBytes(pair[0]), fmtScore(refFloat(pair[1])))
		}
		c.value = sortedJoin(items)
	case "hash":
		obj, _ := k.Value.(map[string]any)
		var items []string
		for f, v := range obj {
			if m, ok := v.(map[string]any); ok {
				v = m["value"]
				if _, has := refInt(m["expire_ms"]); has {
					c.fieldTTLs++
				}
			}
			items = append(items, fmt.Sprintf("%q=%q", refBytes(f), refBytes(v)))
		}
		c.value = sortedJoin(items)
	case "stream":
		c.value = canonRefStream(k.Value)
	default:
		c.value = fmt.Sprint(k.Value)
	}
	return c
}

// canonRefStream keeps what a Redis 7.0 target can hold: entries, last id, the 7.0 stream
// counters when the file has them, and groups with their PEL (owner, delivery count and time).
func canonRefStream(v any) string {
	obj, _ := v.(map[string]any)
	var b strings.Builder
	entries, _ := obj["entries"].([]any)
	for _, re := range entries {
		pair, _ := re.([]any)
		fields, _ := pair[1].(map[string]any)
		var fs []string
		for f, fv := range fields {
			fs = append(fs, fmt.Sprintf("%q=%q", refBytes(f), refBytes(fv)))
		}
		sort.Strings(fs)
		fmt.Fprintf(&b, "%v %s\n", pair[0], strings.Join(fs, ","))
	}
	meta, _ := obj["meta"].(map[string]any)
	fmt.Fprintf(&b, "last=%v", meta["last_id"])
	if v, ok := meta["entries_added"]; ok {
		fmt.Fprintf(&b, " added=%v maxdel=%v", v, meta["max_deleted_id"])
	}
	b.WriteString("\n")
	groups, _ := meta["groups"].([]any)
	var gs []string
	for _, rg := range groups {
		gm, _ := rg.(map[string]any)
		owner := map[string]string{}
		cons, _ := gm["consumers"].([]any)
		var names []string
		for _, rc := range cons {
			cm, _ := rc.(map[string]any)
			name := string(refBytes(cm["name"]))
			names = append(names, fmt.Sprintf("%q", name))
			pel, _ := cm["pel"].([]any)
			for _, id := range pel {
				owner[fmt.Sprint(id)] = name
			}
		}
		sort.Strings(names)
		g := fmt.Sprintf("group %q last=%v", refBytes(gm["name"]), gm["last_id"])
		if v, ok := refInt(gm["entries_read"]); ok && v >= 0 {
			g += fmt.Sprintf(" read=%d", v)
		}
		g += " consumers=" + strings.Join(names, ",")
		pel, _ := gm["pel"].([]any)
		for _, rp := range pel {
			p, _ := rp.([]any)
			g += fmt.Sprintf(" [%v %q n=%v t=%v]", p[0], owner[fmt.Sprint(p[0])], p[2], p[1])
		}
		gs = append(gs, g)
	}
	sort.Strings(gs)
	b.WriteString(strings.Join(gs, "\n"))
	return b.String()
}

// canonServer reads one key from a server in the canonical form; withCounters adds the 7.0
// stream counters (entries added, max deleted id), which a file written before RDB 10 lacks.
func canonServer(c *redis.Client, key string, withCounters bool) (canonValue, error) {
	typ, err := c.Type(ctx, key).Result()
	if err != nil {
		return canonValue{}, err
	}
	cv := canonValue{typ: typ}
	switch typ {
	case "string":
		s, err := c.Get(ctx, key).Result()
		if err != nil {
			return cv, err
		}
		cv.value = fmt.Sprintf("%q", s)
	case "list":
		items, err := c.LRange(ctx, key, 0, -1).Result()
		if err != nil {
			return cv, err
		}
		for i := range items {
			items[i] = fmt.Sprintf("%q", items[i])
		}
		cv.value = strings.Join(items, "\n")
	case "set":
		items, err := c.SMembers(ctx, key).Result()
		if err != nil {
			return cv, err
		}
		for i := range items {
			items[i] = fmt.Sprintf("%q", items[i])
		}
		cv.value = sortedJoin(items)
	case "zset":
		zs, err := c.ZRangeWithScores(ctx, key, 0, -1).Result()
		if err != nil {
			return cv, err
		}
		items := make([]string, len(zs))
		for i, z := range zs {
			items[i] = fmt.Sprintf("%q=%s", z.Member, fmtScore(z.Score))
		}
		cv.value = sortedJoin(items)
	case "hash":
		h, err := c.HGetAll(ctx, key).Result()
		if err != nil {
			return cv, err
		}
		var items []string
		for f, v := range h {
			items = append(items, fmt.Sprintf("%q=%q", f, v))
		}
		cv.value = sortedJoin(items)
	case "stream":
		s, err := canonServerStream(c, key, withCounters)
		if err != nil {
			return cv, err
		}
		cv.value = s
	default:
		cv.value = "(unreadable type " + typ + ")"
	}
	return cv, nil
}

func canonServerStream(c *redis.Client, key string, withCounters bool) (string, error) {
	var b strings.Builder
	msgs, err := c.XRange(ctx, key, "-", "+").Result()
	if err != nil {
		return "", err
	}
	for _, m := range msgs {
		var fs []string
		for f, v := range m.Values {
			fs = append(fs, fmt.Sprintf("%q=%q", f, fmt.Sprint(v)))
		}
		sort.Strings(fs)
		fmt.Fprintf(&b, "%s %s\n", m.ID, strings.Join(fs, ","))
	}
	// Raw XINFO: go-redis turns a null entries-read (unknown) into 0.
	full, err := c.Do(ctx, "XINFO", "STREAM", key, "FULL").Result()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "last=%v", field(full, "last-generated-id"))
	if withCounters {
		fmt.Fprintf(&b, " added=%v maxdel=%v", field(full, "entries-added"), field(full, "max-deleted-entry-id"))
	}
	b.WriteString("\n")
	var gs []string
	groups, _ := field(full, "groups").([]any)
	for _, g := range groups {
		var names []string
		cons, _ := field(g, "consumers").([]any)
		for _, cn := range cons {
			names = append(names, fmt.Sprintf("%q", fmt.Sprint(field(cn, "name"))))
		}
		sort.Strings(names)
		s := fmt.Sprintf("group %q last=%v", fmt.Sprint(field(g, "name")), field(g, "last-delivered-id"))
		if r := field(g, "entries-read"); withCounters && r != nil {
			s += fmt.Sprintf(" read=%v", r)
		}
		s += " consumers=" + strings.Join(names, ",")
		pel, _ := field(g, "pending").([]any)
		for _, p := range pel {
			e, _ := p.([]any) // id, consumer, delivery time, delivery count
			if len(e) == 4 {
				s += fmt.Sprintf(" [%v %q n=%v t=%v]", e[0], fmt.Sprint(e[1]), e[3], e[2])
			}
		}
		gs = append(gs, s)
	}
	sort.Strings(gs)
	b.WriteString(strings.Join(gs, "\n"))
	return b.String(), nil
}

// field reads name from a RESP2 (flat pairs) or RESP3 (map) reply.
func field(reply any, name string) any {
	switch r := reply.(type) {
	case map[any]any:
		return r[name]
	case []any:
		for i := 0; i+1 < len(r); i += 2 {
			if fmt.Sprint(r[i]) == name {
				return r[i+1]
			}
		}
	}
	return nil
}

// ---- servers ----

// corpusTarget is an empty server reused for every file of its kind (flushed in between).
type corpusTarget struct {
	kind string
	srv  *testenv.Server
	conn *redisconn.Conn
}

func newCorpusTarget(t *testing.T, kind string, srv *testenv.Server) *corpusTarget {
	t.Helper()
	return &corpusTarget{kind: kind, srv: srv, conn: openConn(t, srv.URL())}
}

func openConn(t testing.TB, url string) *redisconn.Conn {
	t.Helper()
	ep, err := config.ParseEndpoint(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := redisconn.Open(ctx, ep, redisconn.Options{Role: "target"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (ct *corpusTarget) reset(t *testing.T) {
	t.Helper()
	c := ct.conn.Node(ct.srv.Addr, 0)
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FLUSHALL %s: %v", ct.kind, err)
	}
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatalf("FUNCTION FLUSH %s: %v", ct.kind, err)
	}
}

// identityDBMap sends every file db to the same target db (16 dbs, as the test servers have).
func identityDBMap() config.DBMap {
	m := config.DBMap{Target: map[int]int{}, Prefix: map[int]string{}}
	for db := 0; db < 16; db++ {
		m.Target[db] = db
	}
	return m
}

// keyspace lists the dbs holding keys (INFO keyspace).
func keyspace(t *testing.T, c *redis.Client) map[int]int64 {
	t.Helper()
	info, err := c.Info(ctx, "keyspace").Result()
	if err != nil {
		t.Fatalf("INFO keyspace: %v", err)
	}
	out := map[int]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "db") {
			continue
		}
		db, _ := strconv.Atoi(name[2:])
		for _, kv := range strings.Split(rest, ",") {
			if n, ok := strings.CutPrefix(kv, "keys="); ok {
				out[db], _ = strconv.ParseInt(n, 10, 64)
			}
		}
	}
	return out
}

func functionList(t *testing.T, c *redis.Client) string {
	t.Helper()
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{WithCode: true}).Result()
	if err != nil {
		t.Fatalf("FUNCTION LIST: %v", err)
	}
	var out []string
	for _, l := range libs {
		var fns []string
		for _, f := range l.Functions {
			fns = append(fns, f.Name)
		}
		sort.Strings(fns)
		out = append(out, fmt.Sprintf("%s/%s %v %q", l.Name, l.Engine, fns, l.Code))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// ---- the acceptance test ----

type quietLog struct{}

func (quietLog) Printf(context.Context, string, ...any) {}

// corpusRow is one line of the summary table.
type corpusRow struct{ file, oracle, result string }

// negative files and what must happen to them (corpus README, "Negative / special files").
func negativeKind(rel string) string {
	switch filepath.Base(rel) {
	case "corrupt_ziplist.rdb":
		return "corrupt"
	case "invalid_chksum_v8.rdb":
		return "checksum"
	case "future_v19.rdb":
		return "future"
	case "corrupt_empty_keys.rdb":
		return "empty-keys"
	}
	return ""
}

// TestCorpusAcceptance imports every corpus file. Where redis-server 7.0 (or else Valkey 8.0)
// loads the file itself, the import into an empty server of the same kind must give the same
// dataset, key by key and by DEBUG DIGEST. Elsewhere what lands in a Redis 7.0 must match the
// reference decode, with module values failed by name and hash field TTLs reported dropped.
// Negative files must fail with an error naming an offset, or import with the documented skip.
func TestCorpusAcceptance(t *testing.T) {
	needCorpus(t)
	redisBin, err := testenv.RedisServerBinary()
	if err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	valkeyBin, verr := testenv.ValkeyServerBinary()
	if verr != nil && os.Getenv("REQUIRE_VALKEY") != "" {
		t.Fatal(verr)
	}
	redis.SetLogger(quietLog{}) // servers that refuse a file exit; their dial errors are expected
	targets := map[string]*corpusTarget{"redis-7.0": newCorpusTarget(t, "redis-7.0", testenv.StartRedis(t))}
	if verr == nil {
		targets["valkey-8.0"] = newCorpusTarget(t, "valkey-8.0", testenv.StartServer(t, valkeyBin))
	} else {
		t.Logf("no Valkey (%v): files only Valkey loads are checked against the reference decode", verr)
	}
	start := time.Now()
	var rows []corpusRow
	for _, rel := range corpusFiles(t) {
		row := corpusRow{file: rel}
		t.Run(rel, func(t *testing.T) {
			defer func() {
				if t.Failed() && !strings.HasPrefix(row.result, "FAIL") {
					row.result = "FAIL " + row.result
				}
			}()
			path := filepath.Join(corpusDir, rel)
			ref := loadRef(t, rel)
			bins := []struct{ kind, bin string }{{"redis-7.0", redisBin}}
			if verr == nil {
				bins = append(bins, struct{ kind, bin string }{"valkey-8.0", valkeyBin})
			}
			for _, b := range bins {
				native, ok, _ := testenv.TryLoadRDB(t, b.bin, path)
				if ok {
					row.oracle = b.kind
					row.result = checkAgainstServer(t, rel, path, ref, native, targets[b.kind])
					native.Stop()
					if b.kind != "redis-7.0" {
						// Only Valkey reads it: into Redis 7.0 it goes re-encoded, and must
						// match the reference decode there too.
						row.result += "; into redis 7.0: " + checkAgainstReference(t, rel, path, ref, targets["redis-7.0"])
					}
					return
				}
			}
			row.oracle = "reference"
			row.result = checkAgainstReference(t, rel, path, ref, targets["redis-7.0"])
		})
		rows = append(rows, row)
	}
	logCorpusTable(t, rows, time.Since(start))
}

// TestCorpusTruncated cuts every corpus file at a few points and imports what is left: the
// import must stop with an error naming an offset (or succeed, when the cut only removes bytes
// after the RDB), never panic, and never leave a scratch key behind.
func TestCorpusTruncated(t *testing.T) {
	needCorpus(t)
	redis.SetLogger(quietLog{})
	ct := newCorpusTarget(t, "redis-7.0", testenv.StartRedis(t))
	cuts := 0
	for _, rel := range corpusFiles(t) {
		data, err := os.ReadFile(filepath.Join(corpusDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		ref := loadRef(t, rel)
		trailing, _ := refInt(ref.Info["trailing_bytes"])
		for _, frac := range []int{5, 33, 50, 90, 99} {
			cut := int64(len(data)) * int64(frac) / 100
			if cut <= 9 || cut >= int64(len(data)) {
				continue
			}
			cuts++
			ct.reset(t)
			sum, err := Import(ctx, bytes.NewReader(data[:cut]), ct.conn, Options{DBMap: identityDBMap(), ExplicitDBMap: true, Modules: ModulesSkip})
			switch {
			case err == nil && cut < int64(len(data))-trailing:
				t.Errorf("%s cut at %d of %d: imported without an error (%+v)", rel, cut, len(data), sum.Result)
			case err != nil && !strings.Contains(err.Error(), "offset"):
				t.Errorf("%s cut at %d: error without an offset: %v", rel, cut, err)
			}
			for db := range keyspace(t, ct.srv.Client(t, 0)) {
				if tmp, _ := ct.srv.Client(t, db).Keys(ctx, "*redis-migrate:tmp:*").Result(); len(tmp) > 0 {
					t.Errorf("%s cut at %d: scratch keys left: %v", rel, cut, tmp)
				}
			}
		}
	}
	t.Logf("%d truncated imports", cuts)
}

func logCorpusTable(t *testing.T, rows []corpusRow, d time.Duration) {
	var b strings.Builder
	per := map[string]int{}
	fails := 0
	for _, r := range rows {
		per[r.oracle]++
		if strings.HasPrefix(r.result, "FAIL") {
			fails++
		}
		fmt.Fprintf(&b, "| %-72s | %-10s | %s |\n", r.file, r.oracle, r.result)
	}
	var counts []string
	for _, k := range sortedKeys(per) {
		counts = append(counts, fmt.Sprintf("%s %d", k, per[k]))
	}
	t.Logf("corpus: %d files in %s (%s), %d failing\n| file | oracle | result |\n%s",
		len(rows), d.Round(time.Second), strings.Join(counts, ", "), fails, b.String())
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// verifyFile runs the closing verification (a second pass over the file against the target).
func verifyFile(t *testing.T, path string, ct *corpusTarget, o Options) *verify.Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o.DBMap, o.ExplicitDBMap = identityDBMap(), true
	rep, err := Verify(ctx, f, ct.conn, o)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

// verifiedAll checks that the verification found every key matching.
func verifiedAll(rep *verify.Report, want int64, _ *refFile) (string, bool) {
	if rep.Ok() && rep.Checked == want {
		return "verified", true
	}
	return fmt.Sprintf("verification: %+v; want all %d keys matching", rep, want), false
}

// importFile imports path into the target with every db mapped to itself and functions loaded.
func importFile(t *testing.T, path string, ct *corpusTarget, o Options) (*Summary, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o.DBMap, o.ExplicitDBMap = identityDBMap(), true
	if o.Functions == "" {
		o.Functions = FunctionsLoad
	}
	return Import(ctx, f, ct.conn, o)
}

// refCounts is what the reference decode says an import must count.
type refCounts struct {
	keys, expired, empty, modules, fieldTTLHashes int
}

func countRef(ref *refFile, now int64) refCounts {
	var c refCounts
	for _, k := range ref.Keys {
		c.keys++
		switch {
		case k.ExpireMs != nil && *k.ExpireMs > 0 && *k.ExpireMs <= now:
			c.expired++
		case isEmptyRefValue(k):
			c.empty++
		case k.Type == "module":
			c.modules++
		case k.Type == "hash" && canonRef(k).fieldTTLs > 0:
			c.fieldTTLHashes++
		}
	}
	return c
}

func isEmptyRefValue(k refKey) bool {
	switch v := k.Value.(type) {
	case []any:
		return k.Type != "string" && len(v) == 0
	case map[string]any:
		if k.Type == "hash" {
			return len(v) == 0
		}
		if k.Type == "stream" {
			return false // an empty stream is a real key
		}
	}
	return false
}

// checkAgainstServer: the server loaded the file itself; the import must agree with it.
func checkAgainstServer(t *testing.T, rel, path string, ref *refFile, native *testenv.Server, ct *corpusTarget) string {
	t.Helper()
	ct.reset(t)
	now := time.Now().UnixMilli()
	sum, err := importFile(t, path, ct, Options{})
	if err != nil {
		t.Errorf("import: %v", err)
		return "FAIL import: " + err.Error()
	}
	nc, tc := native.Client(t, 0), ct.srv.Client(t, 0)
	nks, tks := keyspace(t, nc), keyspace(t, tc)
	var total int64
	dbs := map[int]bool{}
	for db, n := range nks {
		dbs[db] = true
		total += n
	}
	for db := range tks {
		dbs[db] = true
	}
	for db := range dbs {
		want, err := testenv.Snapshot(ctx, []*redis.Client{native.Client(t, db)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := testenv.Snapshot(ctx, []*redis.Client{ct.srv.Client(t, db)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := testenv.DiffSnapshots(want, got, 0); len(d) > 0 {
			t.Errorf("db %d differs from the native load:\n%s", db, strings.Join(d, "\n"))
		}
		// DEBUG DIGEST-VALUE covers stream entries only: compare groups and counters too.
		for k, st := range want {
			if st.Type != "stream" {
				continue
			}
			a, err1 := canonServerStream(native.Client(t, db), k, true)
			b, err2 := canonServerStream(ct.srv.Client(t, db), k, true)
			if err1 != nil || err2 != nil || a != b {
				t.Errorf("stream %q differs (%v %v):\nnative:\n%s\nimported:\n%s", k, err1, err2, a, b)
			}
		}
	}
	nd, _ := nc.Do(ctx, "DEBUG", "DIGEST").Text()
	td, _ := tc.Do(ctx, "DEBUG", "DIGEST").Text()
	if nd != td {
		t.Errorf("DEBUG DIGEST: native %s, imported %s", nd, td)
	}
	if a, b := functionList(t, nc), functionList(t, tc); a != b {
		t.Errorf("functions differ:\nnative:\n%s\nimported:\n%s", a, b)
	}
	rc := countRef(ref, now)
	if sum.Copied != total || sum.Failed != 0 || sum.Expired != int64(rc.expired) || sum.Skipped != 0 {
		t.Errorf("counts %+v; want %d copied (the native load's keys), %d expired, none failed", sum.Result, total, rc.expired)
	}
	if sum.Scanned != sum.Copied+sum.Expired {
		t.Errorf("scanned %d, want copied+expired %d", sum.Scanned, sum.Copied+sum.Expired)
	}
	if sum.EmptySkipped != rc.empty {
		t.Errorf("%d empty collections skipped, reference has %d", sum.EmptySkipped, rc.empty)
	}
	note, ok := verifiedAll(verifyFile(t, path, ct, Options{}), total, ref)
	if !ok {
		t.Errorf("%s", note)
	}
	res := fmt.Sprintf("ok: %d keys, digest equal, %s", total, note)
	if rc.expired > 0 {
		res += fmt.Sprintf(", %d expired dropped", rc.expired)
	}
	if rc.empty > 0 {
		res += fmt.Sprintf(", %d empty collections skipped", rc.empty)
	}
	if fns, ok := ref.Info["functions"].([]any); ok {
		res += fmt.Sprintf(", %d function libraries loaded", len(fns))
		if sum.Functions != len(fns) || sum.FunctionsFound != len(fns) {
			t.Errorf("functions: %d of %d loaded, the file has %d", sum.Functions, sum.FunctionsFound, len(fns))
		}
	}
	return res
}

// checkAgainstReference: no server loads the file; what lands in Redis 7.0 must match the
// reference decode, and negative files must fail clearly.
func checkAgainstReference(t *testing.T, rel, path string, ref *refFile, ct *corpusTarget) string {
	t.Helper()
	ct.reset(t)
	var o Options
	switch negativeKind(rel) {
	case "corrupt", "future":
		sum, err := importFile(t, path, ct, o)
		var re *rdb.Error
		if err == nil || !errors.As(err, &re) || re.Offset < 0 || !strings.Contains(err.Error(), "offset") {
			t.Errorf("want an error naming an offset, got %v (summary %+v)", err, sum)
			return fmt.Sprintf("FAIL: %v", err)
		}
		if negativeKind(rel) == "future" && !errors.Is(err, rdb.ErrUnsupported) {
			t.Errorf("want an unsupported-version error, got %v", err)
		}
		return "rejected: " + err.Error()
	case "checksum":
		_, err := importFile(t, path, ct, o)
		if err == nil || !errors.Is(err, rdb.ErrChecksum) || !strings.Contains(err.Error(), "offset") {
			t.Errorf("want a checksum error naming an offset, got %v", err)
			return fmt.Sprintf("FAIL: %v", err)
		}
		first := err.Error()
		// With the check off it imports: the data itself is sound.
		ct.reset(t)
		o.SkipChecksum = true
		res := compareWithReference(t, path, ref, ct, o)
		return "rejected (" + first + "); with --skip-checksum " + res
	}
	return compareWithReference(t, path, ref, ct, o)
}

func compareWithReference(t *testing.T, path string, ref *refFile, ct *corpusTarget, o Options) string {
	t.Helper()
	now := time.Now().UnixMilli()
	sum, err := importFile(t, path, ct, o)
	if err != nil {
		t.Errorf("import: %v", err)
		return "FAIL import: " + err.Error()
	}
	rc := countRef(ref, now)
	failed := map[string]string{}
	for _, f := range sum.Failures {
		failed[f.Key] = f.Reason
	}
	var problems []string
	seen := map[int]map[string]bool{}
	for _, k := range ref.Keys {
		name := k.name()
		c := ct.srv.Client(t, k.DB)
		if seen[k.DB] == nil {
			seen[k.DB] = map[string]bool{}
		}
		seen[k.DB][name] = true
		n, err := c.Exists(ctx, name).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case k.ExpireMs != nil && *k.ExpireMs > 0 && *k.ExpireMs <= now, isEmptyRefValue(k):
			if n != 0 {
				problems = append(problems, fmt.Sprintf("%q should have been dropped (expired or empty)", name))
			}
			continue
		case k.Type == "module":
			if n != 0 {
				problems = append(problems, fmt.Sprintf("module key %q written to a target without the module", name))
			}
			if r, ok := failed[name]; !ok || !strings.Contains(r, "module") {
				problems = append(problems, fmt.Sprintf("module key %q not reported failed (failures %v)", name, sum.Failures))
			}
			continue
		}
		if n == 0 {
			problems = append(problems, fmt.Sprintf("missing %q (db %d)", name, k.DB))
			continue
		}
		want := canonRef(k)
		withCounters := false
		if k.Type == "stream" {
			meta, _ := k.Value.(map[string]any)["meta"].(map[string]any)
			_, withCounters = meta["entries_added"]
		}
		got, err := canonServer(c, name, withCounters)
		if err != nil {
			t.Fatal(err)
		}
		if got.typ != want.typ || got.value != want.value {
			problems = append(problems, fmt.Sprintf("%q: got %s\n%s\nreference %s\n%s", name, got.typ, got.value, want.typ, want.value))
		}
		exp, err := c.PExpireTime(ctx, name).Result()
		if err != nil {
			t.Fatal(err)
		}
		wantExp := int64(-1)
		if k.ExpireMs != nil && *k.ExpireMs > 0 {
			wantExp = *k.ExpireMs
		}
		if gotExp := exp.Milliseconds(); exp < 0 && wantExp != -1 || exp >= 0 && gotExp != wantExp {
			problems = append(problems, fmt.Sprintf("%q: expire %v, reference %d", name, exp, wantExp))
		}
		if want.fieldTTLs > 0 {
			if r, ok := failed[name]; !ok || !strings.Contains(r, "hash field TTLs") {
				problems = append(problems, fmt.Sprintf("%q: %d hash field TTLs dropped on Redis 7.0 but not reported (failures %v)", name, want.fieldTTLs, sum.Failures))
			}
		}
	}
	// Nothing else may appear.
	for db := range keyspace(t, ct.srv.Client(t, 0)) {
		keys, err := ct.srv.Client(t, db).Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if !seen[db][k] {
				problems = append(problems, fmt.Sprintf("extra key %q in db %d", k, db))
			}
		}
	}
	present := int64(rc.keys - rc.expired - rc.empty - rc.modules - rc.fieldTTLHashes)
	if rc.modules == 0 && rc.fieldTTLHashes == 0 {
		if note, ok := verifiedAll(verifyFile(t, path, ct, o), present, ref); !ok {
			problems = append(problems, note)
		}
	}
	if sum.Copied != present || sum.Expired != int64(rc.expired) || sum.Failed != int64(rc.modules+rc.fieldTTLHashes) || sum.EmptySkipped != rc.empty {
		problems = append(problems, fmt.Sprintf("counts %+v (empty skipped %d); want %d copied, %d expired, %d failed (modules, field TTLs), %d empty",
			sum.Result, sum.EmptySkipped, present, rc.expired, rc.modules+rc.fieldTTLHashes, rc.empty))
	}
	if mods, ok := ref.Info["module_aux"]; ok && sum.ModuleAux == 0 {
		problems = append(problems, fmt.Sprintf("module AUX %v not counted", mods))
	}
	if fns, ok := ref.Info["functions"].([]any); ok {
		if sum.FunctionsFound != len(fns) {
			problems = append(problems, fmt.Sprintf("%d functions found, reference %v", sum.FunctionsFound, fns))
		}
	}
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(problems, "\n"))
		return fmt.Sprintf("FAIL: %d problems", len(problems))
	}
	res := fmt.Sprintf("ok: %d keys match", present+int64(rc.fieldTTLHashes))
	if rc.expired > 0 {
		res += fmt.Sprintf(", %d expired dropped", rc.expired)
	}
	if rc.modules > 0 {
		res += fmt.Sprintf(", %d module keys failed by name", rc.modules)
	}
	if rc.fieldTTLHashes > 0 {
		res += fmt.Sprintf(" (%d hashes without their field TTLs, reported as failed keys)", rc.fieldTTLHashes)
	}
	if sum.ModuleAux > 0 {
		res += fmt.Sprintf(", %d module AUX skipped", sum.ModuleAux)
	}
	if sum.Functions > 0 {
		res += fmt.Sprintf(", %d functions loaded", sum.Functions)
	}
	return res
}
