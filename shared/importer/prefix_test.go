package importer

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// RDB opcodes used to build the file below.
const (
	tFunction2 = 245
	tModuleAux = 247
	tIdle      = 248
	tFreq      = 249
	tAux       = 250
	tResizeDB  = 251
	tExpireMs  = 252
	tExpireSec = 253
	tSelectDB  = 254
	tEOF       = 255
)

// prefixFile writes an RDB 10 file where opcodes sit between keys' expire/idle/freq prefixes and
// their values, in every place redis-server 7.x and Valkey 8 accept them: KeyDB's AUX
// "mvcc-tstamp" after the expire of every key, RESIZEDB, SELECTDB (the key lands in the new db
// with the TTL read before it), FUNCTION2, and a prefix left dangling before EOF.
func prefixFile(t *testing.T, keys int) (path string, live int) {
	t.Helper()
	future := time.Now().Add(time.Hour).UnixMilli()
	past := time.Now().Add(-time.Hour).UnixMilli()
	b := []byte("REDIS0010")
	aux := func(k, v string) {
		b = rdb.AppendString(rdb.AppendString(append(b, tAux), []byte(k)), []byte(v))
	}
	ms := func(v int64) { b = binary.LittleEndian.AppendUint64(append(b, tExpireMs), uint64(v)) }
	enc := func(key string, v rdb.Value) {
		tb, raw, err := rdb.EncodeValue(v, 10)
		if err != nil {
			t.Fatal(err)
		}
		b = append(rdb.AppendString(append(b, tb), []byte(key)), raw...)
	}
	aux("redis-ver", "7.0.15")
	b = rdb.AppendLength(append(b, tSelectDB), 0)
	b = rdb.AppendLength(rdb.AppendLength(append(b, tResizeDB), uint64(keys)), uint64(keys))
	for i := 0; i < keys; i++ {
		key := fmt.Sprintf("kdb:%d", i)
		switch i % 4 {
		case 0: // KeyDB: expire, then AUX mvcc-tstamp, then the key
			ms(future + int64(i))
			aux("mvcc-tstamp", fmt.Sprint(1700000000000+i))
			enc(key, &rdb.String{Data: []byte(fmt.Sprint("v", i))})
		case 1: // idle and freq around a RESIZEDB hint, no expire
			b = rdb.AppendLength(append(b, tIdle), 30)
			b = rdb.AppendLength(rdb.AppendLength(append(b, tResizeDB), 1), 0)
			b = append(b, tFreq, 3)
			enc(key, &rdb.Hash{Fields: []rdb.HashField{{Field: []byte("f"), Value: []byte(fmt.Sprint(i))}}})
		case 2: // an expire in seconds, then an AUX, then a list
			b = binary.LittleEndian.AppendUint32(append(b, tExpireSec), uint32(future/1000+7200))
			aux("mvcc-tstamp", "1")
			enc(key, &rdb.List{Items: [][]byte{[]byte("a"), []byte(fmt.Sprint(i))}})
		case 3: // already expired, behind an AUX: dropped on load
			ms(past)
			aux("mvcc-tstamp", "2")
			enc(key, &rdb.String{Data: []byte("gone")})
		}
		if i%4 != 3 {
			live++
		}
	}
	// The expire before SELECTDB belongs to the first key of db 2; a FUNCTION2 sits between too.
	ms(future)
	b = rdb.AppendLength(append(b, tSelectDB), 2)
	b = rdb.AppendString(append(b, tFunction2), []byte("#!lua name=preflib\nredis.register_function('pf', function() return 1 end)"))
	enc("in-db2", &rdb.Set{Members: [][]byte{[]byte("x"), []byte("y")}})
	live++
	ms(future)
	aux("mvcc-tstamp", "3") // dangling: no key follows
	b = append(b, tEOF)
	b = binary.LittleEndian.AppendUint64(b, rdb.CRC64(0, b))
	path = filepath.Join(t.TempDir(), "keydb-style.rdb")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, live
}

// TestImportOpcodesBetweenPrefixAndValue: a file with opcodes between key prefixes and values
// (written above) loads natively into redis-server 7.0 and Valkey 8; the import into an empty
// server of the same kind gives the same dataset key by key (values, types, TTLs), the same
// DEBUG DIGEST and the same functions.
func TestImportOpcodesBetweenPrefixAndValue(t *testing.T) {
	path, live := prefixFile(t, 400)
	redis.SetLogger(quietLog{})
	bins := map[string]string{}
	if bin, err := testenv.RedisServerBinary(); err == nil {
		bins["redis-7.0"] = bin
	} else {
		t.Fatal(err)
	}
	if bin, err := testenv.ValkeyServerBinary(); err == nil {
		bins["valkey-8.0"] = bin
	} else if os.Getenv("REQUIRE_VALKEY") != "" {
		t.Fatal(err)
	}
	for kind, bin := range bins {
		t.Run(kind, func(t *testing.T) {
			native, ok, why := testenv.TryLoadRDB(t, bin, path)
			if !ok {
				t.Fatalf("%s refuses the file: %s", kind, why)
			}
			ct := newCorpusTarget(t, kind, testenv.StartServer(t, bin))
			sum, err := importFile(t, path, ct, Options{})
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			nc, tc := native.Client(t, 0), ct.srv.Client(t, 0)
			var total int64
			for _, n := range keyspace(t, nc) {
				total += n
			}
			if total != int64(live) {
				t.Fatalf("native load has %d keys, want %d", total, live)
			}
			for _, db := range []int{0, 2} {
				want, err := testenv.Snapshot(ctx, []*redis.Client{native.Client(t, db)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				got, err := testenv.Snapshot(ctx, []*redis.Client{ct.srv.Client(t, db)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if d := testenv.DiffSnapshots(want, got, 1000); len(d) > 0 {
					t.Errorf("db %d differs from the native load:\n%s", db, strings.Join(d, "\n"))
				}
			}
			if ttl := ct.srv.Client(t, 2).PTTL(ctx, "in-db2").Val(); ttl <= 0 {
				t.Errorf("in-db2 lost the expire read before SELECTDB: PTTL %v", ttl)
			}
			nd, _ := nc.Do(ctx, "DEBUG", "DIGEST").Text()
			td, _ := tc.Do(ctx, "DEBUG", "DIGEST").Text()
			if nd != td {
				t.Errorf("DEBUG DIGEST: native %s, imported %s", nd, td)
			}
			if a, b := functionList(t, nc), functionList(t, tc); a != b || !strings.Contains(a, "preflib") {
				t.Errorf("functions:\nnative:\n%s\nimported:\n%s", a, b)
			}
			if sum.Copied != total || sum.Failed != 0 || sum.Expired != 100 {
				t.Errorf("counts %+v; want %d copied, 100 expired", sum.Result, total)
			}
			if note, ok := verifiedAll(verifyFile(t, path, ct, Options{}), total, nil); !ok {
				t.Error(note)
			}
		})
	}
}
