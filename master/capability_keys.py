"""The capability keys in the replicated state: (key id, salt, since) of the current key and of
the one before it (gfs.auth.capability derives the signing keys from them and the cluster
secret). One state-machine op, `capability_key`, proposed by a new leader when there is no key
yet and by `gfs admin rotate-keys`: it adds key `key_id` if that is newer than the current key
(otherwise nothing changes, so two racing rotations make one new key) and keeps two."""
from __future__ import annotations

from master.schema import bytes_of
from master.store import Tx

OP = "capability_key"
SALT_BYTES = 16
KEPT = 2                          # the current key and the previous one
_META_KEY = b"capability_keys"


check_salt = bytes_of(SALT_BYTES)


def read(tx: Tx) -> list[dict]:
    """[{"id", "salt", "since"}, ...], oldest first."""
    return tx.get("meta", _META_KEY) or []


def apply(tx: Tx, args: dict) -> dict:
    keys = read(tx)
    if keys and args["key_id"] <= keys[-1]["id"]:
        return {"key_id": keys[-1]["id"], "added": False}
    keys = (keys + [{"id": args["key_id"], "salt": args["salt"], "since": args["now"]}])[-KEPT:]
    tx.put("meta", _META_KEY, keys)
    return {"key_id": args["key_id"], "added": True}


def command(keys: list[dict], salt: bytes) -> dict:
    """The command that makes a key newer than `keys` (the state's current list)."""
    return {"op": OP, "key_id": (keys[-1]["id"] if keys else 0) + 1, "salt": salt}
