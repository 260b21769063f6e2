"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` (SIGKILL) to this process when its parent dies (Linux PR_SET_PDEATHSIG).

    A killed sweep runner then leaves no worker, and no DDP rank, training
    into its folder behind its back; the interrupted run resumes on the next
    invocation. Elsewhere this is a no-op and the parents' cleanup applies.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)
    except OSError:
        pass
