"""File-access recorder for the DAG audit (tests/test_end_to_end.py, tests/stage_audit_check.py).

Python imports `sitecustomize` at start-up from sys.path; the end-to-end test puts this folder
on PYTHONPATH of its smoke copy only. In a process that DVC started for a stage (DVC sets
DVC_STAGE in the command's environment, and children inherit it: pool workers, the crawl),
an audit hook (PEP 578) appends "R <path>" / "W <path>" for every file or folder under the
repository that the process opens or lists / writes, renames or removes ("M <path>" for a
folder it creates), to
$STAGE_AUDIT_DIR/<pid>.log, each path once per process. What it cannot see: reads done in C
without Python's open (cv2.imread, a C library opening its own files) and bare stat() calls.
"""

import os
import sys

_STAGE = os.environ.get("DVC_STAGE")
_LOG_DIR = os.environ.get("STAGE_AUDIT_DIR")
_ROOT = os.environ.get("STAGE_AUDIT_ROOT")

if _STAGE and _LOG_DIR and _ROOT:
    _root = os.path.abspath(_ROOT) + os.sep
    _seen = set()
    _fd = os.open(os.path.join(_LOG_DIR, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"STAGE {_STAGE}\n".encode())
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _record(kind, path):
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its path was recorded when it was opened
        try:
            path = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not path.startswith(_root) or (kind, path) in _seen:
            return
        _seen.add((kind, path))
        os.write(_fd, f"{kind} {path[len(_root):]}\n".encode())

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writes = any(c in mode for c in "wax+")
                reads = "r" in mode or "+" in mode
            else:
                flags = flags or 0
                writes = bool(flags & _WRITE_FLAGS)
                reads = (flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)
            if reads:
                _record("R", path)
            if writes:
                _record("W", path)
        elif event in ("os.listdir", "os.scandir"):
            _record("R", args[0] if args else ".")
        elif event in ("os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.copytree"):
            _record("W", args[1])
            if event == "os.rename":
                _record("W", args[0])  # the old name goes away
        elif event == "os.mkdir":
            _record("M", args[0])  # creating a folder (an out's parents included)
        elif event in ("os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "os.chmod", "os.utime"):
            _record("W", args[0])

    sys.addaudithook(_hook)

    # Params reads: every leaf field a stage process reads off the project's params models
    # (pipeline/config.py, crawlers/params.py), as "P <Model>.<field>", so the audit can check
    # that the stage's `params:` in dvc.yaml track it (tests/dag_audit.py, params_problems).
    # Attribute reads only: what pydantic itself touches while validating or dumping is not a
    # decision of the stage's code. The blind spot that leaves: a key that reaches an output only
    # through a dump (the datasets' meta.json via config.result_keys, which drops the speed-only
    # keys and so dumps only tracked ones today) is not recorded.
    def _record_params():
        try:
            import pydantic
        except ImportError:
            return
        original = pydantic.BaseModel.__getattribute__
        validating = [0]  # reads inside pydantic's validation (the models' own validators) decide nothing

        def __getattribute__(self, name):
            value = original(self, name)
            if name[0] != "_" and not validating[0]:
                cls = type(self)
                if cls.__module__.startswith(("pipeline.", "crawlers.")) and name in cls.__pydantic_fields__:
                    key = ("P", f"{cls.__name__}.{name}")
                    if key not in _seen:
                        _seen.add(key)
                        os.write(_fd, f"P {cls.__name__}.{name}\n".encode())
            return value

        def quiet(method):
            def wrapper(*args, **kwargs):
                validating[0] += 1
                try:
                    return method(*args, **kwargs)
                finally:
                    validating[0] -= 1
            return wrapper

        pydantic.BaseModel.__getattribute__ = __getattribute__
        pydantic.BaseModel.__init__ = quiet(pydantic.BaseModel.__init__)
        pydantic.BaseModel.model_validate = classmethod(quiet(pydantic.BaseModel.model_validate.__func__))

    _record_params()
