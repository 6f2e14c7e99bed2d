package rdb

import (
	"bytes"
	"encoding/binary"
	"math"
)

// ModuleOp is one annotated item of a MODULE_2 / MODULE_AUX payload.
type ModuleOp struct {
	Code  int     // 1 SINT, 2 UINT, 3 FLOAT, 4 DOUBLE, 5 STRING
	Int   uint64  // SINT (two's complement) and UINT
	Float float64 // FLOAT and DOUBLE
	Str   []byte  // STRING
}

// Module opcode names for ModuleOp.Code.
const (
	ModuleOpSInt   = modOpSInt
	ModuleOpUInt   = modOpUInt
	ModuleOpFloat  = modOpFloat
	ModuleOpDouble = modOpDouble
	ModuleOpString = modOpString
)

// Ops decodes the module payload into its annotated items (the final EOF
// is not included). Useful for inspection; restoring needs only Raw.
func (m *Module) Ops() ([]ModuleOp, error) {
	d := &decoder{in: newInput(bytes.NewReader(m.Raw), 0, len(m.Raw)+1), opts: Options{}.withDefaults()}
	var ops []ModuleOp
	for {
		off := d.off()
		code, err := d.readLength("module opcode")
		if err != nil {
			return nil, err
		}
		op := ModuleOp{Code: int(code)}
		switch code {
		case modOpEOF:
			if rest := int64(len(m.Raw)) - d.off(); rest != 0 {
				return nil, errAt(d.off(), ErrCorrupt, "%d bytes after module EOF", rest)
			}
			return ops, nil
		case modOpSInt, modOpUInt:
			op.Int, err = d.readLength("module integer")
		case modOpFloat:
			var p []byte
			if p, err = d.in.readN(4, "module float"); err == nil {
				op.Float = float64(math.Float32frombits(binary.LittleEndian.Uint32(p)))
			}
		case modOpDouble:
			op.Float, err = d.readBinaryDouble("module double")
		case modOpString:
			op.Str, err = d.readString("module string")
		default:
			return nil, errAt(off, ErrCorrupt, "unknown module opcode %d", code)
		}
		if err != nil {
			return nil, err
		}
		ops = append(ops, op)
	}
}
