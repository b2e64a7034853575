"""A worker's handed-off query gets its answer whether or not the worker can send it.

The main process decides fake-IP names for its workers and sends the
answers back for them to send (workers.py). When the worker is gone or its
socket is full, the client must still get the answer: it goes out of the
main process's own listen socket.
"""
import asyncio
import marshal
import socket

from appliance.services.dns.workers import Workers, _AnswerBack, _Worker


class Service:
    def __init__(self):
        self.sent_here = []

    def send_from(self, index, wire, addr):
        self.sent_here.append((index, wire, addr))


def answer_all(workers, worker, answers):
    async def go():
        for index, addr, wire in answers:
            _AnswerBack(workers, worker, index).send(wire, addr)
        await asyncio.sleep(0)  # the batch goes at the end of the loop's turn
        await asyncio.sleep(0)
    asyncio.run(go())


ANSWERS = [(i % 2, ("192.168.1.20", 40000 + i), b"answer %d" % i) for i in range(600)]


def test_the_answers_go_back_to_the_worker_in_batches():
    service, worker = Service(), _Worker(1)
    workers = Workers(service, [])
    worker.datagrams, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    child.setblocking(False)
    try:
        answer_all(workers, worker, ANSWERS)
        got = []
        while True:
            try:
                message = marshal.loads(child.recv(1 << 22))
            except BlockingIOError:
                break
            assert message[0] == "a"
            got.extend(tuple(item) for item in message[1])
        assert got == ANSWERS and not service.sent_here
    finally:
        worker.datagrams.close()
        child.close()


def test_with_the_worker_gone_the_main_process_sends_every_answer_itself():
    service, worker = Service(), _Worker(1)
    workers = Workers(service, [])
    worker.datagrams, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    child.close()  # the worker died
    try:
        answer_all(workers, worker, ANSWERS)
    finally:
        worker.datagrams.close()
    assert service.sent_here == [(index, wire, addr) for index, addr, wire in ANSWERS]


def test_with_the_workers_socket_full_the_rest_are_sent_from_the_main_process():
    service, worker = Service(), _Worker(1)
    workers = Workers(service, [])
    worker.datagrams, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    worker.datagrams.setblocking(False)
    worker.datagrams.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    child.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        answer_all(workers, worker, ANSWERS)
        delivered = []
        child.setblocking(False)
        while True:
            try:
                delivered.extend(tuple(item) for item in marshal.loads(child.recv(1 << 22))[1])
            except BlockingIOError:
                break
        here = [(index, addr, wire) for index, wire, addr in service.sent_here]
        assert here, "the buffer never filled: the test proves nothing"
        assert sorted(delivered + here) == sorted(ANSWERS)  # each answer once, none lost
    finally:
        worker.datagrams.close()
        child.close()
