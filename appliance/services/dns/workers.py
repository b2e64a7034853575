"""The main process's side of the worker processes: start, feed, listen, restart.

Each worker (`worker.py`) gets two socket pairs from the main process:

- a stream for control, one pickled message per frame (4-byte length
  first): `start` and `policy` (settings and the parsed lists, so every
  process decides by the same lists, fetched once, here), `stop` going
  out; `ready` coming back;
- datagrams for what is frequent, marshalled: `q` (queries that need the
  fake-IP pool, in batches: listener index, client address, the query's
  bytes; this process decides and renders the answers) and `log` (a batch
  of query-log entries and the worker's counters, every
  `worker.FLUSH_EVERY` seconds) coming in; `a` (those queries' answers, in
  batches: listener index, client address, the answer's bytes) going back,
  for the worker to send.

The worker sends the answers because a send is the most costly part of
answering a fake-IP name through the box: the answer crosses the
datapath into the client's namespace within the sending call (17 us of
this process's CPU each, in the lab). This process holds the pool alone, so
it was the bound on new fake-IP names while the worker's CPU idled. An
answer that cannot go back (the worker gone, its buffer full) is sent from
here.

A worker that exits is started again after a pause (its socket left the
SO_REUSEPORT group when it died, so its share of queries went to the
others meanwhile). A worker whose main process is gone sees its control
stream end and exits.
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import pickle
import socket
import struct
import sys

from appliance.kernel.process import start_helper

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
READY_TIMEOUT = 20.0  # seconds for a worker to import, build its policy and bind
RESTART_PAUSE = (0.5, 1.0, 2.0, 5.0)
ANSWERS_BATCH = 256  # answers in one datagram back to a worker (~30 KiB)


async def read_message(reader: asyncio.StreamReader):
    """The next control message, or None when the stream ends."""
    try:
        head = await reader.readexactly(4)
        return pickle.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def write_message(writer: asyncio.StreamWriter, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(data)) + data)


def in_batches(items: list, size: int):
    """`items` in lists of at most `size` (one datagram each)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def waiting(sock: socket.socket, most: int):
    """The datagrams waiting on `sock` (non-blocking), at most `most` of them."""
    for _ in range(most):
        try:
            yield sock.recv(1 << 22)
        except OSError:  # none left (BlockingIOError), or the other end is gone
            return


class _Worker:
    def __init__(self, wid: int):
        self.wid = wid
        self.proc = None  # the worker's Popen
        self.writer: asyncio.StreamWriter | None = None
        self.datagrams: socket.socket | None = None
        self.ready: asyncio.Future | None = None
        self.watch: asyncio.Task | None = None
        self.counters: dict = {}
        self.restarts = 0
        self.answers: list = []  # (listener index, client address, answer) for it to send
        self.outs: dict[int, _AnswerBack] = {}


class _AnswerBack:
    """The `out` of a worker's handed-off query: its answer goes back to the worker to send."""

    def __init__(self, workers: "Workers", worker: _Worker, index: int):
        self.workers, self.worker, self.index = workers, worker, index

    def send(self, wire: bytes | None, addr) -> None:
        if wire is None:
            return
        worker = self.worker
        if not worker.answers:
            asyncio.get_running_loop().call_soon(self.workers._send_answers, worker)
        worker.answers.append((self.index, addr, wire))


class Workers:
    def __init__(self, service, bound: list[tuple[str, int]]):
        self.service = service
        self.bound = bound  # the listen addresses with their actual ports
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._restarts: set[asyncio.Task] = set()

    async def start(self, count: int) -> None:
        for wid in range(1, count + 1):
            self._workers[wid] = _Worker(wid)
        results = await asyncio.gather(*(self._spawn(w) for w in self._workers.values()),
                                       return_exceptions=True)
        for worker, result in zip(self._workers.values(), results):
            if isinstance(result, BaseException):
                log.error("worker %d did not start: %s", worker.wid, result)

    def _start_message(self, worker: _Worker) -> tuple:
        service = self.service
        return ("start", {"wid": worker.wid, "settings": service.settings,
                          "lists": service.lists_store.parsed, "bound": self.bound,
                          "processes": service.processes, "kernel_fds": service.kernel_fds()})

    async def _spawn(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        datagrams, datagrams_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        # A busy worker's batches must queue, not be refused.
        for sock in (datagrams, datagrams_child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        datagrams.setblocking(False)
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        try:
            worker.proc = start_helper(
                [sys.executable, "-m", "appliance.services.dns.worker",
                 "--control", str(control_child.fileno()), "--datagrams", str(datagrams_child.fileno()),
                 "--log-level", level],
                pass_fds=(control_child.fileno(), datagrams_child.fileno(), *self.service.kernel_fds()))
        finally:
            control_child.close()
            datagrams_child.close()
        reader, worker.writer = await asyncio.open_unix_connection(sock=control)
        worker.datagrams = datagrams
        loop.add_reader(datagrams.fileno(), self._datagrams, worker)
        worker.ready = loop.create_future()
        worker.watch = loop.create_task(self._watch(worker, reader))
        write_message(worker.writer, self._start_message(worker))
        await worker.writer.drain()
        await asyncio.wait_for(asyncio.shield(worker.ready), READY_TIMEOUT)

    async def _watch(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        while (message := await read_message(reader)) is not None:
            if message[0] == "ready" and not worker.ready.done():
                worker.ready.set_result(message[1])
                log.info("worker %d (pid %d) answers", worker.wid, message[1])
        # The stream ended: the worker is gone (or going).
        self._forget(worker)
        code = await asyncio.to_thread(worker.proc.wait)
        if not worker.ready.done():
            worker.ready.set_exception(RuntimeError(f"worker {worker.wid} exited with {code}"))
        if self._stopping:
            return
        pause = RESTART_PAUSE[min(worker.restarts, len(RESTART_PAUSE) - 1)]
        worker.restarts += 1
        log.error("worker %d (pid %d) exited with %s; starting it again in %.1fs",
                  worker.wid, worker.proc.pid, code, pause)
        task = asyncio.get_running_loop().create_task(self._restart(worker, pause))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, worker: _Worker, pause: float) -> None:
        await asyncio.sleep(pause)
        if self._stopping:
            return
        try:
            await self._spawn(worker)
        except Exception as exc:  # noqa: BLE001 - it will be tried again when its stream ends
            log.error("worker %d did not start again: %s", worker.wid, exc)

    def _forget(self, worker: _Worker) -> None:
        if worker.datagrams is not None:
            self._datagrams(worker)  # what it sent before it went
            asyncio.get_running_loop().remove_reader(worker.datagrams.fileno())
            worker.datagrams.close()
            worker.datagrams = None
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        worker.counters = {}

    def _datagrams(self, worker: _Worker) -> None:
        service = self.service
        for data in waiting(worker.datagrams, 256):
            try:
                message = marshal.loads(data)
                if message[0] == "q":
                    outs = worker.outs
                    for index, addr, query in message[1]:
                        out = outs.get(index)
                        if out is None:
                            out = outs[index] = _AnswerBack(self, worker, index)
                        service.handoff(out, query, addr)
                elif message[0] == "log":
                    service.querylog.add_batch(message[1])
                    worker.counters = message[2]
            except (ValueError, EOFError, TypeError, IndexError):
                log.exception("bad message from worker %d", worker.wid)

    def _send_answers(self, worker: _Worker) -> None:
        answers, worker.answers = worker.answers, []
        for batch in in_batches(answers, ANSWERS_BATCH):
            if worker.datagrams is not None:  # None: the worker is gone
                try:
                    worker.datagrams.send(marshal.dumps(("a", batch)))
                    continue
                except OSError:  # its buffer is full, or it died just now
                    pass
            send_here = self.service.send_from
            for index, addr, wire in batch:
                send_here(index, wire, addr)

    async def send_policy(self, settings, lists) -> None:
        """Every worker decides by `settings` and `lists` from its next query on."""
        for worker in self._workers.values():
            if worker.writer is not None:
                try:
                    write_message(worker.writer, ("policy", settings, lists))
                    await worker.writer.drain()
                except ConnectionError:
                    pass  # it is being restarted; it gets the policy with its start

    def counters(self) -> list[dict]:
        return [w.counters for w in self._workers.values() if w.counters]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers.values()
                if w.proc is not None and w.proc.poll() is None]

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        for worker in self._workers.values():
            if worker.writer is not None:
                try:
                    write_message(worker.writer, ("stop",))
                    await worker.writer.drain()
                except ConnectionError:
                    pass
        for worker in self._workers.values():
            if worker.proc is None:
                continue
            try:
                await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), 5)
            except asyncio.TimeoutError:
                log.error("worker %d did not stop; killing it", worker.wid)
                worker.proc.kill()
                await asyncio.to_thread(worker.proc.wait)
        for worker in self._workers.values():
            if worker.watch is not None:
                await asyncio.gather(worker.watch, return_exceptions=True)
            self._forget(worker)
