"""create_task/create_future are entered by vectorcall, the `context` keyword of C tasks is
matched by address, and callbacks without vectorcall are called through `tp_call`
(src/event_loop/fast_methods.rs, handle.rs): each case must still behave as asyncio's."""

from __future__ import annotations

import asyncio
import contextvars

import pytest


async def _answer():
    return 42


def test_create_task_follows_a_replaced_task_type(loop, monkeypatch):
    """asyncio reads `tasks.Task` at each create_task: a replacement is followed."""

    class MyTask(asyncio.Task):
        pass

    monkeypatch.setattr(asyncio.tasks, "Task", MyTask)
    task = loop.create_task(_answer())
    assert type(task) is MyTask
    assert loop.run_until_complete(task) == 42


def test_create_future_follows_a_replaced_future_type(loop, monkeypatch):
    """asyncio reads `futures.Future` at each create_future."""

    class MyFuture(asyncio.Future):
        pass

    monkeypatch.setattr(asyncio.futures, "Future", MyFuture)
    future = loop.create_future()
    assert type(future) is MyFuture
    assert future.get_loop() is loop


def test_create_task_with_a_factory_set_later(loop):
    """The plain path stops as soon as a task factory is set, and resumes when it is unset."""
    made = []

    def factory(loop, coro, **kwargs):
        made.append(kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    plain = loop.create_task(_answer())
    loop.set_task_factory(factory)
    via_factory = loop.create_task(_answer())
    loop.set_task_factory(None)
    plain_again = loop.create_task(_answer())
    results = loop.run_until_complete(asyncio.gather(plain, via_factory, plain_again))
    assert results == [42, 42, 42]
    assert made == [{}]


def test_create_task_keywords_and_errors(loop):
    """name= and context= are honoured; bad calls raise asyncio's TypeError; a closed loop
    raises RuntimeError and closes the coroutine unawaited."""
    var = contextvars.ContextVar("var", default="outer")
    context = contextvars.copy_context()
    context.run(var.set, "given")

    async def read():
        return var.get()

    named = loop.create_task(read(), name="named")
    in_context = loop.create_task(read(), context=context)
    assert named.get_name() == "named"
    assert loop.run_until_complete(asyncio.gather(named, in_context)) == ["outer", "given"]
    with pytest.raises(TypeError):
        loop.create_task()
    coro = _answer()
    with pytest.raises(TypeError):
        loop.create_task(coro, 2)
    coro.close()
    loop.close()
    coro = _answer()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.create_task(coro)
    coro.close()


def test_context_keyword_that_is_not_interned(loop):
    """`context=` given under keyword-name strings other than the interned one (as C tasks
    pass it), three distinct ones, twice each: all are taken as the context."""
    var = contextvars.ContextVar("var", default="default")
    seen = []
    names = ["".join(["con", "text"]) for _ in range(3)]
    assert all(name == "context" for name in names)
    for round_ in range(2):
        for index, name in enumerate(names):
            context = contextvars.copy_context()
            context.run(var.set, f"{round_}-{index}")
            loop.call_soon(lambda: seen.append(var.get()), **{name: context})
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [f"{r}-{i}" for r in range(2) for i in range(3)]


def test_callable_objects_without_vectorcall(loop):
    """Instances of a class with `__call__` (no vectorcall) run, in their context, and what
    they raise reaches the exception handler."""
    var = contextvars.ContextVar("var", default="default")
    seen = []

    class Record:
        def __call__(self, *args):
            seen.append((args, var.get()))
            return "ignored"

    class Fail:
        def __call__(self):
            raise ValueError("boom")

    context = contextvars.copy_context()
    context.run(var.set, "given")
    loop.call_soon(Record())
    loop.call_soon(Record(), context=context)
    loop.call_soon(Fail())
    loop.call_soon(Record(), 1)
    loop.call_soon(loop.stop)
    loop.set_exception_handler(lambda _loop, ctx: seen.append(repr(ctx["exception"])))
    loop.run_forever()
    assert seen == [
        ((), "default"),
        ((), "given"),
        "ValueError('boom')",
        ((1,), "default"),
    ]


def test_task_steps_keep_their_order_and_context(loop):
    """Task steps (scheduled by the C task with its own keyword tuple) interleave round-robin
    and each task keeps its own context."""
    var = contextvars.ContextVar("var", default="none")
    order = []

    async def worker(tag):
        var.set(tag)
        for step in range(3):
            order.append((tag, step, var.get()))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(loop.create_task(worker(tag)) for tag in "abc"))

    loop.run_until_complete(main())
    assert order == [(tag, step, tag) for step in range(3) for tag in "abc"]
