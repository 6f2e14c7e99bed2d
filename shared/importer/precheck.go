package importer

import (
	"context"
	"encoding/binary"
	"io"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
)

// CheckError is what CheckFirst found wrong with the input itself (not an I/O error).
type CheckError struct{ Err error }

func (e *CheckError) Error() string { return e.Err.Error() }
func (e *CheckError) Unwrap() error { return e.Err }

// CheckFirst reads the whole input once before an import writes anything, so a corrupt file
// (bytes flipped inside values, which only the final CRC64 notices; a file cut or damaged half
// way) is refused whole instead of being imported up to the damage, or with wrong values.
//
// open(0) must return the input from its first byte; it is called once or twice. The first pass
// is a plain CRC64 of everything but the last 8 bytes, compared with them: the usual file, which
// ends with its checksum, passes with no parsing at all. Anything else (a mismatch, a file with
// bytes after its trailer such as an AOF tail, an RDB older than version 5 or written without a
// checksum) gets a second pass that parses every entry and checks the trailer where the EOF
// opcode puts it, and whose error names the offset. With skipChecksum the CRC64 is not compared
// and only the structure is checked.
func CheckFirst(ctx context.Context, open func(offset int64) (io.Reader, func(), error), skipChecksum bool) error {
	if !skipChecksum {
		ok, err := crcMatchesTrailer(ctx, open)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	r, closeInput, err := open(0)
	if err != nil {
		return err
	}
	defer closeInput()
	rd, err := rdb.NewReader(r, rdb.Options{SkipChecksum: skipChecksum, ReuseEntries: true})
	if err != nil {
		return &CheckError{err}
	}
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		_, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &CheckError{err}
		}
	}
}

// crcMatchesTrailer reports whether the CRC64 of all bytes but the last 8 equals them (read as
// the little-endian trailer), for an RDB >= 5 whose stored checksum is not zero.
func crcMatchesTrailer(ctx context.Context, open func(offset int64) (io.Reader, func(), error)) (bool, error) {
	r, closeInput, err := open(0)
	if err != nil {
		return false, err
	}
	defer closeInput()
	buf := make([]byte, 1<<20)
	var crc uint64
	var tail []byte // the last up-to-8 bytes seen, not yet in crc
	var head []byte // the first 9 bytes (header)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		n, rerr := r.Read(buf)
		p := buf[:n]
		total += int64(n)
		if len(head) < 9 {
			head = append(head, p[:min(len(p), 9-len(head))]...)
		}
		if len(p) >= 8 {
			crc = rdb.CRC64(crc, tail)
			crc = rdb.CRC64(crc, p[:len(p)-8])
			tail = append(tail[:0], p[len(p)-8:]...)
		} else {
			tail = append(tail, p...)
			if extra := len(tail) - 8; extra > 0 {
				crc = rdb.CRC64(crc, tail[:extra])
				tail = append(tail[:0], tail[extra:]...)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return false, rerr
		}
	}
	if total < 9+1+8 || len(head) < 9 || string(head[:5]) != "REDIS" && string(head[:6]) != "VALKEY" {
		return false, nil
	}
	if string(head[:5]) == "REDIS" && string(head[5:9]) < "0005" {
		return false, nil // no checksum before RDB 5
	}
	stored := binary.LittleEndian.Uint64(tail)
	return stored != 0 && stored == crc, nil
}
