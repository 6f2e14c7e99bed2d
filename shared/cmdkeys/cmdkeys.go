// Package cmdkeys tells which keys a command writes, from the server's own command table
// (COMMAND: the key specifications of Redis 7 and Valkey, or the first/last/step positions of
// older servers). A change feed reading a replication stream uses it to turn every write
// command into the keys it may have changed; a command the table does not know is an error,
// never ignored, so the feed can report a gap instead of losing a write.
package cmdkeys

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrUnknownCommand: the command is not in the server's table (a module command loaded later,
// a renamed command): its keys cannot be known.
var ErrUnknownCommand = errors.New("command not in the server's command table")

// ErrNoKeys: the command is known but where its keys are cannot be worked out from its
// arguments (arity not met, a key spec the table cannot follow).
var ErrNoKeys = errors.New("cannot find the keys of the command")

// Table is a server's command table, ready to find keys. It is safe for concurrent use.
type Table struct {
	cmds map[string]*command // lower-case name, subcommands as "parent|sub"
}

type command struct {
	name     string
	arity    int
	write    bool // flag write
	movable  bool
	first    int
	last     int
	step     int
	specs    []keySpec
	subs     map[string]*command
	hasSpecs bool // the server gave key specs (Redis 7+, Valkey)
}

type keySpec struct {
	write bool // RW, OW or RM: the key may be changed
	// begin_search
	bsIndex     int // > 0 for type index
	bsKeyword   string
	bsStartFrom int
	bsUnknown   bool
	// find_keys
	fkRange                     bool
	lastKey, keyStep, limit     int
	fkKeynum                    bool
	keynumIdx, firstKey, kStep2 int
	fkUnknown                   bool
}

// Doer is what Load needs of a go-redis client (*redis.Client, *redis.ClusterClient and
// redis.UniversalClient all have it).
type Doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// Load reads the command table of the server c is connected to (COMMAND). For a cluster, any
// node's table will do: every node runs the same server.
func Load(ctx context.Context, c Doer) (*Table, error) {
	v, err := c.Do(ctx, "COMMAND").Result()
	if err != nil {
		return nil, fmt.Errorf("reading the command table (COMMAND): %w", err)
	}
	return Parse(v)
}

// Parse builds a Table from a COMMAND reply as go-redis returns it (RESP2 arrays or RESP3 maps).
func Parse(reply any) (*Table, error) {
	list, ok := reply.([]any)
	if !ok {
		return nil, fmt.Errorf("COMMAND reply is %T, not an array", reply)
	}
	t := &Table{cmds: map[string]*command{}}
	for _, e := range list {
		cmd, err := parseCommand(e)
		if err != nil {
			return nil, err
		}
		if cmd != nil {
			t.cmds[cmd.name] = cmd
		}
	}
	if len(t.cmds) == 0 {
		return nil, errors.New("COMMAND returned an empty table")
	}
	return t, nil
}

func parseCommand(e any) (*command, error) {
	a, ok := e.([]any)
	if !ok {
		return nil, nil // nil entries: commands that vanished
	}
	if len(a) < 6 {
		return nil, fmt.Errorf("COMMAND entry with %d fields", len(a))
	}
	c := &command{name: strings.ToLower(str(a[0])), arity: num(a[1]), first: num(a[3]), last: num(a[4]), step: num(a[5])}
	for _, f := range list(a[2]) {
		switch strings.ToLower(str(f)) {
		case "write":
			c.write = true
		case "movablekeys":
			c.movable = true
		}
	}
	if len(a) > 8 {
		c.hasSpecs = true
		for _, s := range list(a[8]) {
			c.specs = append(c.specs, parseSpec(s))
		}
	}
	if len(a) > 9 {
		for _, s := range list(a[9]) {
			sub, err := parseCommand(s)
			if err != nil {
				return nil, err
			}
			if sub == nil {
				continue
			}
			if c.subs == nil {
				c.subs = map[string]*command{}
			}
			_, short, _ := strings.Cut(sub.name, "|")
			c.subs[short] = sub
		}
	}
	return c, nil
}

func parseSpec(v any) keySpec {
	m := toMap(v)
	var s keySpec
	for _, f := range list(m["flags"]) {
		switch strings.ToUpper(str(f)) {
		case "RW", "OW", "RM":
			s.write = true
		}
	}
	bs := toMap(m["begin_search"])
	bspec := toMap(bs["spec"])
	switch str(bs["type"]) {
	case "index":
		s.bsIndex = num(bspec["index"])
	case "keyword":
		s.bsKeyword = str(bspec["keyword"])
		s.bsStartFrom = num(bspec["startfrom"])
	default:
		s.bsUnknown = true
	}
	fk := toMap(m["find_keys"])
	fspec := toMap(fk["spec"])
	switch str(fk["type"]) {
	case "range":
		s.fkRange = true
		s.lastKey, s.keyStep, s.limit = num(fspec["lastkey"]), num(fspec["keystep"]), num(fspec["limit"])
	case "keynum":
		s.fkKeynum = true
		s.keynumIdx, s.firstKey, s.kStep2 = num(fspec["keynumidx"]), num(fspec["firstkey"]), num(fspec["keystep"])
	default:
		s.fkUnknown = true
	}
	return s
}

// Known reports whether the table has the command (name in any case).
func (t *Table) Known(name string) bool {
	_, ok := t.cmds[strings.ToLower(name)]
	return ok
}

// lookup finds the command or subcommand argv names.
func (t *Table) lookup(argv [][]byte) (*command, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrNoKeys)
	}
	c, ok := t.cmds[strings.ToLower(string(argv[0]))]
	if !ok {
		return nil, fmt.Errorf("%w: %.40q", ErrUnknownCommand, argv[0])
	}
	if len(c.subs) > 0 && len(argv) > 1 {
		if sub, ok := c.subs[strings.ToLower(string(argv[1]))]; ok {
			c = sub
		}
	}
	if (c.arity > 0 && len(argv) != c.arity) || (c.arity < 0 && len(argv) < -c.arity) {
		return nil, fmt.Errorf("%w: %s with %d arguments (arity %d)", ErrNoKeys, c.name, len(argv)-1, c.arity)
	}
	return c, nil
}

// Keys returns the keys of the command argv and whether it writes. For a write command (flag
// write, or a key the key specs mark RW/OW/RM, as EVAL's and FCALL's declared keys), keys are
// the ones it may change (SORT ... STORE dst gives dst, ZUNIONSTORE dst gives dst, RENAME and
// LMOVE give both; a write command whose specs mark no key as written gives all its keys); for
// a command that writes nothing, keys are the ones it reads. The keys alias argv.
func (t *Table) Keys(argv [][]byte) (keys [][]byte, write bool, err error) {
	c, err := t.lookup(argv)
	if err != nil {
		return nil, false, err
	}
	return c.keys(argv)
}

func (c *command) keys(argv [][]byte) ([][]byte, bool, error) {
	if f, ok := finders[c.name]; ok && (!c.hasSpecs || c.unknownSpecs()) {
		return f(c, argv)
	}
	if !c.hasSpecs {
		if c.movable {
			return nil, c.write, fmt.Errorf("%w: %s finds its keys at run time and this server gives no key specs", ErrNoKeys, c.name)
		}
		pos, err := rangeKeys(len(argv), c.first, c.last, c.step)
		if err != nil {
			return nil, c.write, fmt.Errorf("%w: %s: %v", ErrNoKeys, c.name, err)
		}
		return pick(argv, pos), c.write, nil
	}
	if c.unknownSpecs() {
		return nil, c.write, fmt.Errorf("%w: %s has a key spec that cannot be followed", ErrNoKeys, c.name)
	}
	write, writeSpecs := c.write, false
	for _, s := range c.specs {
		if s.write {
			write, writeSpecs = true, true
		}
	}
	var out [][]byte
	for _, s := range c.specs {
		if writeSpecs && !s.write {
			continue // a key the command only reads
		}
		pos, err := s.find(argv)
		if err != nil {
			return nil, write, fmt.Errorf("%w: %s: %v", ErrNoKeys, c.name, err)
		}
		out = append(out, pick(argv, pos)...)
	}
	return out, write, nil
}

func (c *command) unknownSpecs() bool {
	for _, s := range c.specs {
		if s.bsUnknown || s.fkUnknown {
			return true
		}
	}
	return false
}

// find returns the argument positions of the spec's keys, as the server computes them.
func (s keySpec) find(argv [][]byte) ([]int, error) {
	argc := len(argv)
	first := 0
	switch {
	case s.bsIndex > 0:
		first = s.bsIndex
	case s.bsKeyword != "":
		start, end, step := s.bsStartFrom, argc-1, 1
		if s.bsStartFrom <= 0 {
			start, end, step = argc+s.bsStartFrom, 1, -1
		}
		for i := start; i >= 1 && i < argc; i += step {
			if strings.EqualFold(string(argv[i]), s.bsKeyword) {
				first = i + 1
				break
			}
			if i == end {
				break
			}
		}
		if first == 0 {
			return nil, nil // keyword absent: no key from this spec
		}
	default:
		return nil, errors.New("unknown begin_search")
	}
	if first >= argc {
		return nil, fmt.Errorf("key position %d past the arguments", first)
	}
	switch {
	case s.fkRange:
		var last int
		switch {
		case s.lastKey >= 0:
			last = first + s.lastKey
		case s.limit == 0:
			last = argc + s.lastKey
		default:
			last = first + ((argc-first)/s.limit + s.lastKey)
		}
		return rangeKeys(argc, first, last, s.keyStep)
	case s.fkKeynum:
		i := first + s.keynumIdx
		if i >= argc {
			return nil, errors.New("numkeys past the arguments")
		}
		n, err := strconv.Atoi(string(argv[i]))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("numkeys %.20q is not a count", argv[i])
		}
		if n == 0 {
			return nil, nil
		}
		first += s.firstKey
		step := s.kStep2
		if step <= 0 {
			step = 1
		}
		return rangeKeys(argc, first, first+(n-1)*step, step)
	}
	return nil, errors.New("unknown find_keys")
}

// rangeKeys lists first..last by step, last < 0 counting from the end (argc+last).
func rangeKeys(argc, first, last, step int) ([]int, error) {
	if first == 0 {
		return nil, nil
	}
	if last < 0 {
		last = argc + last
	}
	if step <= 0 {
		step = 1
	}
	if first >= argc || last >= argc || last < first {
		return nil, fmt.Errorf("key positions %d..%d do not fit %d arguments", first, last, argc)
	}
	var out []int
	for i := first; i <= last; i += step {
		out = append(out, i)
	}
	return out, nil
}

func pick(argv [][]byte, pos []int) [][]byte {
	out := make([][]byte, 0, len(pos))
	for _, p := range pos {
		out = append(out, argv[p])
	}
	return out
}

// finders compute keys for commands whose key specs cannot say (SORT's STORE may be anywhere)
// or for servers without key specs (Redis before 7) where the command's keys move.
var finders = map[string]func(c *command, argv [][]byte) ([][]byte, bool, error){
	"sort":                 sortKeys,
	"sort_ro":              sortKeys,
	"eval":                 numkeysAt(2, false),
	"evalsha":              numkeysAt(2, false),
	"eval_ro":              numkeysAt(2, true),
	"evalsha_ro":           numkeysAt(2, true),
	"fcall":                numkeysAt(2, false),
	"fcall_ro":             numkeysAt(2, true),
	"zunionstore":          destOnly,
	"zinterstore":          destOnly,
	"zdiffstore":           destOnly,
	"georadius":            geoStore(6),
	"georadiusbymember":    geoStore(5),
	"georadius_ro":         geoStore(-1),
	"georadiusbymember_ro": geoStore(-1),
}

// sortKeys: SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
// [STORE destination]: with STORE, the destination is written; without, key is read.
func sortKeys(c *command, argv [][]byte) ([][]byte, bool, error) {
	if len(argv) < 2 {
		return nil, false, fmt.Errorf("%w: %s without a key", ErrNoKeys, c.name)
	}
	var store []byte
	for i := 2; i < len(argv); i++ {
		switch strings.ToLower(string(argv[i])) {
		case "limit":
			i += 2
		case "by", "get":
			i++
		case "store":
			if i+1 < len(argv) {
				store = argv[i+1]
			}
			i++
		}
	}
	if store != nil && c.name == "sort" {
		return [][]byte{store}, true, nil
	}
	return [][]byte{argv[1]}, false, nil
}

// numkeysAt: scripts and functions, `<cmd> <script> numkeys key ...`. The keys may be written
// (the server cannot tell which), except by the read-only variants.
func numkeysAt(idx int, ro bool) func(c *command, argv [][]byte) ([][]byte, bool, error) {
	return func(c *command, argv [][]byte) ([][]byte, bool, error) {
		if len(argv) <= idx {
			return nil, !ro, fmt.Errorf("%w: %s without numkeys", ErrNoKeys, c.name)
		}
		n, err := strconv.Atoi(string(argv[idx]))
		if err != nil || n < 0 || idx+1+n > len(argv) {
			return nil, !ro, fmt.Errorf("%w: %s numkeys %.20q does not fit the arguments", ErrNoKeys, c.name, argv[idx])
		}
		return argv[idx+1 : idx+1+n], !ro, nil
	}
}

// destOnly: ZUNIONSTORE destination numkeys key ...: only the destination is written.
func destOnly(c *command, argv [][]byte) ([][]byte, bool, error) {
	if len(argv) < 2 {
		return nil, true, fmt.Errorf("%w: %s without a destination", ErrNoKeys, c.name)
	}
	return [][]byte{argv[1]}, true, nil
}

// geoStore: GEORADIUS ... [STORE key] [STOREDIST key] from position from on (-1: read-only
// variant, never stores).
func geoStore(from int) func(c *command, argv [][]byte) ([][]byte, bool, error) {
	return func(c *command, argv [][]byte) ([][]byte, bool, error) {
		var out [][]byte
		if from > 0 {
			for i := from; i+1 < len(argv); i++ {
				if s := strings.ToLower(string(argv[i])); s == "store" || s == "storedist" {
					out = append(out, argv[i+1])
					i++
				}
			}
		}
		if len(out) > 0 {
			return out, true, nil
		}
		return [][]byte{argv[1]}, false, nil
	}
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func num(v any) int {
	switch x := v.(type) {
	case int64:
		return int(x)
	case string:
		n, _ := strconv.Atoi(x)
		return n
	}
	return 0
}

func list(v any) []any {
	switch x := v.(type) {
	case []any:
		return x
	case map[any]any: // RESP3 sets arrive as maps in some clients
		out := make([]any, 0, len(x))
		for k := range x {
			out = append(out, k)
		}
		return out
	}
	return nil
}

// toMap reads a RESP2 flat [k, v, k, v ...] array or a RESP3 map.
func toMap(v any) map[string]any {
	out := map[string]any{}
	switch x := v.(type) {
	case []any:
		for i := 0; i+1 < len(x); i += 2 {
			out[str(x[i])] = x[i+1]
		}
	case map[any]any:
		for k, val := range x {
			out[str(k)] = val
		}
	case map[string]any:
		return x
	}
	return out
}
