"""The journal storage's lock: an interrupted waiter holds nothing and breaks nothing; threads take turns."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from melanoma_search.search.journal_lock import FlockJournalLock

WAITER = """
import sys
from melanoma_search.search.journal_lock import FlockJournalLock
lock = FlockJournalLock(sys.argv[1])
print("waiting", flush=True)
lock.acquire()
print("acquired", flush=True)
"""


def _interrupt_a_waiter(journal: Path) -> subprocess.CompletedProcess[str]:
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(journal)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiter.stdout is not None and waiter.stdout.readline().strip() == "waiting"
    time.sleep(1.0)  # in acquire, blocked behind the holder
    waiter.send_signal(signal.SIGINT)
    out, err = waiter.communicate(timeout=60)
    return subprocess.CompletedProcess(waiter.args, waiter.returncode, out, err)


def test_a_waiter_stopped_by_ctrl_c_leaves_the_holders_lock_alone(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    holder = FlockJournalLock(str(journal))
    holder.acquire()
    stopped = _interrupt_a_waiter(journal)
    assert "KeyboardInterrupt" in stopped.stderr and "acquired" not in stopped.stdout
    holder.release()  # still ours to release
    again = FlockJournalLock(str(journal))
    assert again.acquire()
    again.release()


def test_threads_take_turns(tmp_path: Path) -> None:
    lock, order = FlockJournalLock(str(tmp_path / "study.log")), []

    def work(name: str) -> None:
        lock.acquire()
        order.append(f"{name} in")
        time.sleep(0.2)
        order.append(f"{name} out")
        lock.release()

    threads = [threading.Thread(target=work, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_a_pickled_storage_takes_the_same_lock_and_none_of_the_holds(tmp_path: Path) -> None:
    """Ray Tune pickles the study's storage into every trial; the copy locks the same file, holding nothing yet."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.log"
    lock = FlockJournalLock(str(journal))
    storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))
    lock.acquire()  # a hold in this process: its file must not travel
    pickle.loads(pickle.dumps(storage))  # what Ray Tune does with the study's storage
    copied_lock = pickle.loads(pickle.dumps(lock))
    lock.release()
    assert copied_lock.path == lock.path
    assert getattr(copied_lock._held, "fd", None) is None
    assert copied_lock.acquire()
    copied_lock.release()
