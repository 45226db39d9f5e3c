// Command gfs-chaos-porcupine checks chaos histories for linearizability with porcupine
// (github.com/anishathalye/porcupine), independently of bench/chaos/checker.py.
//
//	gfs-chaos-porcupine [-timeout 60s] FILE.porcupine.json...
//
// Each FILE is a JSON array of porcupine Operations as bench/chaos/history.py writes them:
// ClientId, Input {key, f, value}, Call, Output, Return (integer nanoseconds). The model is
// the file semantics of checker.py's FileKeyModel, one key (a path P and its staging path
// P.tmp) per partition. An operation whose outcome is unknown has Output {"unknown": true}
// and a Return after every other operation; the model lets it take whichever effect is legal
// where it is linearized, so porcupine may place it anywhere after its call, including after
// everything else, where its effect can no longer be seen (the same as never happening).
//
// One JSON line per file: {"file", "ops", "keys", "unknown_ops", "result", "illegal_keys",
// "unknown_keys", "seconds"}, result "ok", "illegal", or "unknown" (a key's search ran out
// of time: not a pass). A file that cannot be read or decoded gives {"file", "error"}.
// Exit status 1 if any file is illegal, else 2 if any file could not be checked, else 0.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// input is an operation's call: which key, which function, with which value.
type input struct {
	Key   string
	F     string
	Value interface{} // a string for write/create/write_tmp, else null
}

// output is an operation's response as the model reads it.
type output struct {
	Unknown  bool        // the outcome is unknown ("info")
	Success  bool        // {"ok": true} with no "error"
	Error    string      // the "error" code of a definite error answer (not "ok")
	HasValue bool        // a "value" field is present
	Value    interface{} // the value a read returned
}

// state is one key: the value at P and at P.tmp (Has* false: absent).
type state struct {
	HasMain bool
	Main    string
	HasTmp  bool
	Tmp     string
}

// stored is a value as the model stores it: it must be a string, as the workload writes.
func stored(v interface{}) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// step applies one operation with its recorded output; the same rules as FileKeyModel.step.
func step(st state, in input, out output) (bool, state) {
	if out.Unknown {
		return true, stepUnknown(st, in)
	}
	switch in.F {
	case "write":
		if v, ok := stored(in.Value); ok && out.Success {
			return true, state{true, v, st.HasTmp, st.Tmp}
		}
	case "create":
		if out.Success {
			v, ok := stored(in.Value)
			return ok && !st.HasMain, state{true, v, st.HasTmp, st.Tmp}
		}
		return st.HasMain && out.Error == "ALREADY_EXISTS", st
	case "write_tmp":
		if v, ok := stored(in.Value); ok && out.Success {
			return true, state{st.HasMain, st.Main, true, v}
		}
	case "rename":
		if out.Success {
			return st.HasTmp, state{st.HasTmp, st.Tmp, false, ""}
		}
		return !st.HasTmp && out.Error == "NOT_FOUND", st
	case "read":
		if out.Success {
			v, isString := out.Value.(string)
			return st.HasMain && out.HasValue && isString && v == st.Main, st
		}
		return !st.HasMain && out.Error == "NOT_FOUND", st
	case "delete":
		if out.Success {
			return st.HasMain, state{false, "", st.HasTmp, st.Tmp}
		}
		return !st.HasMain && out.Error == "NOT_FOUND", st
	}
	return false, st
}

// stepUnknown is the effect of an operation whose response was never seen: the one that is
// legal in `st` (FileKeyModel.step_unknown). An operation it does not know changes nothing.
func stepUnknown(st state, in input) state {
	switch in.F {
	case "write", "create":
		if v, ok := stored(in.Value); ok && (in.F == "write" || !st.HasMain) {
			return state{true, v, st.HasTmp, st.Tmp}
		}
	case "write_tmp":
		if v, ok := stored(in.Value); ok {
			return state{st.HasMain, st.Main, true, v}
		}
	case "rename":
		if st.HasTmp {
			return state{true, st.Tmp, false, ""}
		}
	case "delete":
		return state{false, "", st.HasTmp, st.Tmp}
	}
	return st
}

// fileKeyModel is FileKeyModel as a porcupine model (states compare with ==).
var fileKeyModel = porcupine.Model{
	Init: func() interface{} { return state{} },
	Step: func(st, in, out interface{}) (bool, interface{}) {
		return step(st.(state), in.(input), out.(output))
	},
	Hash: func(st interface{}) uint64 {
		s := st.(state)
		h := fnv.New64a()
		fmt.Fprintf(h, "%t\x00%s\x00%t\x00%s", s.HasMain, s.Main, s.HasTmp, s.Tmp)
		return h.Sum64()
	},
	DescribeOperation: func(in, out interface{}) string {
		return fmt.Sprintf("%s(%v) -> %+v", in.(input).F, in.(input).Value, out)
	},
}

// decodeInput reads an exported Input object.
func decodeInput(raw interface{}) (input, error) {
	m, ok := raw.(map[string]interface{})
	if !ok {
		return input{}, fmt.Errorf("Input is not an object: %v", raw)
	}
	key, ok1 := m["key"].(string)
	f, ok2 := m["f"].(string)
	if !ok1 || !ok2 {
		return input{}, fmt.Errorf("Input needs string fields key and f: %v", raw)
	}
	return input{Key: key, F: f, Value: m["value"]}, nil
}

// decodeOutput reads an exported Output the way checker.py's _is_success/_is_error do.
func decodeOutput(raw interface{}) output {
	m, ok := raw.(map[string]interface{})
	if !ok {
		return output{} // neither a success nor an error: illegal for every op
	}
	if m["unknown"] == true {
		return output{Unknown: true}
	}
	_, hasError := m["error"]
	isOK := m["ok"] == true
	out := output{Success: isOK && !hasError}
	if code, isString := m["error"].(string); isString && !isOK {
		out.Error = code
	}
	out.Value, out.HasValue = m["value"]
	return out
}

// load decodes a file into porcupine operations with typed Input and Output.
func load(path string) ([]porcupine.Operation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ops []porcupine.Operation
	if err := json.Unmarshal(data, &ops); err != nil {
		return nil, fmt.Errorf("not a JSON array of porcupine operations: %v", err)
	}
	for i := range ops {
		in, err := decodeInput(ops[i].Input)
		if err != nil {
			return nil, fmt.Errorf("operation %d: %v", i, err)
		}
		if ops[i].Return < ops[i].Call {
			return nil, fmt.Errorf("operation %d returns (%d) before its call (%d)", i,
				ops[i].Return, ops[i].Call)
		}
		ops[i].Input, ops[i].Output = in, decodeOutput(ops[i].Output)
	}
	return ops, nil
}

// byKey partitions a history by Input.key, keys in order of first appearance.
func byKey(ops []porcupine.Operation) ([]string, map[string][]porcupine.Operation) {
	var keys []string
	parts := map[string][]porcupine.Operation{}
	for _, op := range ops {
		k := op.Input.(input).Key
		if _, seen := parts[k]; !seen {
			keys = append(keys, k)
		}
		parts[k] = append(parts[k], op)
	}
	return keys, parts
}

// verdict is one file's line of output.
type verdict struct {
	File        string   `json:"file"`
	Ops         int      `json:"ops"`
	Keys        int      `json:"keys"`
	UnknownOps  int      `json:"unknown_ops"`
	Result      string   `json:"result"`
	IllegalKeys []string `json:"illegal_keys"`
	UnknownKeys []string `json:"unknown_keys"`
	Seconds     float64  `json:"seconds"`
}

// checkFile checks each key with porcupine, all keys within `timeout` together.
func checkFile(path string, ops []porcupine.Operation, timeout time.Duration) verdict {
	start := time.Now()
	v := verdict{File: path, Ops: len(ops), IllegalKeys: []string{}, UnknownKeys: []string{}}
	for _, op := range ops {
		if op.Output.(output).Unknown {
			v.UnknownOps++
		}
	}
	keys, parts := byKey(ops)
	v.Keys = len(keys)
	for _, k := range keys {
		left := timeout - time.Since(start)
		if left <= 0 {
			v.UnknownKeys = append(v.UnknownKeys, k) // no time left: not checked, not a pass
			continue
		}
		switch porcupine.CheckOperationsTimeout(fileKeyModel, parts[k], left) {
		case porcupine.Illegal:
			v.IllegalKeys = append(v.IllegalKeys, k)
		case porcupine.Unknown:
			v.UnknownKeys = append(v.UnknownKeys, k)
		}
	}
	sort.Strings(v.IllegalKeys)
	sort.Strings(v.UnknownKeys)
	switch {
	case len(v.IllegalKeys) > 0:
		v.Result = "illegal"
	case len(v.UnknownKeys) > 0:
		v.Result = "unknown"
	default:
		v.Result = "ok"
	}
	v.Seconds = time.Since(start).Seconds()
	return v
}

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "time budget per file (all its keys)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(),
			"usage: %s [-timeout 60s] FILE.porcupine.json...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || *timeout <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	illegal, broken := false, false
	for _, path := range flag.Args() {
		ops, err := load(path)
		if err != nil {
			broken = true
			enc.Encode(map[string]string{"file": path, "error": err.Error()})
			continue
		}
		v := checkFile(path, ops, *timeout)
		illegal = illegal || v.Result == "illegal"
		enc.Encode(v)
	}
	switch {
	case illegal:
		os.Exit(1)
	case broken:
		os.Exit(2)
	}
}
