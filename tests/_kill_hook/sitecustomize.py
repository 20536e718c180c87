"""Test tooling (on PYTHONPATH only for a killed run of tests/test_kill.py): when CLIPFORGE_TEST_KILL_WRITING names a
file, the process that writes it writes half of its bytes, flushes them to disk and SIGKILLs its whole process group
- a preemption landing in the middle of that write."""
import os

TARGET = os.environ.get("CLIPFORGE_TEST_KILL_WRITING")
if TARGET:
    import io
    import signal

    import torch

    _save = torch.save

    def _save_then_die(obj, f, *args, **kwargs):
        name = os.path.basename(str(getattr(f, "name", f)))
        if not name.startswith(f".{TARGET}."):  # atomic writes go to .<name>.<random>.tmp
            return _save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        _save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.killpg(os.getpgrp(), signal.SIGKILL)

    torch.save = _save_then_die
