"""bench/chaos/history.py: the porcupine export keeps what an independent checker needs."""
import json

from bench.chaos.checker import Op
from bench.chaos.history import export_porcupine


def test_porcupine_export(tmp_path):
    history = [
        Op(1, "/k", "write", "a", 0.5, 1.0, "ok", {"ok": True}),
        Op(2, "/k", "read", None, 0.2, 1.5, "ok", {"ok": True, "value": "a"}),
        Op(3, "/k", "write", "b", 1.1, 2.0, "info", {"error": "UNAVAILABLE"}),
        Op(4, "/k", "create", "c", 1.2, 1.3, "fail", {"error": "UNAVAILABLE"}),
        Op(1, "/j", "delete", None, 2.5, 3.0, "ok", {"error": "NOT_FOUND"}),
    ]
    ops = json.loads(export_porcupine(history, tmp_path / "h.json").read_text())
    assert [(o["ClientId"], o["Input"]["f"]) for o in ops] == \
        [(2, "read"), (1, "write"), (3, "write"), (1, "delete")]      # by call; fail left out
    read, write, unknown, delete = ops
    assert read == {"ClientId": 2, "Input": {"key": "/k", "f": "read", "value": None},
                    "Call": 200_000_000, "Output": {"ok": True, "value": "a"},
                    "Return": 1_500_000_000}
    assert unknown["Output"] == {"unknown": True}
    assert unknown["Return"] > max(o["Return"] for o in ops if o is not unknown)
    assert delete["Output"] == {"error": "NOT_FOUND"} and delete["Input"]["key"] == "/j"
