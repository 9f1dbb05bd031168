"""Bulk enrolment: many subjects' images enrolled on every core, each image its own audited enrolment.

The work is one subject's images at a time per thread (so two threads never create one subject), on
``workers`` threads: decoding and the models release the GIL, so a 2-core machine enrols about twice as
fast as one image at a time. Results come back in the jobs' order as soon as each is durable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby
from pathlib import Path

from faceledger.errors import FaceledgerError
from faceledger.gallery.records import SubjectInfo

Outcome = tuple[str, Path, "SubjectInfo | FaceledgerError"]


def enroll_each(enroll: Callable[[str, Path], SubjectInfo], jobs: Sequence[tuple[str, Path]], *, workers: int,
                stop_on: Collection[str] = ()) -> Iterator[Outcome]:
    """``enroll(subject, path)`` for every job, ``workers`` subjects at a time; yields (subject, path, the
    enrolment or its typed error) in the jobs' order. An error whose code is in ``stop_on`` (one that would refuse
    every image alike) stops the run: nothing new starts, what had started is finished and yielded, then the
    error is raised."""
    groups = [list(g) for _, g in groupby(jobs, key=lambda job: job[0])]

    def run(group: list[tuple[str, Path]]) -> list[Outcome]:
        done: list[Outcome] = []
        for subject, path in group:
            try:
                done.append((subject, path, enroll(subject, path)))
            except FaceledgerError as exc:
                done.append((subject, path, exc))
                if exc.code in stop_on:
                    break
        return done

    fatal: FaceledgerError | None = None
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="enroll") as pool:
        pending: deque[Future] = deque()
        todo = iter(groups)
        while True:
            while fatal is None and len(pending) < 2 * workers:  # a few queued, so no thread waits for the next
                group = next(todo, None)
                if group is None:
                    break
                pending.append(pool.submit(run, group))
            if not pending:
                break
            future = pending.popleft()
            if future.cancelled():
                continue
            for outcome in future.result():
                yield outcome
                error = outcome[2]
                if isinstance(error, FaceledgerError) and error.code in stop_on and fatal is None:
                    fatal = error
                    for queued in pending:  # those not started yet never start
                        queued.cancel()
    if fatal is not None:
        raise fatal
