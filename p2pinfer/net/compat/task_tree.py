"""Service manager: a walk of the whole task tree for every task started.

**Defect (py-libp2p 0.8.1).** `libp2p/tools/anyio_service/trio_manager.py`,
`TrioManager._find_parent_task` (called by `run_task` and `run_child_service`) finds
the parent of every task it starts by walking all its tasks (`FunctionTask.iterate_tasks`,
recursive generators) for the calling task. Pubsub starts a task per gossip message
received, from the connection's reader, which is never one of the manager's tasks: each
message paid a full walk, O(tasks) and so O(peers).

**What we do.** `memoize_task_parents(manager)` remembers the answer per calling task
(a weak map): which FunctionTask runs in a given task never changes (a FunctionTask
records its task first thing, and a task runs one FunctionTask or none). `run_host`
applies it to its Pubsub's manager once the service runs.

**To drop it.** When upstream keeps a map from task to FunctionTask (filled where a
FunctionTask records its task) instead of walking, delete this module and its call.

**Upstream.** No issue found. Drafted patch: docs/upstream/trio-manager-parent-task.diff.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import trio
from libp2p.tools.anyio_service.api import ManagerAPI
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import TaskWithChildrenAPI

PATCHED = {
    "libp2p.tools.anyio_service.trio_manager:TrioManager._find_parent_task": "8aaad50f6da7590d",
}
UPSTREAM = None
DRAFT = "docs/upstream/trio-manager-parent-task.diff"
MARK = "_p2pinfer_parents_memoized"


def memoize_task_parents(manager: ManagerAPI) -> bool:
    """Make `manager.run_task` find the calling task's parent once per trio task, not per
    call. Idempotent; False (and nothing done) if `manager` is not libp2p's TrioManager."""
    if not isinstance(manager, TrioManager):
        return False
    if getattr(manager, MARK, False):
        return True
    find: Callable[[trio.lowlevel.Task], TaskWithChildrenAPI | None] = manager._find_parent_task
    known: weakref.WeakKeyDictionary[trio.lowlevel.Task, TaskWithChildrenAPI | None] = (
        weakref.WeakKeyDictionary()
    )

    def find_once(task: trio.lowlevel.Task) -> TaskWithChildrenAPI | None:
        try:
            return known[task]
        except KeyError:
            parent = known[task] = find(task)
            return parent

    # Per instance (the class is shared); mypy does not allow replacing a method.
    manager._find_parent_task = find_once  # type: ignore[method-assign,assignment]
    setattr(manager, MARK, True)
    return True
