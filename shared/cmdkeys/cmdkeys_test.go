package cmdkeys_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/cmdkeys"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func argv(s string) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(s) {
		out = append(out, []byte(f))
	}
	return out
}

func show(op cmdkeys.Op) string {
	switch op.Kind {
	case cmdkeys.KindKeys:
		var ks []string
		for _, k := range op.Keys {
			ks = append(ks, fmt.Sprintf("%d/%s", k.DB, k.Key))
		}
		return "keys " + strings.Join(ks, " ")
	case cmdkeys.KindSelect, cmdkeys.KindFlushDB:
		return fmt.Sprintf("%s %d", op.Kind, op.DB)
	case cmdkeys.KindSwapDB:
		return fmt.Sprintf("swapdb %d %d", op.DB, op.DB2)
	}
	return op.Kind.String()
}

// What a replication stream carries, run in database 2, and what the feed must make of it.
var cases = []struct{ cmd, want string }{
	{"SET k v", "keys 2/k"},
	{"set k v EX 10", "keys 2/k"},
	{"INCR n", "keys 2/n"},
	{"DEL a b c", "keys 2/a 2/b 2/c"},
	{"UNLINK a b", "keys 2/a 2/b"},
	{"EXPIRE k 10", "keys 2/k"},
	{"PEXPIREAT k 1000000", "keys 2/k"},
	{"PERSIST k", "keys 2/k"},
	{"RENAME a b", "keys 2/a 2/b"},
	{"RENAMENX a b", "keys 2/a 2/b"},
	{"MSET a 1 b 2 c 3", "keys 2/a 2/b 2/c"},
	{"MSETNX a 1 b 2", "keys 2/a 2/b"},
	{"HSET h f v g w", "keys 2/h"},
	{"HDEL h f", "keys 2/h"},
	{"LPUSH l a b", "keys 2/l"},
	{"LTRIM l 0 10", "keys 2/l"},
	{"ZADD z 1 a", "keys 2/z"},
	{"XADD s * f v", "keys 2/s"},
	{"XADD s MAXLEN ~ 10 1-1 f v", "keys 2/s"},
	{"XTRIM s MAXLEN 10", "keys 2/s"},
	{"XGROUP CREATE s g $ MKSTREAM", "keys 2/s"},
	{"XACK s g 1-1", "keys 2/s"},
	{"XCLAIM s g c 0 1-1", "keys 2/s"},
	{"XSETID s 5-5", "keys 2/s"},
	{"SORT src BY w* LIMIT 0 5 GET # STORE dst", "keys 2/dst"},
	{"SORT src ALPHA", "none"},
	{"ZUNIONSTORE dst 2 a b WEIGHTS 1 2", "keys 2/dst"},
	{"ZINTERSTORE dst 1 a", "keys 2/dst"},
	{"SUNIONSTORE dst a b", "keys 2/dst"},
	{"COPY a b", "keys 2/b"},
	{"COPY a b DB 5 REPLACE", "keys 5/b"},
	{"LMOVE a b LEFT RIGHT", "keys 2/a 2/b"},
	{"RPOPLPUSH a b", "keys 2/a 2/b"},
	{"SMOVE a b m", "keys 2/a 2/b"},
	{"GEOADD g 1 2 m", "keys 2/g"},
	{"GEORADIUS g 1 2 3 km STORE dst", "keys 2/dst"},
	{"GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km", "keys 2/dst"},
	{"PFADD hll a", "keys 2/hll"},
	{"SETRANGE k 0 x", "keys 2/k"},
	{"GETDEL k", "keys 2/k"},
	{"RESTORE k 0 payload REPLACE", "keys 2/k"},
	{"EVAL script 2 k1 k2 arg", "keys 2/k1 2/k2"},
	{"EVAL script 0", "none"},
	{"EVALSHA abc 1 k1 arg", "keys 2/k1"},
	{"FCALL fn 1 k1 arg", "keys 2/k1"},
	{"MULTI", "none"},
	{"EXEC", "none"},
	{"PING", "none"},
	{"REPLCONF GETACK *", "none"},
	{"PUBLISH ch msg", "none"},
	{"SCRIPT LOAD x", "none"},
	{"FUNCTION FLUSH", "none"},
	{"GET k", "none"},
	{"SELECT 7", "select 7"},
	{"FLUSHDB", "flushdb 2"},
	{"FLUSHDB ASYNC", "flushdb 2"},
	{"FLUSHALL", "flushall"},
	{"SWAPDB 0 3", "swapdb 0 3"},
	{"MOVE k 4", "keys 2/k 4/k"},
}

func servers(t *testing.T) map[string]*redis.Client {
	out := map[string]*redis.Client{"redis": testenv.StartRedis(t).Client(t, 0)}
	if _, err := testenv.ValkeyServerBinary(); err == nil {
		out["valkey"] = testenv.StartValkey(t).Client(t, 0)
	} else {
		t.Logf("no Valkey: %v", err)
	}
	return out
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	for name, c := range servers(t) {
		t.Run(name, func(t *testing.T) {
			tab, err := cmdkeys.Load(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range cases {
				op, err := tab.Classify(2, argv(tc.cmd))
				if err != nil {
					t.Errorf("%s: %v", tc.cmd, err)
					continue
				}
				if got := show(op); got != tc.want {
					t.Errorf("%s: got %q, want %q", tc.cmd, got, tc.want)
				}
				// The keys found are among those the server itself names.
				if op.Kind == cmdkeys.KindKeys && !strings.HasPrefix(tc.cmd, "MOVE") && !strings.HasPrefix(tc.cmd, "RESTORE") {
					args := []any{"COMMAND", "GETKEYS"}
					for _, a := range argv(tc.cmd) {
						args = append(args, string(a))
					}
					srv, err := c.Do(ctx, args...).StringSlice()
					if err != nil {
						t.Errorf("COMMAND GETKEYS %s: %v", tc.cmd, err)
						continue
					}
					for _, k := range op.Keys {
						found := false
						for _, s := range srv {
							found = found || s == string(k.Key)
						}
						if !found {
							t.Errorf("%s: key %s is not among the server's %v", tc.cmd, k.Key, srv)
						}
					}
				}
			}
		})
	}
}

// A command the table does not know, or whose arguments do not fit, is an error, never "no keys".
func TestUnknownAndMalformed(t *testing.T) {
	tab, err := cmdkeys.Load(context.Background(), testenv.StartRedis(t).Client(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"MYMODULE.SET k v", "SET k", "EVAL s 3 a", "ZUNIONSTORE", "SELECT x", "SWAPDB 0", "MOVE k", "COPY a b DB"} {
		_, err := tab.Classify(0, argv(cmd))
		if err == nil {
			t.Errorf("%s: no error", cmd)
		}
	}
	if _, err := tab.Classify(0, argv("FOO.BAR k")); !errors.Is(err, cmdkeys.ErrUnknownCommand) {
		t.Errorf("unknown command: %v", err)
	}
	if _, err := tab.Classify(0, argv("SET k")); !errors.Is(err, cmdkeys.ErrNoKeys) {
		t.Errorf("bad arity: %v", err)
	}
}

// Every write command of the server's table either has key specs cmdkeys can follow or a
// finder of its own; the rest are listed (they must never reach a replication stream).
func TestEveryWriteCommand(t *testing.T) {
	ctx := context.Background()
	for name, c := range servers(t) {
		t.Run(name, func(t *testing.T) {
			tab, err := cmdkeys.Load(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			infos, err := c.Command(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			var cannot []string
			checked := 0
			for n, info := range infos {
				write := false
				for _, f := range info.Flags {
					write = write || f == "write"
				}
				if !write || !tab.Known(n) {
					continue
				}
				checked++
				// Build a plausible call: the command with enough "1" arguments for its arity.
				args := []string{n}
				want := int(info.Arity)
				if want < 0 {
					want = -want
				}
				for len(args) < want {
					args = append(args, "1")
				}
				if _, _, err := tab.Keys(argv(strings.Join(args, " "))); err != nil && !errors.Is(err, cmdkeys.ErrNoKeys) {
					t.Errorf("%s: %v", n, err)
				} else if err != nil {
					cannot = append(cannot, n)
				}
			}
			if checked < 80 {
				t.Fatalf("only %d write commands checked", checked)
			}
			sort.Strings(cannot)
			t.Logf("write commands whose keys need real arguments: %v", cannot)
		})
	}
}

// A server without key specs (Redis 6: COMMAND entries of 7 fields) still gives every written
// key, perhaps with some it only reads.
func TestWithoutKeySpecs(t *testing.T) {
	ctx := context.Background()
	c := testenv.StartRedis(t).Client(t, 0)
	raw, err := c.Do(ctx, "COMMAND").Slice()
	if err != nil {
		t.Fatal(err)
	}
	var old []any
	for _, e := range raw {
		a := e.([]any)
		if len(a) > 7 {
			a = a[:7]
		}
		old = append(old, a)
	}
	tab, err := cmdkeys.Parse(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if strings.HasPrefix(tc.cmd, "XGROUP") {
			continue // Redis 6 has XGROUP as one write command (2,2,1); cut from 7's table it is a bare container
		}
		op, err := tab.Classify(2, argv(tc.cmd))
		if err != nil {
			t.Errorf("%s: %v", tc.cmd, err)
			continue
		}
		got := show(op)
		if got == tc.want {
			continue
		}
		wantKeys, ok := strings.CutPrefix(tc.want, "keys ")
		if !ok || !strings.HasPrefix(got, "keys ") {
			t.Errorf("%s: got %q, want %q", tc.cmd, got, tc.want)
			continue
		}
		for _, k := range strings.Fields(wantKeys) {
			if !strings.Contains(" "+got+" ", " "+k+" ") {
				t.Errorf("%s: got %q, which lacks %s", tc.cmd, got, k)
			}
		}
	}
}
