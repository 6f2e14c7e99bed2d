package rdb

import "fmt"

// lzfMaxRatio bounds the expansion of LZF data: the best case is a 3-byte
// back reference producing 264 bytes. A claimed length above it cannot be
// genuine, so we refuse it before allocating.
const lzfMaxRatio = 89

// lzfDecompress inflates an LZF block into exactly outLen bytes.
func lzfDecompress(src []byte, outLen int) ([]byte, error) {
	out := make([]byte, outLen)
	if err := lzfRun(out, src, outLen); err != nil {
		return nil, err
	}
	return out, nil
}

// lzfRun walks an LZF block that must inflate to exactly outLen bytes, writing them to out
// (len(out) == outLen) or, with out nil, only checking the block: the same errors either way.
func lzfRun(out, src []byte, outLen int) error {
	ip, op := 0, 0
	for ip < len(src) {
		ctrl := int(src[ip])
		ip++
		if ctrl < 32 {
			n := ctrl + 1
			if ip+n > len(src) {
				return fmt.Errorf("literal run of %d bytes at %d exceeds input of %d bytes", n, ip, len(src))
			}
			if op+n > outLen {
				return fmt.Errorf("literal run of %d bytes overflows output of %d bytes", n, outLen)
			}
			if out != nil {
				copy(out[op:], src[ip:ip+n])
			}
			ip += n
			op += n
			continue
		}
		n := ctrl >> 5
		if n == 7 {
			if ip >= len(src) {
				return fmt.Errorf("truncated back reference at %d", ip)
			}
			n += int(src[ip])
			ip++
		}
		if ip >= len(src) {
			return fmt.Errorf("truncated back reference at %d", ip)
		}
		ref := op - (ctrl&0x1f)<<8 - int(src[ip]) - 1
		ip++
		n += 2
		if ref < 0 {
			return fmt.Errorf("back reference %d bytes before output start", -ref)
		}
		if op+n > outLen {
			return fmt.Errorf("back reference of %d bytes overflows output of %d bytes", n, outLen)
		}
		if out != nil {
			if ref+n <= op {
				copy(out[op:op+n], out[ref:ref+n])
			} else {
				// Overlapping copy repeats the pattern, byte by byte.
				for i := 0; i < n; i++ {
					out[op+i] = out[ref+i]
				}
			}
		}
		op += n
	}
	if op != outLen {
		return fmt.Errorf("decompressed %d bytes, expected %d", op, outLen)
	}
	return nil
}
