"""Stopping a request nobody will read, or one the shutdown cannot wait for.

Two things end a request early, and both go through its Watch: its client closing the connection (the ASGI
`http.disconnect` that one pending receive() returns once the body has been read), and the end of the shutdown's
drain time (`OpenRequests.cut`). Either cancels the request's task wherever it waits — identification, a filter,
the upstream's headers, a retry's backoff, a stream's next chunk — so the upstream request is closed at once and
no retry or fallback starts after it: the cancellation unwinds the router. Where the endpoint catches it,
`absorb` says why (ClientClosed, ServerShuttingDown) and takes the cancellation back, so that the stages the
request entered still settle (a rate-limit reservation) and its record says how it ended.

A watch is armed while the request waits on others; held while it settles and answers (a cut is noted, nothing is
cancelled); closed before the answer's last byte goes out, since from then on the server's own `http.disconnect`
means that the response is complete, not that the client left.

Under the gateway's own HTTP protocol (gateway/server/protocol.py), the connection is in the scope, and the watch
hangs a callback on it that its connection_lost calls: a disconnect is heard at once, for two attribute writes
per request. Under any other server, the receive() that tells of a disconnect costs a task per request, with its
scheduling (7-15 µs of CPU, some tenth of a request), so it is started only for a request still running
LISTEN_AFTER_S after its body was read, by one timer per worker that sweeps them; a client that left before then
is noticed at once, when it starts. (Under load, when requests queue for longer than that, nearly every request
paid for the task: S1 fell by a tenth.) The router asks before a retry or a fallback (`confirm`), so none
starts in between.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import ClientClosed, GatewayError, ServerShuttingDown
from gateway.server.protocol import CONNECTION_KEY
from gateway.types import Receive, Scope

# uvicorn's own deadline at shutdown (timeout_graceful_shutdown) comes this long after server.drain_timeout_s: by
# then the gateway has ended what was still running itself (OpenRequests.cut), with an error in each request's own
# shape and its record. uvicorn would only cancel the tasks, then flush the queue before their records were made.
CUT_MARGIN_S = 2.0
# A request still running this long after its body was read listens for its client's disconnect: the client's
# leaving is noticed within twice this (the sweep's period), well inside the 100 ms that the issue asks for.
LISTEN_AFTER_S = 0.025


class Watch:
    __slots__ = ("task", "cut", "armed", "foreign", "_cancelled", "_receive", "_receiver", "_requests", "_connection")

    def __init__(self, task: asyncio.Task[Any], requests: OpenRequests) -> None:
        self.task = task
        self.cut: GatewayError | None = None  # why the request was stopped, the first reason given
        self.armed = True  # a cut cancels the task
        self.foreign = False  # a cancellation that was not this watch's (the server's own deadline) was absorbed
        self._cancelled = False  # this watch cancelled the task and has not taken it back yet
        self._receive: Receive | None = None
        self._receiver: asyncio.Future[Any] | None = None
        self._requests: OpenRequests | None = requests  # None once closed
        self._connection: Any = None  # the gateway protocol's connection, whose on_lost is this watch's
        requests.watches.add(self)

    def listen(self, receive: Receive, scope: Scope | None = None) -> None:
        """From now on (the body has been read), a client that closes its connection cuts the request: at once
        under the gateway's protocol, else within LISTEN_AFTER_S to twice that, or at once if it is still running
        then."""
        if self._requests is None:
            return
        connection = scope.get(CONNECTION_KEY) if scope is not None else None
        if connection is not None:
            if connection.lost:
                self.stop(ClientClosed())
            else:
                self._connection = connection
                connection.on_lost = self._lost
            return
        self._receive = receive
        self._requests.listening(self)

    def _lost(self) -> None:
        self._connection = None
        self.stop(ClientClosed())

    async def confirm(self) -> None:
        """Before more is spent on the request (a retry, a fallback): listen now if it does not yet, and stop here
        (CancelledError) if the client has already left. A server's receive() answers a gone client at once: its
        task's first step, which runs before this one resumes, already has the answer."""
        if self._connection is not None or self._receive is None:  # heard at once, or not listening
            if self._cancelled:
                await asyncio.sleep(0)  # the cancellation lands here
            return
        if self._receiver is None:
            self._start()
            await asyncio.sleep(0)
        receiver = self._receiver
        if receiver is not None and receiver.done():
            self._received(receiver)  # as its callback will, but before the next attempt can begin
        if self._cancelled:
            await asyncio.sleep(0)  # the cancellation lands here

    def _start(self) -> None:
        """Start the receive() that returns when the client leaves (or the response is complete)."""
        receive = self._receive
        if self._requests is None or receive is None or self._receiver is not None:
            return
        # A task of the request's own, not a spawn()ed one: it ends with the request (close).
        receiver = self._receiver = asyncio.ensure_future(receive(), loop=self.task.get_loop())
        receiver.add_done_callback(self._received)

    def _received(self, receiver: asyncio.Future[Any]) -> None:
        if self._requests is None or receiver is not self._receiver or receiver.cancelled():
            return
        if receiver.exception() is not None:  # a server that cannot say: the request runs on, unwatched
            return
        if receiver.result().get("type") == "http.disconnect":
            self.stop(ClientClosed())
        else:  # nothing else should come after the body; listen on regardless
            self._receiver = None
            self._start()

    def stop(self, error: GatewayError) -> None:
        """End the request with `error`, now if it is waiting on others, else once it has answered."""
        if self._requests is None:
            return
        if self.cut is None:
            self.cut = error
        if self.armed:
            self.armed = False
            self._cancelled = True
            self.task.cancel()

    def hold(self) -> None:
        """The request settles and answers: a cut from now on is noted, and cancels nothing."""
        self.armed = False

    def close(self) -> None:
        """Before the answer's last byte, and at the end of the request: nothing heard from now on is a cut."""
        requests = self._requests
        if requests is None:
            return
        self._requests = None
        self.armed = False
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.on_lost = None
        requests.watches.discard(self)
        requests.fresh.discard(self)
        requests.due.discard(self)
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            receiver.cancel()

    def absorb(self) -> GatewayError:
        """Where the request's task catches a CancelledError: why it was stopped. This watch's own cancellation is
        taken back (Task.uncancel), so that the request can settle and answer. Any other (uvicorn's deadline at
        shutdown) is noted in `foreign`, and the request raises it again once it has ended cleanly."""
        self.armed = False
        if self._cancelled:
            self._cancelled = False
            if self.task.uncancel() == 0 and self.cut is not None:
                return self.cut
        self.foreign = True
        return self.cut or ServerShuttingDown()


class OpenRequests:
    """The requests running on this worker, each with its Watch: what the shutdown cuts at its deadline, and what
    the sweep starts listening for a disconnect once they have run for LISTEN_AFTER_S.

    Requests that wait to listen are kept in two sets by age, `fresh` (since the last tick) and `due`: at each
    tick those of `due` still there start listening, and `fresh` becomes `due`. A request that ends leaves its set
    at once: one kept for the sweep's sake would outlive the garbage collector's young generation, and make every
    later full collection longer.
    """

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        self.fresh: set[Watch] = set()
        self.due: set[Watch] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the worker's, known from the first request

    def listening(self, watch: Watch) -> None:
        self.fresh.add(watch)
        if self._sweep is None:
            self._sweep = watch.task.get_loop().call_later(LISTEN_AFTER_S, self._tick)

    def _tick(self) -> None:
        due, self.due, self.fresh = self.due, self.fresh, set()
        for watch in due:
            watch._start()
        # Only while requests wait: an idle worker has no timer.
        self._sweep = self._loop.call_later(LISTEN_AFTER_S, self._tick) if self.due and self._loop else None

    def watch(self) -> Watch:
        """A watch on the current task's request, armed and registered until it is closed."""
        # current_task() with the loop given is half the cost of finding the running loop first, per request.
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        if task is None:
            self._loop = asyncio.get_running_loop()
            task = asyncio.current_task(self._loop)
            assert task is not None
        return Watch(task, self)

    def __len__(self) -> int:
        return len(self.watches)

    def cut(self) -> int:
        """End every open request with ServerShuttingDown: streams with an error event, whole requests with a
        503. Returns how many there were."""
        watches = list(self.watches)
        for watch in watches:
            watch.stop(ServerShuttingDown())
        return len(watches)
