"""Directory pages read ahead for S3 listings that continue.

ListObjects clients page through a listing one request at a time: each page waits for its read
of the masters (a linearizable List of ~1,000 entries), then the client parses it before it asks
for the next. When a page is truncated, the directories it stopped in are read on from where it
stopped in the background, while the client takes in the page it got; the page that continues
the listing (a continuation token or a marker) takes what was read ahead, if it is the same
caller's and was read within `keep_s` seconds.

A listing that starts afresh always reads the masters, so it sees every write acknowledged
before it; its later pages may show a directory as it was when the page before them was
served (S3 gives no snapshot across the pages of a listing either).
"""
from __future__ import annotations

import asyncio
import bisect
import time
from typing import Awaitable, Callable

from gfs.client import FileInfo

Page = tuple[list[FileInfo], str]        # entries in name order; the last name read ("" = end)
ReadPage = Callable[[str, str, int], Awaitable[Page]]

AHEAD = 1000            # entries read ahead per directory
_Block = tuple[list[FileInfo], list[str], str]    # entries, their names, the last name read


class _Ahead:
    __slots__ = ("after", "task", "at")

    def __init__(self, after: str, task: asyncio.Task):
        self.after = after                # the page holds the names after this one
        self.task = task
        self.at = time.monotonic()


class ReadAhead:
    """Pages read ahead, per (caller, directory); at most `directories` kept (the oldest goes)."""

    def __init__(self, keep_s: float = 10.0, directories: int = 32, entries: int = AHEAD,
                 keep_entries: int = 4 * AHEAD):
        """`keep_entries`: at most this many of the entries a listing read are kept to go on
        from (its tail: the next page starts near its end)."""
        self.keep_s = keep_s
        self.directories = directories
        self.entries = entries
        self.keep_entries = keep_entries
        self._pages: dict[tuple[bytes, str], _Ahead] = {}
        self.used = 0            # reads served from what was read ahead (figures for tests)
        self.missed = 0          # reads of continuing listings that went to the masters

    def reader(self, read: ReadPage, caller: bytes, continuing: bool) -> "ListingReads":
        return ListingReads(self, read, caller, continuing)

    def _take(self, caller: bytes, path: str) -> _Ahead | None:
        ahead = self._pages.get((caller, path))
        if ahead is not None and time.monotonic() - ahead.at > self.keep_s:
            del self._pages[(caller, path)]
            return None
        return ahead

    def _start(self, read: ReadPage, caller: bytes, path: str, after: str,
               have: list[FileInfo], last: str) -> None:
        """Read on after `last` in the background; the page kept is `have` (the names after
        `after` up to `last`, already read) and what comes next."""
        key = (caller, path)
        self._pages.pop(key, None)
        while len(self._pages) >= self.directories:
            self._pages.pop(next(iter(self._pages)))

        async def read_on() -> _Block:
            more, end = await read(path, last, self.entries)
            entries = have + more
            return entries, [e.path.rsplit("/", 1)[1] for e in entries], end
        task = asyncio.get_running_loop().create_task(read_on())
        task.add_done_callback(_ignore_failure)
        self._pages[key] = _Ahead(after, task)


def _ignore_failure(task: asyncio.Task) -> None:
    """A read ahead that failed is read again, directly, by the page that needs it."""
    if not task.cancelled():
        task.exception()


class ListingReads:
    """One listing request's directory reads (a `ReadPage`): from the pages read ahead when it
    continues a listing, else from the masters; remembers where each directory stopped so that
    `read_ahead` can read on from there."""

    def __init__(self, ahead: ReadAhead, read: ReadPage, caller: bytes, continuing: bool):
        self._ahead = ahead
        self._read = read
        self._caller = caller
        self._continuing = continuing
        self._stopped: dict[str, tuple[str, Page]] = {}    # path -> its latest read

    async def __call__(self, path: str, start_after: str, limit: int) -> Page:
        page = await self._read_ahead_page(path, start_after, limit) if self._continuing \
            else None
        if page is None:
            self._ahead.missed += self._continuing
            page = await self._read(path, start_after, limit)
        self._remember(path, start_after, page)
        return page

    def _remember(self, path: str, start_after: str, page: Page) -> None:
        """Keep where `path` was read last. A read that goes on from the previous one (the
        walker wanted one more entry to know whether its page is the last) is kept together
        with it: the next page starts just before the last key served, which that previous
        read holds — a block starting after it would make the next page read the masters
        again, on the request path."""
        stopped = self._stopped.get(path)
        if stopped is not None and stopped[1][1] and stopped[1][1] == start_after:
            before, (entries, _) = stopped
            kept = entries + page[0]
            if len(kept) > self._ahead.keep_entries:      # a long walk: its tail will do
                cut = len(kept) - self._ahead.keep_entries
                before, kept = kept[cut - 1].path.rsplit("/", 1)[1], kept[cut:]
            self._stopped[path] = (before, (kept, page[1]))
        else:
            self._stopped[path] = (start_after, page)

    async def _read_ahead_page(self, path: str, start_after: str, limit: int) -> Page | None:
        ahead = self._ahead._take(self._caller, path)
        if ahead is None or start_after < ahead.after:
            return None
        try:
            entries, names, last = await asyncio.shield(ahead.task)
        except Exception:                # noqa: BLE001 - read directly instead
            return None
        if last and start_after >= last:
            return None                  # beyond what was read ahead
        first = bisect.bisect_right(names, start_after)
        taken = entries[first:first + limit]
        if first + limit < len(entries) or (last and len(taken) == limit):
            last = names[first + len(taken) - 1]
        self._ahead.used += 1
        return taken, last

    def read_ahead(self) -> None:
        """Read on, in the background, in every directory this listing stopped in: the next
        page resumes from its last key, which is among (or just before) the names this page
        read last, so those are kept with what is read next."""
        for path, (after, (entries, last)) in self._stopped.items():
            if last:
                self._ahead._start(self._read, self._caller, path, after, entries, last)
