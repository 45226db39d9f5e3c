"""Regenerate the Python stubs from proto/*.proto: `python -m proto.generate`.

`python -m proto.generate --check` exits non-zero when the committed stubs are stale
(the test suite runs it)."""
from __future__ import annotations

import filecmp
import os
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto into out_dir/proto/; return the generated files."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    (out_dir / "proto").mkdir(parents=True, exist_ok=True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    for proto in protos:
        rel = proto.relative_to(ROOT)
        rc = protoc.main(["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", str(rel)])
        if rc != 0:
            raise SystemExit(f"protoc failed on {rel}")
    return sorted((out_dir / "proto").glob("*_pb2*.py"))


def main(argv: list[str]) -> int:
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            stale = [f.name for f in generate(Path(tmp))
                     if not (PROTO_DIR / f.name).exists() or not filecmp.cmp(f, PROTO_DIR / f.name, shallow=False)]
        if stale:
            print("stale generated stubs: " + ", ".join(stale) + " (run: python -m proto.generate)")
            return 1
        return 0
    for f in generate(ROOT):
        print(f"wrote {f.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
