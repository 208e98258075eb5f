"""Hypothesis strategies for the random programs the differential fuzzer runs (``fuzz_interp``).

A program is plain data (so a failing one prints as a literal that a regression test can
paste): ``main``, the synchronous operations run first; ``bodies``, the synchronous callbacks
that operations schedule by index; ``coros``, the coroutine bodies of tasks (asynchronous
operations plus any synchronous one); ``pairs``, the socket pairs made at the start, each
``(what eof_received returns, what data_received does to the transport)``; ``io``, the socket
I/O steps, each ``(slot offset, operations)``; ``debug``, the loop's debug mode;
``until``, whether run_until_complete drives the loop instead of run_forever. Indices wrap
around (``index % len``), so every reference is valid whatever the program made before it.
"""

from __future__ import annotations

from hypothesis import strategies as st

#: How many synchronous bodies and coroutine bodies a program has (at most).
MAX_BODIES = 5
MAX_COROS = 5

idx = st.integers(0, 7)
body = st.integers(0, MAX_BODIES - 1)
coro = st.integers(0, MAX_COROS - 1)
offset = st.integers(1, 3)
msg = st.none() | st.integers(0, 3)

sync_op = st.one_of(
    st.tuples(st.just("soon"), body),
    st.tuples(st.just("later"), body, offset),
    st.tuples(st.just("at"), body, offset),
    st.tuples(st.just("past"), body),
    st.tuples(st.just("cancel"), idx),
    st.tuples(st.just("raise"), st.integers(0, 3)),
    st.tuples(st.just("fut")),
    st.tuples(st.just("task"), coro),
    st.tuples(st.just("set_result"), idx, st.integers(0, 9)),
    st.tuples(st.just("set_exc"), idx, st.integers(0, 2)),
    st.tuples(st.just("fcancel"), idx, msg),
    st.tuples(st.just("uncancel"), idx),
    st.tuples(st.just("state"), idx),
    st.tuples(st.just("add_cb"), idx, body),
    st.tuples(st.just("thread"), st.lists(body, min_size=1, max_size=3)),
    st.tuples(st.just("thread_idle"), body, offset),
    st.tuples(st.just("stop")),
)

ref = st.tuples(st.just("f"), idx) | st.tuples(st.just("c"), coro)
catch = st.booleans()

leaf_async = st.one_of(
    st.tuples(st.just("sleep0"), catch),
    st.tuples(st.just("sleep"), offset, catch),
    st.tuples(st.just("await"), ref, catch),
    st.tuples(st.just("gather"), st.lists(ref, max_size=3), st.booleans(), catch),
    # One future per wait(): asyncio.wait makes a set of its futures and registers its done
    # callbacks in set order, which follows object addresses (not the program).
    st.tuples(
        st.just("wait"),
        st.lists(idx, min_size=1, max_size=1),
        st.integers(0, 2),
        st.none() | offset,
        catch,
    ),
    st.tuples(st.just("wait_for"), ref, offset, catch),
    st.tuples(st.just("shield"), ref, catch),
)

async_op = st.recursive(
    leaf_async | sync_op,
    lambda inner: st.one_of(
        # At most one child per TaskGroup: a group aborting cancels its children in the order
        # of a set (object addresses), on both loops alike.
        st.tuples(
            st.just("taskgroup"),
            st.lists(coro, max_size=1),
            st.lists(inner, max_size=3),
            catch,
        ),
        st.tuples(st.just("timeout"), offset, st.lists(inner, max_size=3), catch),
        st.tuples(st.just("catch"), st.lists(inner, max_size=3), st.booleans()),
    ),
    max_leaves=6,
)

pair = st.integers(0, 2)
size = st.integers(0, 4)

io_op = st.one_of(
    st.tuples(st.just("reader"), pair),
    st.tuples(st.just("rm_reader"), pair),
    st.tuples(st.just("writer"), pair),
    st.tuples(st.just("rm_writer"), pair),
    st.tuples(st.just("connect"), pair),
    st.tuples(st.just("peer_send"), pair, size),
    st.tuples(st.just("peer_recv"), pair),
    st.tuples(st.just("peer_shut"), pair),
    st.tuples(st.just("peer_close"), pair),
    st.tuples(st.just("t_write"), pair, size),
    st.tuples(st.just("t_writelines"), pair, size),
    st.tuples(st.just("t_write_eof"), pair),
    st.tuples(st.just("t_pause"), pair),
    st.tuples(st.just("t_resume"), pair),
    st.tuples(st.just("t_abort"), pair),
    st.tuples(st.just("t_close"), pair),
    st.tuples(st.just("t_limits"), pair, st.sampled_from([0, 1000, 100000])),
    st.tuples(st.just("t_state"), pair),
)

programs = st.fixed_dictionaries(
    {
        "main": st.lists(sync_op, max_size=6),
        "bodies": st.lists(st.lists(sync_op, max_size=4), min_size=1, max_size=MAX_BODIES),
        "coros": st.lists(st.lists(async_op, max_size=4), min_size=1, max_size=MAX_COROS),
        "pairs": st.lists(
            st.tuples(
                st.booleans(),
                st.sampled_from([None, "echo", "close", "pause", "write_eof", "abort"]),
            ),
            max_size=2,
        ),
        "debug": st.booleans(),
        "until": st.booleans(),
        "io": st.lists(st.tuples(st.integers(1, 4), st.lists(io_op, max_size=6)), max_size=3),
    }
)
