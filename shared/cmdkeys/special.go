package cmdkeys

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a command of a replication stream means for a change feed.
type Kind int

const (
	// KindNone changes no key: PING, REPLCONF, MULTI/EXEC, PUBLISH, SCRIPT, FUNCTION, a read.
	KindNone Kind = iota
	// KindKeys changes the keys in Op.Keys.
	KindKeys
	// KindSelect selects database Op.DB for the commands that follow.
	KindSelect
	// KindFlushDB empties database Op.DB (the current one).
	KindFlushDB
	// KindFlushAll empties every database.
	KindFlushAll
	// KindSwapDB swaps databases Op.DB and Op.DB2: every key of both changed.
	KindSwapDB
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindKeys:
		return "keys"
	case KindSelect:
		return "select"
	case KindFlushDB:
		return "flushdb"
	case KindFlushAll:
		return "flushall"
	case KindSwapDB:
		return "swapdb"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Key is a key in a database.
type Key struct {
	DB  int
	Key []byte
}

// Op is what one command does to the keyspace.
type Op struct {
	Kind Kind
	// Keys written (KindKeys), each with its database: the current one, except MOVE's
	// destination and COPY ... DB n's destination.
	Keys []Key
	DB   int // KindSelect: the database selected; KindFlushDB: the one emptied; KindSwapDB: the first
	DB2  int // KindSwapDB: the second
}

// Classify says what argv, run in database db, does. Errors (ErrUnknownCommand, ErrNoKeys, or
// a malformed SELECT/SWAPDB/MOVE/COPY) mean the caller cannot know which keys changed.
func (t *Table) Classify(db int, argv [][]byte) (Op, error) {
	if len(argv) == 0 {
		return Op{}, fmt.Errorf("%w: empty command", ErrNoKeys)
	}
	name := strings.ToLower(string(argv[0]))
	dbArg := func(i int) (int, error) {
		if i >= len(argv) {
			return 0, fmt.Errorf("%w: %s without a database", ErrNoKeys, name)
		}
		n, err := strconv.Atoi(string(argv[i]))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w: %s with database %.20q", ErrNoKeys, name, argv[i])
		}
		return n, nil
	}
	switch name {
	case "select":
		n, err := dbArg(1)
		return Op{Kind: KindSelect, DB: n}, err
	case "flushdb":
		return Op{Kind: KindFlushDB, DB: db}, nil
	case "flushall":
		return Op{Kind: KindFlushAll}, nil
	case "swapdb":
		a, err := dbArg(1)
		if err != nil {
			return Op{}, err
		}
		b, err := dbArg(2)
		return Op{Kind: KindSwapDB, DB: a, DB2: b}, err
	case "move":
		if len(argv) != 3 {
			return Op{}, fmt.Errorf("%w: MOVE with %d arguments", ErrNoKeys, len(argv)-1)
		}
		to, err := dbArg(2)
		if err != nil {
			return Op{}, err
		}
		return Op{Kind: KindKeys, Keys: []Key{{db, argv[1]}, {to, argv[1]}}}, nil
	case "copy":
		// COPY source destination [DB destination-db] [REPLACE]
		if len(argv) < 3 {
			return Op{}, fmt.Errorf("%w: COPY with %d arguments", ErrNoKeys, len(argv)-1)
		}
		to := db
		for i := 3; i < len(argv); i++ {
			if strings.EqualFold(string(argv[i]), "db") {
				n, err := dbArg(i + 1)
				if err != nil {
					return Op{}, err
				}
				to = n
				i++
			}
		}
		return Op{Kind: KindKeys, Keys: []Key{{to, argv[2]}}}, nil
	case "ping", "replconf", "multi", "exec", "discard":
		return Op{Kind: KindNone}, nil
	}
	keys, write, err := t.Keys(argv)
	if err != nil {
		return Op{}, err
	}
	if !write || len(keys) == 0 {
		return Op{Kind: KindNone}, nil
	}
	op := Op{Kind: KindKeys, Keys: make([]Key, len(keys))}
	for i, k := range keys {
		op.Keys[i] = Key{db, k}
	}
	return op, nil
}
