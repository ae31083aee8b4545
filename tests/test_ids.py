"""Row ids, event ids and visitor ids: unique across threads and across a fork, the formats as
before (random bytes are read from the system's generator a block at a time)."""

from __future__ import annotations

import os
import re
import threading
import uuid

from firstparty import ids


def test_ids_are_unique_across_threads_and_sort_by_time() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(ids.new_id() for _ in range(5_000))  # several blocks each

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for one in made for i in one]
    assert len(set(every)) == 20_000
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i) for i in every)
    assert all(one == sorted(one, key=lambda i: i[:9]) for one in made)  # milliseconds first


def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    ids.random_bytes(1)  # this thread's block is read: the child would inherit it
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(write, ids.random_bytes(32))
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 64)
    os.close(read)
    assert len(theirs) == 32 and theirs != ids.random_bytes(32)


def test_the_formats() -> None:
    made = uuid.UUID(ids.new_uuid())
    assert made.version == 4 and made.variant == uuid.RFC_4122
    visitor = ids.new_visitor_id()
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", visitor)
    assert len({ids.new_visitor_id() for _ in range(1_000)}) == 1_000
    assert len(ids.random_bytes(ids.BLOCK_BYTES + 1)) == ids.BLOCK_BYTES + 1
