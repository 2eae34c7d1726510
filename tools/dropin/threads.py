"""tools/dropin/threads.py - Python's threading primitives from 16 threads.

tools/check-dropin.sh runs this with python3 plain and under the drop-in
pthread layer and compares the printed lines, which depend on no timing.
CPython 3.11 builds threading.Lock (and so RLock's C implementation,
Condition, Semaphore, Barrier, Event and queue.Queue, which Python builds on
Lock) on POSIX semaphores: sem_init, sem_wait, sem_trywait, sem_clockwait
for a timeout, sem_post.  The interpreter lock is a pthread mutex and a
pthread condition variable waited on with pthread_cond_timedwait on
CLOCK_MONOTONIC.  docs/dropin-checks.md has the details.
"""
import queue
import sys
import threading

N = 16
failures = []


def check(name, ok):
    if not ok:
        failures.append(name)


def run(target, n=N, args=()):
    ts = [threading.Thread(target=target, args=(i,) + args) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# Lock: a shared counter.
lock = threading.Lock()
count = 0


def lock_body(i):
    global count
    for _ in range(3000):
        with lock:
            count += 1


run(lock_body)
print("lock: counter", count)
check("lock", count == N * 3000)

# Lock with a timeout that expires (sem_clockwait), and a non-blocking try.
held = threading.Lock()
held.acquire()
timed = []


def timed_body(i):
    timed.append((held.acquire(timeout=0.02), held.acquire(blocking=False)))


run(timed_body, 4)
held.release()
print("lock: timed acquires of a held lock that succeeded", sum(a + b for a, b in timed))
check("lock timeout", timed == [(False, False)] * 4)

# RLock: nested acquisition, depth 3.
rlock = threading.RLock()
rcount = 0


def rlock_body(i):
    global rcount
    for _ in range(1000):
        with rlock:
            with rlock:
                with rlock:
                    rcount += 1


run(rlock_body)
print("rlock: counter", rcount)
check("rlock", rcount == N * 1000)

# Condition: a bounded buffer, 8 producers and 8 consumers.
cond = threading.Condition()
buf = []
consumed = []
PER = 400


def prod_cons(i):
    if i < N // 2:
        for k in range(PER):
            with cond:
                while len(buf) >= 4:
                    cond.wait()
                buf.append(i * PER + k)
                cond.notify_all()
    else:
        got = []
        for _ in range(PER):
            with cond:
                while not buf:
                    cond.wait()
                got.append(buf.pop(0))
                cond.notify_all()
        with cond:
            consumed.extend(got)


run(prod_cons)
print("condition: items", len(consumed), "sum", sum(consumed))
check("condition", sorted(consumed) == list(range(N // 2 * PER)))

# Condition.wait with a timeout nobody notifies.
c2 = threading.Condition()
with c2:
    r = c2.wait(timeout=0.02)
print("condition: wait timed out", not r)
check("condition timeout", r is False)

# Semaphore: at most 3 threads inside.
sem = threading.BoundedSemaphore(3)
inside = 0
most = 0
guard = threading.Lock()


def sem_body(i):
    global inside, most
    for _ in range(300):
        with sem:
            with guard:
                inside += 1
                most = max(most, inside)
            with guard:
                inside -= 1


run(sem_body)
print("semaphore: never more than 3 inside", 1 <= most <= 3)
check("semaphore", 1 <= most <= 3 and inside == 0)

# Barrier: 16 threads, 40 rounds; each round every thread must see all 16
# arrivals of the round.
barrier = threading.Barrier(N)
arrived = [0] * 40
seen = [[0] * N for _ in range(40)]


def barrier_body(i):
    for r in range(40):
        with guard:
            arrived[r] += 1
        barrier.wait()
        with guard:
            seen[r][i] = arrived[r]
        barrier.wait()


run(barrier_body)
ok = all(v == N for row in seen for v in row)
print("barrier: rounds where every thread saw all arrivals", sum(all(v == N for v in row) for row in seen))
check("barrier", ok)

# Event: 16 waiters, one set().
ev = threading.Event()
woke = []
started = threading.Semaphore(0)


def event_body(i):
    started.release()
    woke.append(ev.wait(timeout=60))


ts = [threading.Thread(target=event_body, args=(i,)) for i in range(N)]
for t in ts:
    t.start()
for _ in range(N):
    started.acquire()
ev.set()
for t in ts:
    t.join()
print("event: waiters woken", sum(woke))
check("event", woke == [True] * N)

# queue.Queue: 16 workers square numbers; join() waits for task_done().
jobs = queue.Queue(maxsize=32)
results = queue.Queue()


def worker(i):
    while True:
        x = jobs.get()
        if x is None:
            jobs.task_done()
            return
        results.put(x * x)
        jobs.task_done()


ts = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
for t in ts:
    t.start()
for x in range(5000):
    jobs.put(x)
jobs.join()
for _ in ts:
    jobs.put(None)
for t in ts:
    t.join()
total = 0
while not results.empty():
    total += results.get()
print("queue: sum of squares", total)
check("queue", total == sum(x * x for x in range(5000)))

if failures:
    print("FAILED:", " ".join(failures))
    sys.exit(1)
print("all threading checks passed")
